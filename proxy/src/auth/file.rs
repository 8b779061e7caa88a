//! Reading and writing the tokens file. A read checks every entry: one
//! that is ambiguous (a name or secret twice) refuses the file, with where
//! and why, and the proxy keeps what it had; one that is merely odd (a
//! hand-edited hash that can never match, a name from before names were
//! checked) is reported and kept as it always was. A write (`token new`,
//! `token revoke`) holds a lock beside the file for its read-change-write,
//! so two at once cannot lose a token or undo a revoke, and replaces the
//! file atomically, keeping its mode and owner and any symlink to it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use super::store::AuthError;
use super::token::{TokenEntry, TokensFile};

/// A tokens file as read.
#[derive(Debug, PartialEq)]
pub struct Loaded {
    pub entries: Vec<TokenEntry>,
    /// No `tokens` at all: empty, or comments only (`tokens = []` is not
    /// blank).
    pub blank: bool,
    /// What is odd about entries, for the operator.
    pub warnings: Vec<String>,
}

/// The file at `path`, checked.
pub fn read_checked(path: &Path) -> Result<Loaded, AuthError> {
    let parse_error = |message: String| AuthError::Parse { path: path.into(), message };
    let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
        // Read, but not text: a content error, not one to retry.
        std::io::ErrorKind::InvalidData => parse_error("not UTF-8 text".into()),
        _ => AuthError::Read { path: path.into(), source },
    })?;
    let file: TokensFile = toml::from_str(&text).map_err(|e| {
        // Where, but not the line itself: it may hold a hash.
        let at = e.span().map(|s| line_and_column(&text, s.start)).unwrap_or_default();
        parse_error(format!("{at}{}", e.message().trim_end()))
    })?;
    let mut names = HashMap::new();
    let mut hashes = HashMap::new();
    let mut warnings = Vec::new();
    for (i, t) in file.tokens.iter().enumerate() {
        let which = || format!("token {} ({:?})", i + 1, t.name);
        if let Some(why) = t.problem() {
            warnings.push(format!("{}: {why}", which()));
        }
        if let Some(first) = names.insert(t.name.as_str(), i) {
            return Err(parse_error(format!("{}: token {} has that name too", which(), first + 1)));
        }
        if let Some(first) = hashes.insert(t.hash.as_str(), i) {
            return Err(parse_error(format!("{}: token {} has the same secret", which(), first + 1)));
        }
    }
    let blank = text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    Ok(Loaded { entries: file.tokens, blank, warnings })
}

pub fn read(path: &Path) -> Result<Vec<TokenEntry>, AuthError> {
    read_checked(path).map(|loaded| loaded.entries)
}

fn line_and_column(text: &str, at: usize) -> String {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}: ")
}

/// Change the file under its lock: `change` gets the current entries (none
/// if there is no file yet) and says whether to write them back.
pub fn update<T>(
    path: &Path,
    change: impl FnOnce(&mut Vec<TokenEntry>) -> Result<(bool, T), AuthError>,
) -> Result<T, AuthError> {
    let werr = |source| AuthError::Write { path: path.into(), source };
    // A symlinked file (a mounted secret, say) stays a symlink: the file it
    // points to is replaced (or made, if it is not there yet).
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| match std::fs::read_link(path) {
        Ok(to) => path.parent().unwrap_or(Path::new("")).join(to),
        Err(_) => path.to_path_buf(),
    });
    let dir = match target.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(werr)?;
            dir.to_path_buf()
        }
        None => PathBuf::from("."),
    };
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "tokens".into());
    let lock =
        OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(dir.join(format!(".{name}.lock")));
    let lock = lock.map_err(werr)?;
    lock.lock().map_err(werr)?;
    let existing = std::fs::metadata(&target).ok();
    let mut entries = if existing.is_some() { read(&target)? } else { Vec::new() };
    let (write, out) = change(&mut entries)?;
    if write {
        let text = toml::to_string(&TokensFile { tokens: entries })
            .map_err(|e| AuthError::Parse { path: path.into(), message: e.to_string() })?;
        replace(&dir, &name, &target, existing.as_ref(), text.as_bytes()).map_err(werr)?;
    }
    Ok(out)
}

