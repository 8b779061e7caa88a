//! Subject naming: validated org ids, token sanitising and subject matching.
//!
//! Internal subjects carry the org as their second token:
//! `logs.<org>.<app>.<region>.<host>`. Tokens taken from the outside world
//! (app names, hosts, regions) are sanitised so they can never add, remove
//! or wildcard a subject level.

use std::fmt;

/// Why a string is not a valid [`OrgId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid org id {0:?}: expected [a-z0-9][a-z0-9_-]{{0,62}}")]
pub struct InvalidOrg(pub String);

/// An organisation id: `[a-z0-9][a-z0-9_-]{0,62}`. Safe as a subject token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct OrgId(String);

impl OrgId {
    pub fn new(s: &str) -> Result<Self, InvalidOrg> {
        let b = s.as_bytes();
        let first_ok = matches!(b.first(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok =
            b.iter().skip(1).all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-');
        if first_ok && rest_ok && b.len() <= 63 {
            Ok(OrgId(s.to_string()))
        } else {
            Err(InvalidOrg(s.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for OrgId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        OrgId::new(&s).map_err(serde::de::Error::custom)
    }
}

/// The longest token [`sanitize_token`] makes, in bytes: a subject of a
/// few tokens stays far inside nats-server's 4096-byte line, whatever an
/// app or host name from outside (a syslog tag, a container name) says. (A
/// host's full DNS name, at most 253 bytes, is kept whole.)
pub const MAX_TOKEN: usize = 256;

/// Make `raw` safe as one subject token: `.`, `*`, `>`, whitespace and
/// control characters become `_`; an empty token becomes `_`; one longer
/// than [`MAX_TOKEN`] bytes is cut at a character boundary.
pub fn sanitize_token(raw: &str) -> String {
    if raw.is_empty() {
        return "_".to_string();
    }
    let mut end = raw.len().min(MAX_TOKEN);
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    raw[..end]
        .chars()
        .map(|c| match c {
            '.' | '*' | '>' => '_',
            c if c.is_whitespace() || c.is_control() => '_',
            c => c,
        })
        .collect()
}

/// `logs.<org>.<app>.<region>.<host>` with every free token sanitised.
pub fn log_subject(org: &OrgId, app: &str, region: &str, host: &str) -> String {
    format!("logs.{}.{}.{}.{}", org, sanitize_token(app), sanitize_token(region), sanitize_token(host))
}

/// `flotilla.agent.<host>.status`.
pub fn agent_status_subject(host: &str) -> String {
    format!("flotilla.agent.{}.status", sanitize_token(host))
}

/// The parts of a log subject, as the shipper reads them back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSubject<'a> {
    pub org: &'a str,
    pub app: &'a str,
    pub region: &'a str,
    pub host: &'a str,
}

/// Split `logs.<org>.<app>.<region>.<host>`; `None` for anything else.
pub fn parse_log_subject(subject: &str) -> Option<LogSubject<'_>> {
    let mut it = subject.split('.');
    if it.next()? != "logs" {
        return None;
    }
    let (org, app, region, host) = (it.next()?, it.next()?, it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    Some(LogSubject { org, app, region, host })
}

/// Is `subject` a well-formed subject (non-empty tokens, no whitespace or
/// control characters)? With `allow_wildcards`, `*` and a final `>` are
/// accepted as whole tokens.
pub fn is_valid_subject(subject: &str, allow_wildcards: bool) -> bool {
    if subject.is_empty() || subject.len() > 4096 {
        return false;
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    let last = tokens.len() - 1;
    tokens.iter().enumerate().all(|(i, t)| {
        if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return false;
        }
        match *t {
            "*" => allow_wildcards,
            ">" => allow_wildcards && i == last,
            t => !t.contains('*') && !t.contains('>'),
        }
    })
}

/// Does the literal `subject` match the (possibly wildcarded) `pattern`?
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_ids_are_validated() {
        for ok in ["acme", "a", "0rg", "acme-corp_2", &"a".repeat(63)] {
            assert!(OrgId::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Acme", "-acme", "_a", "ac.me", "ac me", "a*", ">", &"a".repeat(64), "acmé"] {
            assert!(OrgId::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_are_sanitised() {
        assert_eq!(sanitize_token("web"), "web");
        assert_eq!(sanitize_token("a.b"), "a_b");
        assert_eq!(sanitize_token("*"), "_");
        assert_eq!(sanitize_token(">"), "_");
        assert_eq!(sanitize_token("a b\tc\r\n"), "a_b_c__");
        assert_eq!(sanitize_token("x\u{0}y"), "x_y");
        assert_eq!(sanitize_token(""), "_");
        assert_eq!(sanitize_token(&"a".repeat(1000)), "a".repeat(MAX_TOKEN));
        let wide = "é".repeat(MAX_TOKEN); // two bytes each: cut between characters
        assert_eq!(sanitize_token(&wide), "é".repeat(MAX_TOKEN / 2));
        assert_eq!(sanitize_token("héllo"), "héllo");
    }

    #[test]
    fn log_subjects_cannot_escape_their_level() {
        let org = OrgId::new("acme").unwrap();
        assert_eq!(log_subject(&org, "web", "iad", "h1"), "logs.acme.web.iad.h1");
        let s = log_subject(&org, "a.>", "*", "h 1.x");
        assert_eq!(s, "logs.acme.a__._.h_1_x");
        let parsed = parse_log_subject(&s).unwrap();
        assert_eq!(parsed.org, "acme");
        assert_eq!(parsed.host, "h_1_x");
        assert!(parse_log_subject("logs.a.b.c").is_none());
        assert!(parse_log_subject("logs.a.b.c.d.e").is_none());
        assert!(parse_log_subject("telemetry.a.b.c.d").is_none());
    }

    #[test]
    fn subject_validity() {
        assert!(is_valid_subject("logs.acme.>", true));
        assert!(!is_valid_subject("logs.acme.>", false));
        assert!(!is_valid_subject("logs.>.x", true));
        assert!(!is_valid_subject("logs..x", true));
        assert!(!is_valid_subject("logs.a b", true));
        assert!(!is_valid_subject("logs.a\r\nPUB", true));
        assert!(!is_valid_subject("logs.a*", true));
        assert!(!is_valid_subject("", true));
    }

    #[test]
    fn wildcard_matching() {
        assert!(subject_matches("logs.>", "logs.a.b"));
        assert!(!subject_matches("logs.>", "logs"));
        assert!(subject_matches("logs.*.b", "logs.a.b"));
        assert!(!subject_matches("logs.*.b", "logs.a.c"));
        assert!(!subject_matches("logs.*", "logs.a.b"));
        assert!(subject_matches("_INBOX.x.*", "_INBOX.x.y"));
        assert!(!subject_matches("a.b", "a.b.c"));
    }
}
