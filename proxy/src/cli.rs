//! `flotilla-proxy token new|list|revoke`.

use std::path::Path;

use chrono::Utc;

use flotilla_core::config::parse_duration;
use flotilla_core::subject::OrgId;

use crate::auth::store::{append, read};
use crate::auth::{hash_secret, new_secret, AuthError, Role, TokenEntry};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Append a new token and return its secret (shown once, never stored).
pub fn token_new(
    tokens: &Path,
    role: Role,
    orgs: &[String],
    name: Option<String>,
    expires: Option<&str>,
    publish: bool,
) -> Result<String, CliError> {
    token_new_for_hosts(tokens, role, orgs, &[], name, expires, publish)
}

/// As [`token_new`]; an agent token with `hosts` speaks for those hosts
/// only (its origin ids and heartbeats must name one of them).
pub fn token_new_for_hosts(
    tokens: &Path,
    role: Role,
    orgs: &[String],
    hosts: &[String],
    name: Option<String>,
    expires: Option<&str>,
    publish: bool,
) -> Result<String, CliError> {
    if !hosts.is_empty() && role != Role::Agent {
        return Err(CliError::Usage("--host is for agent tokens".into()));
    }
    // As the agent's `host` (its origin ids hold it whole, before a `/`;
    // a `:` would read as a tenant's `<org>:` id prefix).
    if let Some(bad) = hosts.iter().find(|h| h.is_empty() || h.contains(['/', ':']) || h.contains(char::is_whitespace))
    {
        return Err(CliError::Usage(format!("--host {bad:?}: the agent's `host`, with no '/', ':' or spaces")));
    }
    let orgs: Vec<OrgId> =
        orgs.iter().map(|o| OrgId::new(o).map_err(|e| CliError::Usage(e.to_string()))).collect::<Result<_, _>>()?;
    if publish && role != Role::Tenant {
        return Err(CliError::Usage("--publish is for tenant tokens (agents publish, admins may anything)".into()));
    }
    match role {
        Role::Tenant if orgs.len() != 1 => {
            return Err(CliError::Usage("a tenant token needs exactly one --org".into()))
        }
        Role::Agent if orgs.is_empty() => {
            return Err(CliError::Usage("an agent token needs at least one --org".into()))
        }
        _ => {}
    }
    let expires = match expires {
        None => None,
        Some(e) => {
            let d =
                parse_duration(e).ok_or_else(|| CliError::Usage(format!("--expires {e:?}: expected e.g. 30d, 12h")))?;
            let too_long = || CliError::Usage(format!("--expires {e:?} is too long"));
            let d = chrono::Duration::from_std(d).map_err(|_| too_long())?;
            if d.is_zero() {
                return Err(CliError::Usage("--expires 0s: the token would be expired already".into()));
            }
            Some(Utc::now().checked_add_signed(d).ok_or_else(too_long)?)
        }
    };
    let name = name.unwrap_or_else(|| {
        let who = orgs.first().map(OrgId::as_str).unwrap_or("all");
        let role = format!("{role:?}").to_lowercase();
        format!("{role}-{who}-{:06x}", rand::random::<u32>() & 0xff_ffff)
    });
    if let Some(why) = crate::auth::token::name_problem(&name) {
        return Err(CliError::Usage(format!("--name: {why}")));
    }
    let secret = new_secret();
    let hosts = hosts.to_vec();
    let entry =
        TokenEntry { name, role, orgs, publish, hosts, hash: hash_secret(&secret), created: Utc::now(), expires };
    append(tokens, entry)?;
    Ok(secret)
}

/// Remove the token called `name`; its connections are closed by running
/// proxies within seconds.
pub fn token_revoke(tokens: &Path, name: &str) -> Result<(), CliError> {
    if crate::auth::store::remove(tokens, name)? {
        Ok(())
    } else {
        Err(CliError::Usage(format!("no token named {name:?}")))
    }
}

/// One line per token: name, role, orgs, expiry (never the hash).
pub fn token_list(tokens: &Path) -> Result<Vec<String>, CliError> {
    Ok(read(tokens)?
        .iter()
        .map(|t| {
            let orgs: Vec<&str> = t.orgs.iter().map(OrgId::as_str).collect();
            let expires = t.expires.map(|e| e.to_rfc3339()).unwrap_or_else(|| "never".into());
            let publish = if t.publish { "\tpublish" } else { "" };
            let hosts = if t.hosts.is_empty() { String::new() } else { format!("\thosts {}", t.hosts.join(",")) };
            let role = format!("{:?}", t.role).to_lowercase();
            format!("{}\t{role}\t{}\texpires {}{publish}{hosts}", t.name, orgs.join(","), expires)
        })
        .collect())
}
