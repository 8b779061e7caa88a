//! JetStream streams: created or updated at start, and which stream a sink
//! reads from.

use async_nats::jetstream::{self, stream::StorageType};

use crate::config::StreamConfig;

/// The JetStream config for one configured stream.
pub fn stream_config(s: &StreamConfig) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: s.name.clone(),
        subjects: s.subjects.clone(),
        storage: StorageType::File,
        num_replicas: s.replicas,
        duplicate_window: s.duplicate_window(),
        max_age: s.max_age().unwrap_or_default(),
        max_bytes: s.max_bytes.and_then(|b| i64::try_from(b).ok()).unwrap_or(-1),
        max_messages: -1,
        max_messages_per_subject: -1,
        ..Default::default()
    }
}

/// Create each stream, or update it to the configured limits.
pub async fn ensure_streams(
    js: &jetstream::Context,
    streams: &[StreamConfig],
) -> Result<(), jetstream::context::CreateStreamError> {
    for s in streams {
        let info = js.create_or_update_stream(stream_config(s)).await?;
        tracing::info!(stream = %s.name, messages = info.state.messages, "stream ready");
    }
    Ok(())
}

/// The first stream whose subjects cover every one of `subjects`.
pub fn covering_stream<'a>(streams: &'a [StreamConfig], subjects: &[String]) -> Option<&'a StreamConfig> {
    streams.iter().find(|s| subjects.iter().all(|want| s.subjects.iter().any(|have| covers(have, want))))
}

/// Does every subject matched by `inner` also match `outer`? Both may hold
/// wildcards (`*` one token, `>` the rest).
pub fn covers(outer: &str, inner: &str) -> bool {
    let mut o = outer.split('.');
    let mut i = inner.split('.');
    loop {
        match (o.next(), i.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(a), Some(b)) if a == b && a != "*" && a != ">" => {}
            (Some("*"), Some("*")) => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_of_wildcards() {
        assert!(covers("logs.>", "logs.>"));
        assert!(covers("logs.>", "logs.acme.>"));
        assert!(covers("logs.>", "logs.*.web.*.*"));
        assert!(covers("logs.*.*", "logs.a.*"));
        assert!(covers("logs.*", "logs.*"));
        assert!(!covers("logs.*", "logs.>"));
        assert!(!covers("logs.acme.>", "logs.>"));
        assert!(!covers("logs.acme.>", "logs.*.x"));
        assert!(!covers("logs.a", "logs.*"));
        assert!(!covers("logs.>", "logs"));
        assert!(!covers("logs.>", "telemetry.>"));
    }

    #[test]
    fn finds_the_covering_stream() {
        let s = |name: &str, subj: &str| StreamConfig {
            name: name.into(),
            subjects: vec![subj.into()],
            max_age: None,
            max_bytes: None,
            duplicate_window: "2m".into(),
            replicas: 1,
        };
        let streams = [s("TELEMETRY", "telemetry.>"), s("LOGS", "logs.>")];
        let want = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(covering_stream(&streams, &want(&["logs.acme.>"])).map(|s| s.name.as_str()), Some("LOGS"));
        assert!(covering_stream(&streams, &want(&["logs.>", "telemetry.>"])).is_none());
        let cfg = stream_config(&streams[1]);
        assert_eq!((cfg.max_bytes, cfg.num_replicas, cfg.storage), (-1, 1, StorageType::File));
        let r3 = stream_config(&StreamConfig { replicas: 3, ..streams[1].clone() });
        assert_eq!(r3.num_replicas, 3);
    }
}
