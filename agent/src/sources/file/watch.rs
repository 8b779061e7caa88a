//! Waking the file source when something changes: inotify on the
//! directories the include patterns can reach. Without inotify (or when its
//! watch limit is hit) the source still rescans every `poll_interval`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use inotify::{EventStream, Inotify, WatchMask};

pub struct Watcher {
    stream: EventStream<Vec<u8>>,
    watched: HashSet<PathBuf>,
}

impl Watcher {
    pub fn new() -> Option<Watcher> {
        let inotify = match Inotify::init() {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "inotify unavailable: polling only");
                return None;
            }
        };
        let stream = inotify.into_event_stream(vec![0u8; 16 * 1024]).ok()?;
        Some(Watcher { stream, watched: HashSet::new() })
    }

    /// Watch these directories (already-watched ones are skipped).
    pub fn watch(&mut self, dirs: impl IntoIterator<Item = PathBuf>) {
        let mask = WatchMask::MODIFY
            | WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::CLOSE_WRITE
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF;
        for dir in dirs {
            if self.watched.contains(&dir) {
                continue;
            }
            match self.stream.watches().add(&dir, mask) {
                Ok(_) => {
                    self.watched.insert(dir);
                }
                Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "cannot watch"),
            }
        }
    }

    /// Forget directories that no longer exist (their watches died with them).
    pub fn prune(&mut self) {
        self.watched.retain(|d| d.is_dir());
    }

    /// Wait for the next change, then swallow whatever else is queued.
    pub async fn changed(&mut self) {
        if self.stream.next().await.is_none() {
            std::future::pending::<()>().await;
        }
        while let Some(Some(_)) = futures::FutureExt::now_or_never(self.stream.next()) {}
    }
}

/// Directories an include pattern can reach: its fixed prefix and every
/// existing directory matching each deeper level of its directory part.
pub fn dirs_for(glob: &str) -> Vec<PathBuf> {
    let parent = match Path::new(glob).parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut out = vec![];
    let mut prefix = PathBuf::new();
    let mut wild = false;
    for comp in parent.components() {
        prefix.push(comp);
        let text = prefix.to_string_lossy();
        if !wild && !text.contains(['*', '?', '[']) {
            continue;
        }
        if !wild {
            // The last fixed directory above the first wildcard.
            if let Some(fixed) = prefix.parent() {
                out.push(fixed.to_path_buf());
            }
            wild = true;
        }
        if let Ok(paths) = glob::glob(&text) {
            out.extend(paths.filter_map(Result::ok).filter(|p| p.is_dir()));
        }
    }
    if !wild {
        out.push(parent);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_of_a_pattern() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        std::fs::create_dir_all(base.join("acme/web")).unwrap();
        std::fs::create_dir_all(base.join("globex/api")).unwrap();
        let mut got = dirs_for(&format!("{}/*/*/*.log", base.display()));
        got.sort();
        let mut want = vec![
            base.to_path_buf(),
            base.join("acme"),
            base.join("globex"),
            base.join("acme/web"),
            base.join("globex/api"),
        ];
        want.sort();
        assert_eq!(got, want);
        assert_eq!(dirs_for(&format!("{}/x/app.log", base.display())), [base.join("x")]);
    }

    #[tokio::test]
    async fn wakes_on_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Watcher::new().unwrap();
        w.watch([dir.path().to_path_buf()]);
        std::fs::write(dir.path().join("a.log"), "x\n").unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), w.changed()).await.unwrap();
    }
}
