//! The stdin source: lines piped into the agent, through the spill queue.

use tokio::io::BufReader;
use tokio_util::sync::CancellationToken;

use flotilla_core::codec;
use flotilla_core::subject::OrgId;

use super::lines::next_line;
use super::multiline::{Joiner, Piece};
use crate::config::StdinSourceConfig;
use crate::pipeline::emit::{Emitter, Origin};

pub async fn run(cfg: StdinSourceConfig, mut emitter: Emitter, shutdown: CancellationToken) {
    let Ok(org) = OrgId::new(&cfg.org) else {
        return;
    };
    let origin = Origin { org: &org, app: &cfg.app, source: "stdin" };
    let mut joiner = super::joiner_for(cfg.multiline.as_ref());
    let mut reader = BufReader::new(tokio::io::stdin());
    loop {
        let deadline = joiner.as_ref().and_then(Joiner::next_deadline);
        let line = tokio::select! {
            l = next_line(&mut reader, cfg.max_line_bytes) => l,
            _ = sleep_until(deadline) => {
                if let Some(p) = joiner.as_mut().and_then(|j| j.flush_due(std::time::Instant::now())) {
                    send(&mut emitter, &origin, cfg.codec, p.text, false).await;
                }
                continue;
            }
            _ = shutdown.cancelled() => break,
        };
        let line = match line {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "stdin read failed");
                break;
            }
        };
        emitter.stats.bytes_read.add(line.bytes.len() as u64);
        let text = String::from_utf8_lossy(&line.bytes).into_owned();
        let invalid = std::str::from_utf8(&line.bytes).is_err();
        match joiner.as_mut() {
            Some(j) if !line.split && !invalid => {
                if let Some(Piece { text, .. }) = j.push(&text, (), std::time::Instant::now()) {
                    send(&mut emitter, &origin, cfg.codec, text, false).await;
                }
            }
            _ => {
                if let Some(p) = joiner.as_mut().and_then(Joiner::flush) {
                    send(&mut emitter, &origin, cfg.codec, p.text, false).await;
                }
                if line.split {
                    emitter.stats.split_lines.inc();
                }
                if invalid {
                    emitter.stats.invalid_utf8.inc();
                }
                let mut decoded = codec::decode(cfg.codec, &text);
                flag(&mut decoded, line.split, invalid);
                if let Err(e) = emitter.emit(&origin, decoded, None).await {
                    tracing::error!(error = %e, "stdin: cannot queue an event");
                }
            }
        }
    }
    if let Some(p) = joiner.as_mut().and_then(Joiner::flush) {
        send(&mut emitter, &origin, cfg.codec, p.text, false).await;
    }
    tracing::info!("stdin closed");
}

async fn send(emitter: &mut Emitter, origin: &Origin<'_>, c: codec::Codec, text: String, split: bool) {
    let mut decoded = codec::decode(c, &text);
    flag(&mut decoded, split, false);
    if let Err(e) = emitter.emit(origin, decoded, None).await {
        tracing::error!(error = %e, "cannot queue an event");
    }
}

/// Mark what happened to a line on its event.
pub fn flag(decoded: &mut codec::Decoded, split: bool, invalid_utf8: bool) {
    if split {
        decoded.fields.insert("split".into(), true.into());
    }
    if invalid_utf8 {
        decoded.fields.insert("invalid_utf8".into(), true.into());
    }
}

pub async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep(d.saturating_duration_since(std::time::Instant::now())).await,
        None => std::future::pending::<()>().await,
    }
}