/// Write `bytes` to a new file beside `target` and rename it over it.
fn replace(
    dir: &Path,
    name: &str,
    target: &Path,
    existing: Option<&std::fs::Metadata>,
    bytes: &[u8],
) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let written = (|| {
        let mut f: File = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        if let Some(m) = existing {
            // As it was: the proxy may read it as another user or group.
            f.set_permissions(m.permissions())?;
            let owner = |f: &File| f.metadata().map(|n| (n.uid(), n.gid()));
            if owner(&f)? != (m.uid(), m.gid()) {
                // Only root gives a file away; a member of its group may
                // still keep the group.
                if std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid())).is_err() {
                    let _ = std::os::unix::fs::fchown(&f, None, Some(m.gid()));
                }
                if owner(&f)? != (m.uid(), m.gid()) {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        format!(
                            "it belongs to uid {} gid {}, which a new file from this user cannot keep \
                             (the proxy might no longer read it); run this as that user or as root",
                            m.uid(),
                            m.gid()
                        ),
                    ));
                }
            }
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, target)?;
        // The rename itself outlives a crash.
        let _ = File::open(dir).and_then(|d| d.sync_all());
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    use crate::auth::store::{append, remove};
    use crate::auth::token::{hash_secret, new_secret, Role};

    fn entry(name: &str) -> TokenEntry {
        TokenEntry {
            name: name.into(),
            role: Role::Admin,
            orgs: vec![],
            publish: false,
            hosts: vec![],
            hash: hash_secret(&new_secret()),
            created: chrono::Utc::now(),
            expires: None,
        }
    }

    #[test]
    fn writers_at_once_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        append(&path, entry("keep")).unwrap();
        append(&path, entry("gone")).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for j in 0..10 {
                        append(&path, entry(&format!("t{i}-{j}"))).unwrap();
                    }
                })
            })
            .collect();
        assert!(remove(&path, "gone").unwrap());
        for t in threads {
            t.join().unwrap();
        }
        let names: Vec<String> = read(&path).unwrap().into_iter().map(|t| t.name).collect();
        assert_eq!(names.len(), 81, "{names:?}");
        assert!(names.contains(&"keep".to_string()) && !names.contains(&"gone".to_string()));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_write_keeps_the_mode_and_the_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("secret").join("tokens.toml");
        append(&real, entry("a")).unwrap();
        assert_eq!(std::fs::metadata(&real).unwrap().permissions().mode() & 0o777, 0o600, "a new file is 0600");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join("tokens.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        append(&link, entry("b")).unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "still a symlink");
        assert_eq!(std::fs::metadata(&real).unwrap().permissions().mode() & 0o777, 0o640);
        assert_eq!(read(&real).unwrap().len(), 2);
    }

    #[test]
    fn a_broken_file_says_where_and_never_echoes_a_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        append(&path, entry("a")).unwrap();
        let good = std::fs::read_to_string(&path).unwrap();
        let hash = read(&path).unwrap()[0].hash.clone();
        std::fs::write(&path, good.replace("role = \"admin\"", "role = admin")).unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("line 3, column"), "{e}");
        assert!(!e.contains(&hash["sha256:".len()..]), "{e}");

        // Entries that are odd are kept and reported (a file from before
        // names were checked must still load, and its tokens be revocable);
        // ambiguous ones refuse the file.
        let odd = good.replace("name = \"a\"", "name = \"ops team\"");
        std::fs::write(&path, &odd).unwrap();
        let loaded = read_checked(&path).unwrap();
        assert_eq!(loaded.entries.len(), 1);
        assert_eq!(loaded.warnings, ["token 1 (\"ops team\"): name \"ops team\" has spaces or control characters"]);
        assert!(remove(&path, "ops team").unwrap(), "revocable with the CLI");
        let two = format!("{good}\n{}", good.replace("name = \"a\"", "name = \"b\""));
        std::fs::write(&path, &two).unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("token 2 (\"b\"): token 1 has the same secret"), "{e}");
        std::fs::write(&path, format!("{good}\n{good}")).unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("token 1 has that name too"), "{e}");
        assert!(!e.contains(&hash["sha256:".len()..]), "{e}");
    }

    #[test]
    fn blank_is_told_from_no_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        for (text, blank) in [("", true), ("  \n# nothing yet\n", true), ("tokens = []\n", false)] {
            std::fs::write(&path, text).unwrap();
            assert_eq!(read_checked(&path).unwrap(), Loaded { entries: vec![], blank, warnings: vec![] }, "{text:?}");
        }
        // What revoking the last token writes is not blank.
        append(&path, entry("last")).unwrap();
        assert!(remove(&path, "last").unwrap());
        assert!(!read_checked(&path).unwrap().blank);
    }
}
