//! The journald source: runs `journalctl -o json --follow` (configurable),
//! resuming after the last cursor it queued. Each entry's cursor is its
//! de-duplication id, so entries read again after a crash are recognised
//! by JetStream instead of stored twice.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::BufReader;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use flotilla_core::codec::Decoded;
use flotilla_core::subject::OrgId;

use super::record::{parse, JournalRecord};
use crate::config::{JournaldSourceConfig, ReadFrom};
use crate::pipeline::emit::{Emitter, Origin};
use crate::sources::lines::next_line;

/// Journal entries can be large (core dumps are not, but stack traces are).
const MAX_ENTRY: usize = 4 * 1024 * 1024;
/// How often the cursor file is rewritten while entries flow.
const CURSOR_EVERY: Duration = Duration::from_secs(1);

pub async fn run(cfg: JournaldSourceConfig, cursor_file: PathBuf, mut emitter: Emitter, shutdown: CancellationToken) {
    let Ok(org) = OrgId::new(&cfg.org) else {
        return;
    };
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        let cursor = std::fs::read_to_string(&cursor_file).ok().map(|c| c.trim().to_string()).filter(|c| !c.is_empty());
        let mut cmd = Command::new(&cfg.command[0]);
        cmd.args(&cfg.command[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        match (&cursor, cfg.read_from) {
            (Some(c), _) => cmd.arg(format!("--after-cursor={c}")),
            (None, ReadFrom::Beginning) => cmd.arg("--no-tail"),
            (None, ReadFrom::End) => cmd.args(["--lines", "0"]),
        };
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                failures += 1;
                tracing::error!(command = ?cfg.command, error = %e, "cannot start the journal reader");
                if sleep_or_stop(crate::backoff::delay(failures + 4), &shutdown).await {
                    continue;
                }
                return;
            }
        };
        let Some(stdout) = child.stdout.take() else {
            return;
        };
        let mut reader = BufReader::new(stdout);
        let mut last_cursor: Option<String> = None;
        let mut saved_at = Instant::now();
        loop {
            let line = tokio::select! {
                l = next_line(&mut reader, MAX_ENTRY) => l,
                _ = shutdown.cancelled() => break,
            };
            let line = match line {
                Ok(Some(l)) => l,
                Ok(None) | Err(_) => break,
            };
            emitter.stats.bytes_read.add(line.bytes.len() as u64);
            let rec = match parse(&line.bytes) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an unreadable journal line");
                    continue;
                }
            };
            failures = 0;
            let cursor = rec.cursor.clone();
            let app = app_of(&rec).unwrap_or_else(|| cfg.app.clone());
            let source = format!("journald:{}", rec.unit.as_deref().unwrap_or("-"));
            let msg_id = flotilla_core::origin::keyed_msg_id(&emitter.host, &emitter.stats.name, &cursor);
            if rec.invalid_utf8 {
                emitter.stats.invalid_utf8.inc();
            }
            let origin = Origin { org: &org, app: &app, source: &source };
            if let Err(e) = emitter.emit(&origin, decoded(rec), Some(msg_id)).await {
                tracing::error!(error = %e, "journald: cannot queue an event");
                break;
            }
            last_cursor = Some(cursor);
            if saved_at.elapsed() >= CURSOR_EVERY {
                save_cursor(&cursor_file, last_cursor.as_deref());
                saved_at = Instant::now();
            }
        }
        save_cursor(&cursor_file, last_cursor.as_deref());
        let _ = child.start_kill();
        let _ = child.wait().await;
        if shutdown.is_cancelled() {
            return;
        }
        failures += 1;
        tracing::warn!("the journal reader stopped; restarting it");
        if !sleep_or_stop(crate::backoff::delay(failures + 4), &shutdown).await {
            return;
        }
    }
}

/// `SYSLOG_IDENTIFIER`, else the unit without `.service`.
fn app_of(rec: &JournalRecord) -> Option<String> {
    rec.identifier
        .clone()
        .or_else(|| rec.unit.as_ref().map(|u| u.trim_end_matches(".service").to_string()))
        .filter(|a| !a.is_empty())
}

fn decoded(rec: JournalRecord) -> Decoded {
    let mut fields = rec.fields;
    if rec.invalid_utf8 {
        fields.insert("invalid_utf8".into(), true.into());
    }
    if let Some(u) = rec.unit {
        fields.insert("unit".into(), u.into());
    }
    Decoded { ts: Some(rec.ts), level: rec.level.to_string(), message: rec.message, fields }
}

fn save_cursor(path: &std::path::Path, cursor: Option<&str>) {
    let Some(cursor) = cursor else { return };
    let tmp = path.with_extension("tmp");
    let r = std::fs::write(&tmp, cursor).and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = r {
        tracing::error!(path = %path.display(), error = %e, "cannot save the journal cursor");
    }
}

async fn sleep_or_stop(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = shutdown.cancelled() => false,
    }
}
