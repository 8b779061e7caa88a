//! The tokens file, re-read when it changes, and credential checks.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use chrono::Utc;
use subtle::ConstantTimeEq;

use super::token::{hash_secret, Role, TokenEntry, TokensFile};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read tokens file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("tokens file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cannot write tokens file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Credentials as a client presents them in CONNECT.
#[derive(Debug, Default, Clone)]
pub struct Credentials {
    pub user: Option<String>,
    pub pass: Option<String>,
    pub auth_token: Option<String>,
}

pub struct TokenStore {
    path: PathBuf,
    state: Mutex<(Option<Stamp>, Vec<TokenEntry>)>,
}

/// How a look at the file tells it changed: modified time and length.
type Stamp = (SystemTime, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl TokenStore {
    /// Load the file now (a missing file is an error: no tokens, no access).
    pub fn open(path: &Path) -> Result<Self, AuthError> {
        let entries = read(path)?;
        Ok(TokenStore { path: path.to_path_buf(), state: Mutex::new((stamp(path), entries)) })
    }

    /// Re-read the file if it changed since the last look. A broken file is
    /// reported and the entries already loaded are kept.
    pub fn refresh(&self) {
        self.load(false);
    }

    /// Re-read the file whether or not it seems changed (SIGHUP: an edit
    /// within the file system's timestamp granularity looks unchanged).
    pub fn reload(&self) {
        self.load(true);
    }

    fn load(&self, always: bool) {
        let mtime = stamp(&self.path);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !always && mtime == state.0 {
            return;
        }
        match read(&self.path) {
            Ok(entries) => {
                tracing::info!(tokens = entries.len(), "tokens file reloaded");
                *state = (mtime, entries);
            }
            Err(e) => tracing::warn!(error = %e, "keeping the previous tokens"),
        }
    }

    /// Whether the token `name` with secret hash `hash` still stands: `Err`
    /// says why not, in nats-server's words.
    pub fn still_valid(&self, name: &str, hash: &str) -> Result<(), &'static str> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.1.iter().find(|t| t.name == name && t.hash == hash) {
            None => Err("User Authentication Revoked"),
            Some(t) if t.expires.is_some_and(|e| e <= Utc::now()) => Err("User Authentication Expired"),
            Some(_) => Ok(()),
        }
    }

    /// The entry these credentials prove, if any.
    pub fn authenticate(&self, creds: &Credentials) -> Option<TokenEntry> {
        let secret = match (&creds.user, &creds.pass, &creds.auth_token) {
            (Some(_), Some(pass), _) => pass.as_str(),
            (None, _, Some(token)) => token.as_str(),
            _ => return None,
        };
        self.refresh();
        let presented = hash_secret(secret);
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut found: Option<&TokenEntry> = None;
        for entry in &state.1 {
            let same: bool = entry.hash.as_bytes().ct_eq(presented.as_bytes()).into();
            if same && found.is_none() {
                found = Some(entry);
            }
        }
        let entry = found?;
        if entry.expires.is_some_and(|e| e <= Utc::now()) {
            return None;
        }
        if let Some(user) = &creds.user {
            let user_ok = match entry.role {
                Role::Tenant => entry.orgs.iter().any(|o| o.as_str() == user),
                Role::Agent | Role::Admin => &entry.name == user,
            };
            if !user_ok {
                return None;
            }
        }
        Some(entry.clone())
    }
}

pub fn read(path: &Path) -> Result<Vec<TokenEntry>, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read { path: path.into(), source })?;
    let file: TokensFile =
        toml::from_str(&text).map_err(|e| AuthError::Parse { path: path.into(), message: e.message().to_string() })?;
    Ok(file.tokens)
}

/// Append an entry, writing the file atomically with mode 0600.
pub fn append(path: &Path, entry: TokenEntry) -> Result<(), AuthError> {
    let mut file = match path.exists() {
        true => TokensFile { tokens: read(path)? },
        false => TokensFile::default(),
    };
    if file.tokens.iter().any(|t| t.name == entry.name) {
        return Err(AuthError::Parse {
            path: path.into(),
            message: format!("a token named {:?} exists already", entry.name),
        });
    }
    file.tokens.push(entry);
    write(path, &file)
}

/// Remove the entry called `name`; false if there was none.
pub fn remove(path: &Path, name: &str) -> Result<bool, AuthError> {
    let mut file = TokensFile { tokens: read(path)? };
    let before = file.tokens.len();
    file.tokens.retain(|t| t.name != name);
    if file.tokens.len() == before {
        return Ok(false);
    }
    write(path, &file)?;
    Ok(true)
}

fn write(path: &Path, file: &TokensFile) -> Result<(), AuthError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let text = toml::to_string(file).map_err(|e| AuthError::Parse { path: path.into(), message: e.to_string() })?;
    let werr = |source| AuthError::Write { path: path.into(), source };
    let tmp = path.with_extension("tmp");
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(werr)?;
    }
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(werr)?;
    f.write_all(text.as_bytes()).map_err(werr)?;
    f.sync_all().map_err(werr)?;
    std::fs::rename(&tmp, path).map_err(werr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::new_secret;
    use flotilla_core::subject::OrgId;

    fn entry(name: &str, role: Role, orgs: &[&str], secret: &str) -> TokenEntry {
        TokenEntry {
            name: name.into(),
            role,
            orgs: orgs.iter().map(|o| OrgId::new(o).unwrap()).collect(),
            publish: false,
            hosts: vec![],
            hash: hash_secret(secret),
            created: Utc::now(),
            expires: None,
        }
    }

    fn creds(user: Option<&str>, pass: Option<&str>, token: Option<&str>) -> Credentials {
        Credentials { user: user.map(Into::into), pass: pass.map(Into::into), auth_token: token.map(Into::into) }
    }

    #[test]
    fn checks_user_secret_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let (t, a) = (new_secret(), new_secret());
        append(&path, entry("acme-t", Role::Tenant, &["acme"], &t)).unwrap();
        append(&path, entry("host-agent", Role::Agent, &["acme", "globex"], &a)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&t) && !text.contains(&a), "secrets are not stored");
        let store = TokenStore::open(&path).unwrap();
        assert_eq!(store.authenticate(&creds(Some("acme"), Some(&t), None)).unwrap().name, "acme-t");
        assert!(store.authenticate(&creds(Some("globex"), Some(&t), None)).is_none(), "another org's name");
        assert!(store.authenticate(&creds(Some("acme"), Some(&a), None)).is_none(), "agent secret as tenant");
        assert_eq!(store.authenticate(&creds(Some("host-agent"), Some(&a), None)).unwrap().role, Role::Agent);
        assert_eq!(store.authenticate(&creds(None, None, Some(&t))).unwrap().name, "acme-t");
        assert!(store.authenticate(&creds(Some("acme"), Some("wrong"), None)).is_none());
        assert!(store.authenticate(&creds(Some("acme"), None, None)).is_none());

        let mut expired = entry("old", Role::Admin, &[], "s");
        expired.expires = Some(Utc::now() - chrono::Duration::seconds(1));
        // Give the file a different mtime so the store re-reads it.
        std::thread::sleep(std::time::Duration::from_millis(20));
        append(&path, expired).unwrap();
        assert!(store.authenticate(&creds(Some("old"), Some("s"), None)).is_none());
        assert!(append(&path, entry("old", Role::Admin, &[], "x")).is_err(), "names are unique");
    }
}
