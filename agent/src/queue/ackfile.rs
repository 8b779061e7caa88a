//! `<dir>/acked`: the highest acknowledged sequence and the next sequence
//! to assign, as text (`acked=N\nnext=M\n`). Replaced atomically: temp file,
//! fsync, rename, fsync of the directory.

use std::io::Write as _;
use std::path::Path;

use super::QueueError;

pub(crate) const FILE: &str = "acked";
const TMP: &str = "acked.tmp";

/// Acked sequence and next sequence to assign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AckState {
    pub acked: u64,
    pub next: u64,
}

impl Default for AckState {
    fn default() -> Self {
        AckState { acked: 0, next: 1 }
    }
}

/// The stored state; the default (nothing acked, next seq 1) when there is
/// none. A damaged file is not an error — the queue must come up — but it
/// means records still on disk are sent again, so it is logged loudly.
pub(crate) fn load(dir: &Path) -> Result<AckState, QueueError> {
    let path = dir.join(FILE);
    let text = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(AckState::default()),
        Err(source) => return Err(QueueError::Io { path, source }),
    };
    match parse(&text) {
        Some(state) => Ok(state),
        None => {
            tracing::warn!(path = %path.display(), "spill queue ack file is damaged; records still on disk will be sent again");
            Ok(AckState::default())
        }
    }
}

fn parse(text: &[u8]) -> Option<AckState> {
    let text = std::str::from_utf8(text).ok()?;
    let mut lines = text.lines();
    let acked = lines.next()?.strip_prefix("acked=")?.parse().ok()?;
    let next = lines.next()?.strip_prefix("next=")?.parse().ok()?;
    (lines.next().is_none() && next > acked).then_some(AckState { acked, next })
}

pub(crate) fn store(dir: &Path, state: AckState) -> Result<(), QueueError> {
    let tmp = dir.join(TMP);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| QueueError::Io { path, source }
    };
    let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    write!(file, "acked={}\nnext={}\n", state.acked, state.next).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    let path = dir.join(FILE);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    sync_dir(dir)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), QueueError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| QueueError::Io { path: dir.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_only_well_formed() {
        assert_eq!(parse(b"acked=3\nnext=9\n"), Some(AckState { acked: 3, next: 9 }));
        assert_eq!(parse(b"acked=3\nnext=3\n"), None);
        assert_eq!(parse(b"acked=3\n"), None);
        assert_eq!(parse(b"acked=x\nnext=9\n"), None);
        assert_eq!(parse(b"\0\0\0"), None);
    }
}
