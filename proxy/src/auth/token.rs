//! Token entries and the tokens file format.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use flotilla_core::subject::OrgId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads its own org's subjects.
    Tenant,
    /// Publishes into the orgs it lists.
    Agent,
    /// Unrestricted, for operators.
    Admin,
}

/// One entry of the tokens file. The secret itself is never stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub orgs: Vec<OrgId>,
    /// Tenants only: may publish into their own org.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub publish: bool,
    /// Agents only: the hosts it speaks for, if bound. Its events' origin
    /// ids (`Nats-Msg-Id`, which JetStream de-duplicates by across every
    /// org) and its heartbeat subject must then name one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// `sha256:<hex>` of the secret.
    pub hash: String,
    #[serde(deserialize_with = "when::required")]
    pub created: DateTime<Utc>,
    #[serde(default, deserialize_with = "when::optional", skip_serializing_if = "Option::is_none")]
    pub expires: Option<DateTime<Utc>>,
}

impl TokenEntry {
    /// Whether `other` grants the same (role, orgs, publish, hosts, in
    /// any order): a connection made under one grant is closed when it
    /// changes.
    pub fn same_grant(&self, other: &TokenEntry) -> bool {
        fn sorted<T: Ord + Clone>(v: &[T]) -> Vec<T> {
            let mut v = v.to_vec();
            v.sort();
            v
        }
        // (A tenant connecting without a user gets its first org.)
        let tenant_org_kept = self.role != Role::Tenant || self.orgs.first() == other.orgs.first();
        (self.role, self.publish) == (other.role, other.publish)
            && tenant_org_kept
            && sorted(&self.orgs) == sorted(&other.orgs)
            && sorted(&self.hosts) == sorted(&other.hosts)
    }

    /// What makes an entry unusable or ambiguous, in words for the operator.
    pub fn problem(&self) -> Option<String> {
        if let Some(why) = name_problem(&self.name) {
            return Some(why);
        }
        let hex = self.hash.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Some("hash is not sha256:<64 lowercase hex digits> (`token new` writes it)".into());
        }
        if self.publish && self.role != Role::Tenant {
            return Some("publish is for tenant tokens".into());
        }
        if !self.hosts.is_empty() && self.role != Role::Agent {
            return Some("hosts are for agent tokens".into());
        }
        None
    }
}

/// Why a token name cannot be used, if it cannot: it is printed in tab
/// separated lists and logs, and agents and admins give it as `user`.
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 128 {
        return Some("a name is 1 to 128 bytes".into());
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some(format!("name {name:?} has spaces or control characters"));
    }
    None
}

/// Dates as RFC 3339 strings (what `token new` writes) or as TOML's own
/// date-times (`expires = 2027-01-31T00:00:00Z`, as a hand edit may have
/// it); either way with an offset.
mod when {
    use chrono::{DateTime, Utc};
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Toml(toml::value::Datetime),
        Text(String),
    }

    pub fn required<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = match Either::deserialize(d)? {
            Either::Toml(t) => t.to_string(),
            Either::Text(s) => s,
        };
        DateTime::parse_from_rfc3339(&text).map(|t| t.with_timezone(&Utc)).map_err(|e| {
            D::Error::custom(format!("{text:?}: {e} (a date and time with its offset, e.g. 2027-01-31T00:00:00Z)"))
        })
    }

    pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        required(d).map(Some)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensFile {
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
}

/// A fresh secret: `flt_` + 32 random bytes, base64url.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("flt_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    fn parse(expires: &str) -> Result<TokensFile, toml::de::Error> {
        toml::from_str(&format!(
            "[[tokens]]\nname = \"t\"\nrole = \"admin\"\nhash = \"{HASH}\"\ncreated = \"2026-01-01T00:00:00Z\"\n{expires}"
        ))
    }

    #[test]
    fn expiry_as_a_string_or_a_toml_date_time() {
        let want = DateTime::parse_from_rfc3339("2027-01-31T12:00:00Z").unwrap().with_timezone(&Utc);
        for form in [
            "expires = \"2027-01-31T12:00:00Z\"",
            "expires = 2027-01-31T12:00:00Z",
            "expires = 2027-01-31T13:00:00+01:00",
        ] {
            let file = parse(form).unwrap_or_else(|e| panic!("{form}: {e}"));
            assert_eq!(file.tokens[0].expires, Some(want), "{form}");
        }
        assert_eq!(parse("").unwrap().tokens[0].expires, None);
        // A local date-time says nothing of where: refused, with an example.
        let e = parse("expires = 2027-01-31T12:00:00").unwrap_err().to_string();
        assert!(e.contains("with its offset"), "{e}");
    }

    #[test]
    fn problems_of_hand_edited_entries() {
        let mut t = parse("").unwrap().tokens.remove(0);
        assert_eq!(t.problem(), None);
        t.hash = "sha256:ABC".into();
        assert!(t.problem().unwrap().contains("hash"));
        t.hash = HASH.into();
        t.name = "two words".into();
        assert!(t.problem().unwrap().contains("spaces"));
        t.name = "t".into();
        t.publish = true;
        assert!(t.problem().unwrap().contains("tenant"));
        t.publish = false;
        t.hosts = vec!["h1".into()];
        assert!(t.problem().unwrap().contains("agent"));
        t.role = Role::Agent;
        assert_eq!(t.problem(), None);
        let mut other = t.clone();
        other.expires = Some(Utc::now());
        assert!(t.same_grant(&other), "the expiry is not the grant");
        t.hosts = vec!["h1".into(), "h2".into()];
        other.hosts = vec!["h2".into(), "h1".into()];
        assert!(t.same_grant(&other), "nor the order");
        t.hosts = vec!["h1".into()];
        other.hosts.clear();
        assert!(!t.same_grant(&other));
    }
}
