//! The tokens file, re-read when it changes, and credential checks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use chrono::Utc;
use subtle::ConstantTimeEq;

pub use super::file::read;
use super::file::{read_checked, update, Loaded};
use super::token::{hash_secret, Role, TokenEntry};
use crate::outlet::lock;

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
    state: Mutex<State>,
}

struct State {
    /// The file as last read (good or not: a file that does not parse is
    /// not read again until it changes; one that cannot be read is).
    looked: Option<Stamp>,
    /// The file as it was when it last could not be read (warned once).
    /// (`Some(None)`: it was missing.)
    unreadable: Option<Option<Stamp>>,
    /// Read again at the next look, whatever its stamp (a file with fewer
    /// tokens, written just now, was put off).
    retry: bool,
    entries: Vec<TokenEntry>,
    /// Index into `entries` (names are unique).
    by_name: HashMap<String, usize>,
}

impl State {
    fn new(looked: Option<Stamp>, entries: Vec<TokenEntry>) -> State {
        let by_name = entries.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        State { looked, unreadable: None, retry: false, entries, by_name }
    }
}

/// How a look at the file tells it changed: modified time, length and
/// inode (a file renamed over it). An edit in place that keeps the first
/// two (within the file system's time granularity) is seen on SIGHUP.
type Stamp = (SystemTime, u64, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// Written within the last second (by the modification time): a write in
/// place may not be over.
fn fresh(stamp: Option<Stamp>) -> bool {
    stamp.is_some_and(|(mtime, ..)| mtime.elapsed().is_ok_and(|age| age < std::time::Duration::from_secs(1)))
}

fn warn_about(loaded: &Loaded) {
    for w in &loaded.warnings {
        tracing::warn!(problem = %w, "tokens file: an entry that may not work as meant");
    }
}

impl TokenStore {
    /// Load the file now (a missing file is an error: no tokens, no access;
    /// a blank one is no tokens yet).
    pub fn open(path: &Path) -> Result<Self, AuthError> {
        // Looked at before it is read: a change meanwhile is seen next time.
        let looked = stamp(path);
        let loaded = read_checked(path)?;
        warn_about(&loaded);
        Ok(TokenStore { path: path.to_path_buf(), state: Mutex::new(State::new(looked, loaded.entries)) })
    }

    /// Re-read the file if it changed since the last look. A broken file is
    /// reported (once per change) and the entries already loaded are kept.
    pub fn refresh(&self) {
        self.load(false);
    }

    /// Re-read the file whether or not it seems changed (SIGHUP: an edit
    /// within the file system's timestamp granularity looks unchanged).
    pub fn reload(&self) {
        self.load(true);
    }

    fn load(&self, always: bool) {
        let before = stamp(&self.path);
        let mut state = lock(&self.state);
        if !always && !state.retry && before == state.looked {
            return;
        }
        let read = read_checked(&self.path);
        if stamp(&self.path) != before {
            // Being written in place: the next look reads it whole.
            return;
        }
        match read {
            // Not readable (permissions being fixed, no file descriptors
            // left): tried again at every look, warned about once.
            Err(e @ AuthError::Read { .. }) => {
                if always || state.unreadable != Some(before) {
                    state.unreadable = Some(before);
                    tracing::warn!(error = %e, "keeping the previous tokens");
                }
            }
            Err(e) => {
                state.looked = before;
                state.retry = false;
                tracing::warn!(error = %e, "keeping the previous tokens");
            }
            // An emptied file is a write caught half way (`cp`, `>`, an
            // editor saving in place) or a mistake, not a revocation of
            // everything: that is `tokens = []`, what `token revoke` writes.
            Ok(loaded) if loaded.blank && loaded.entries.is_empty() && !state.entries.is_empty() => {
                state.looked = before;
                state.retry = false;
                tracing::warn!(path = %self.path.display(), "tokens file is blank: keeping the previous tokens (`tokens = []` revokes them all)")
            }
            // Fewer tokens in a file written just now may be a write in
            // place caught between two entries: read again at the next
            // look (a revocation waits a look longer).
            // (Not for a file renamed over the old one: whole by then. And
            // looked at again at the next look, whatever its stamp.)
            Ok(loaded)
                if loaded.entries.len() < state.entries.len()
                    && fresh(before)
                    && before.map(|s| s.2) == state.looked.map(|s| s.2) =>
            {
                tracing::debug!("tokens file written just now with fewer tokens: read again at the next look");
                state.retry = true;
            }
            Ok(loaded) => {
                warn_about(&loaded);
                tracing::info!(tokens = loaded.entries.len(), "tokens file reloaded");
                *state = State::new(before, loaded.entries);
            }
        }
    }

    /// Whether the token a connection was granted still stands as it was:
    /// `Err` says why not, in nats-server's words. A changed grant (role,
    /// orgs, publish, hosts) ends the connection too; the client's
    /// reconnect gets the new one.
    pub fn still_valid(&self, granted: &TokenEntry) -> Result<(), &'static str> {
        let state = lock(&self.state);
        let current = state.by_name.get(&granted.name).and_then(|&i| state.entries.get(i));
        match current {
            Some(t) if t.hash == granted.hash && t.same_grant(granted) => match t.expires {
                Some(e) if e <= Utc::now() => Err("User Authentication Expired"),
                _ => Ok(()),
            },
            _ => Err("User Authentication Revoked"),
        }
    }

    /// `user` as a failed CONNECT's log may show it: a token name or an
    /// org the file knows, else only its length (a client that swapped
    /// user and password would put its secret there).
    pub fn loggable_user(&self, user: Option<&str>) -> String {
        let Some(user) = user else { return "(none)".into() };
        let state = lock(&self.state);
        let known =
            state.by_name.contains_key(user) || state.entries.iter().any(|t| t.orgs.iter().any(|o| o.as_str() == user));
        if known {
            user.to_string()
        } else {
            format!("(not a known name, {} bytes)", user.len())
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
        let state = lock(&self.state);
        let mut found: Option<&TokenEntry> = None;
        for entry in &state.entries {
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

/// Append an entry (its name must be new).
pub fn append(path: &Path, entry: TokenEntry) -> Result<(), AuthError> {
    update(path, |tokens| {
        if tokens.iter().any(|t| t.name == entry.name) {
            return Err(AuthError::Parse {
                path: path.into(),
                message: format!("a token named {:?} exists already", entry.name),
            });
        }
        tokens.push(entry);
        Ok((true, ()))
    })
}

/// Remove the entry called `name`; false if there was none.
pub fn remove(path: &Path, name: &str) -> Result<bool, AuthError> {
    if !path.exists() {
        return read(path).map(|_| false);
    }
    update(path, |tokens| {
        let before = tokens.len();
        tokens.retain(|t| t.name != name);
        let removed = tokens.len() != before;
        Ok((removed, removed))
    })
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

    /// Write `text` in place, as if some seconds ago (a file written just
    /// now with fewer tokens is read again at the next look).
    fn rewrite(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        let then = SystemTime::now() - std::time::Duration::from_secs(5);
        std::fs::File::options().write(true).open(path).unwrap().set_modified(then).unwrap();
    }

    #[test]
    fn fewer_tokens_in_a_file_written_just_now_wait_for_the_next_look() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let (a, b) = (new_secret(), new_secret());
        append(&path, entry("a", Role::Admin, &[], &a)).unwrap();
        let only_a = std::fs::read_to_string(&path).unwrap();
        append(&path, entry("b", Role::Admin, &[], &b)).unwrap();
        let store = TokenStore::open(&path).unwrap();
        let b_ok = || store.authenticate(&creds(Some("b"), Some(&b), None)).is_some();
        // As if a write in place had got as far as the first entry.
        std::fs::write(&path, &only_a).unwrap();
        store.refresh();
        assert!(b_ok(), "not yet: the file may still be being written");
        store.refresh();
        assert!(b_ok(), "nor at a second look within the second");
        let then = SystemTime::now() - std::time::Duration::from_secs(5);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(then).unwrap();
        store.refresh();
        assert!(!b_ok(), "once it has settled, b is gone");
    }

    #[test]
    fn a_blanked_file_keeps_the_tokens_an_explicit_empty_list_revokes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let secret = new_secret();
        append(&path, entry("admin", Role::Admin, &[], &secret)).unwrap();
        let good = std::fs::read_to_string(&path).unwrap();
        let store = TokenStore::open(&path).unwrap();
        let admin = || store.authenticate(&creds(Some("admin"), Some(&secret), None));
        let granted = admin().expect("valid");
        for blank in ["", "\n# being rewritten\n"] {
            rewrite(&path, blank);
            store.refresh();
            assert!(admin().is_some(), "{blank:?} keeps what was loaded");
            assert_eq!(store.still_valid(&granted), Ok(()));
            rewrite(&path, &good);
            store.refresh();
        }
        rewrite(&path, "tokens = []\n");
        store.refresh();
        assert!(admin().is_none(), "tokens = [] revokes all");
        assert_eq!(store.still_valid(&granted), Err("User Authentication Revoked"));
        // From nothing, a blank file is nothing.
        rewrite(&path, "");
        store.refresh();
        assert!(admin().is_none());
    }

    #[test]
    fn a_changed_grant_ends_what_was_granted_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let secret = new_secret();
        append(&path, entry("host-agent", Role::Agent, &["acme", "globex"], &secret)).unwrap();
        let store = TokenStore::open(&path).unwrap();
        let granted = store.authenticate(&creds(Some("host-agent"), Some(&secret), None)).unwrap();
        assert_eq!(store.still_valid(&granted), Ok(()));
        // globex is taken off the agent's orgs by hand.
        let text = std::fs::read_to_string(&path).unwrap();
        rewrite(&path, &text.replace(", \"globex\"", ""));
        store.refresh();
        assert_eq!(store.still_valid(&granted), Err("User Authentication Revoked"));
        let now = store.authenticate(&creds(Some("host-agent"), Some(&secret), None)).unwrap();
        assert_eq!(now.orgs.len(), 1);
        assert_eq!(store.still_valid(&now), Ok(()), "a reconnect gets the new grant");
        // An expiry moved into the past ends it with its own words.
        let text = std::fs::read_to_string(&path).unwrap();
        rewrite(&path, &format!("{text}expires = 2020-01-01T00:00:00Z\n"));
        store.refresh();
        assert_eq!(store.still_valid(&now), Err("User Authentication Expired"));
    }

    #[test]
    fn a_failed_connects_user_is_logged_only_when_it_is_a_known_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        append(&path, entry("host-agent", Role::Agent, &["acme"], &new_secret())).unwrap();
        let store = TokenStore::open(&path).unwrap();
        assert_eq!(store.loggable_user(Some("host-agent")), "host-agent");
        assert_eq!(store.loggable_user(Some("acme")), "acme");
        let secret = new_secret();
        let shown = store.loggable_user(Some(&secret));
        assert!(!shown.contains(&secret[4..]), "{shown}");
        assert_eq!(shown, format!("(not a known name, {} bytes)", secret.len()));
    }
}
