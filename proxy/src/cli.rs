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
            let d = chrono::Duration::from_std(d).map_err(|_| CliError::Usage("--expires is too long".into()))?;
            Some(Utc::now() + d)
        }
    };
    let name = name.unwrap_or_else(|| {
        let who = orgs.first().map(OrgId::as_str).unwrap_or("all");
        let role = format!("{role:?}").to_lowercase();
        format!("{role}-{who}-{:06x}", rand::random::<u32>() & 0xff_ffff)
    });
    let secret = new_secret();
    append(tokens, TokenEntry { name, role, orgs, publish, hash: hash_secret(&secret), created: Utc::now(), expires })?;
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
            format!("{}\t{:?}\t{}\texpires {}{publish}", t.name, t.role, orgs.join(","), expires).to_lowercase()
        })
        .collect())
}
