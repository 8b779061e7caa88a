//! What a connection may do, and how its subjects map to the upstream ones.
//!
//! A tenant of `acme` subscribing to `logs.>` gets upstream `logs.acme.>`;
//! deliveries of `logs.acme.web.iad.h1` reach it as `logs.web.iad.h1`.
//! Inbox subscriptions (`_INBOX.…`) never go upstream: replies reach a
//! connection through its own private upstream prefix, so no client can read
//! another's replies.

use async_nats::HeaderMap;
use flotilla_core::subject::{is_valid_subject, sanitize_token, OrgId};
use flotilla_core::{origin, HDR_MSG_ID};

use crate::auth::{Role, TokenEntry};

/// Headers the pipeline itself sets (an agent's origin of an event).
const PIPELINE_HEADERS: &str = "Flotilla-";
/// Headers nats-server (JetStream, tracing) acts on.
const SERVER_HEADERS: &str = "Nats-";
/// `Nats-` headers nats-server does not act on: the services framework's
/// error replies (nats.go, nats.js and async-nats micro services send them).
const SERVICE_HEADERS: [&str; 2] = ["Nats-Service-Error", "Nats-Service-Error-Code"];

/// Subject families a tenant reads, with the org as their second token.
const ORG_SCOPED: [&str; 2] = ["logs", "telemetry"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Tenant {
        org: OrgId,
        publish: bool,
    },
    /// `hosts`: the hosts it speaks for, if its token is bound to some.
    Agent {
        orgs: Vec<OrgId>,
        hosts: Vec<BoundHost>,
    },
    Admin,
}

/// A host a bound agent speaks for: as its origin ids name it, and as its
/// subjects do (one token, as the agent writes it), worked out once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundHost {
    id: String,
    token: String,
}

impl BoundHost {
    pub fn new(name: &str) -> BoundHost {
        BoundHost { id: name.to_string(), token: sanitize_token(name) }
    }
}

/// Where a client's SUB goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubTarget {
    /// An upstream subscription on this subject.
    Upstream(String),
    /// A local inbox subscription, fed by the connection's reply prefix.
    Inbox,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

impl Scope {
    /// What `entry` allows; `None` for a tenant token that names no org
    /// (a hand-edited file): it is refused, not given some other role.
    pub fn for_token(entry: &TokenEntry, user: Option<&str>) -> Option<Scope> {
        match entry.role {
            Role::Admin => Some(Scope::Admin),
            Role::Agent => {
                let hosts = entry.hosts.iter().map(|h| BoundHost::new(h)).collect();
                Some(Scope::Agent { orgs: entry.orgs.clone(), hosts })
            }
            Role::Tenant => {
                // A tenant token names one org; `user` (when given) was
                // checked to be one of the token's orgs.
                let org = user
                    .and_then(|u| entry.orgs.iter().find(|o| o.as_str() == u))
                    .or_else(|| entry.orgs.first())
                    .cloned();
                org.map(|org| Scope::Tenant { org, publish: entry.publish })
            }
        }
    }

    /// The org label used in metrics.
    pub fn label(&self) -> &str {
        match self {
            Scope::Tenant { org, .. } => org.as_str(),
            Scope::Agent { .. } => "_agent",
            Scope::Admin => "_admin",
        }
    }

    /// The org a publish to `upstream` counts against (per-org rates,
    /// metrics): a tenant's own; for an agent, the org its subject names
    /// (one of its token's, checked by [`Scope::publish`]).
    pub fn org_of<'a>(&'a self, upstream: &'a str) -> &'a str {
        if let Scope::Agent { .. } = self {
            let mut t = upstream.split('.');
            if let (Some(family), Some(org), Some(_)) = (t.next(), t.next(), t.next()) {
                if ORG_SCOPED.contains(&family) {
                    return org;
                }
            }
        }
        self.label()
    }

    pub fn subscribe(&self, subject: &str) -> Result<SubTarget, Denied> {
        let deny = || Denied(format!("Permissions Violation for Subscription to \"{}\"", printable(subject)));
        if !is_valid_subject(subject, true) {
            return Err(deny());
        }
        if is_inbox(subject) {
            return Ok(SubTarget::Inbox);
        }
        match self {
            Scope::Admin => Ok(SubTarget::Upstream(subject.to_string())),
            Scope::Agent { .. } => Err(deny()),
            Scope::Tenant { org, .. } => {
                let (family, rest) = subject.split_once('.').ok_or_else(deny)?;
                if !ORG_SCOPED.contains(&family) {
                    return Err(deny());
                }
                Ok(SubTarget::Upstream(format!("{family}.{org}.{rest}")))
            }
        }
    }

    /// The upstream name of a client's queue group `q`: a tenant's is
    /// prefixed with its org, as nats-server groups queue subscribers by
    /// name alone, across subjects (a tenant's `workers` must not join the
    /// platform's `workers` on `logs.>`).
    pub fn queue(&self, q: &str) -> String {
        match self {
            Scope::Tenant { org, .. } => format!("{org}.{q}"),
            _ => q.to_string(),
        }
    }

    pub fn publish(&self, subject: &str) -> Result<String, Denied> {
        let deny = || Denied(format!("Permissions Violation for Publish to \"{}\"", printable(subject)));
        if !is_valid_subject(subject, false) {
            return Err(deny());
        }
        match self {
            Scope::Admin => Ok(subject.to_string()),
            Scope::Tenant { publish: false, .. } => Err(deny()),
            Scope::Tenant { org, publish: true } => {
                // Within its own org only: the org token is added, never taken from the client.
                let (family, rest) = subject.split_once('.').ok_or_else(deny)?;
                if !ORG_SCOPED.contains(&family) {
                    return Err(deny());
                }
                Ok(format!("{family}.{org}.{rest}"))
            }
            // A bound agent's heartbeat and log subjects name one of its
            // hosts, as the agent writes them (the host as a subject token).
            Scope::Agent { orgs, hosts } => {
                if let Some(host) = agent_status_host(subject) {
                    return if speaks_for(hosts, host) { Ok(subject.to_string()) } else { Err(deny()) };
                }
                let mut t = subject.split('.');
                let (family, org, rest) = (t.next(), t.next(), t.next());
                let ok = family.is_some_and(|f| ORG_SCOPED.contains(&f))
                    && org.is_some_and(|o| orgs.iter().any(|x| x.as_str() == o))
                    && rest.is_some();
                // `logs.<org>.<app>.<region>.<host>`: the rest is the region and the host.
                let host_ok = hosts.is_empty()
                    || family != Some("logs")
                    || matches!((t.next(), t.next(), t.next()), (Some(_), Some(h), None) if speaks_for(hosts, h));
                if ok && host_ok {
                    Ok(subject.to_string())
                } else {
                    Err(deny())
                }
            }
        }
    }

    /// The headers of a publish to `subject` as they go upstream, or why
    /// it is refused. Of the headers nats-server acts on (`Nats-*`),
    /// tenants and agents may send `Nats-Msg-Id` only (and the services
    /// framework's `Nats-Service-Error*`, which it does not act on): the others reach
    /// across orgs (`Nats-Expected-*` is answered with the stream's last
    /// id and sequence, whoever wrote them; `Nats-Trace-Dest` has the
    /// server publish to any subject; `Nats-Rollup` purges). A tenant's
    /// `Nats-Msg-Id` becomes `<org>:<id>` (JetStream de-duplicates per
    /// stream, so one org's ids must not suppress another's messages), and
    /// the pipeline's own headers (`Flotilla-*`: the origins agents vouch
    /// for, which the delivery ledger counts) are not a tenant's to send.
    /// An agent bound to hosts sends origin ids of those hosts only.
    pub fn publish_headers(&self, subject: &str, headers: HeaderMap) -> Result<HeaderMap, Denied> {
        let (tenant, hosts) = match self {
            Scope::Admin => return Ok(headers),
            Scope::Agent { hosts, .. } => (None, hosts.as_slice()),
            Scope::Tenant { org, .. } => (Some(org), &[][..]),
        };
        let own_host =
            |id: &str| hosts.is_empty() || origin::parse(id).is_some_and(|m| hosts.iter().any(|h| h.id == m.host));
        let deny = |name: &str| {
            Denied(format!(
                "Permissions Violation for Publish to \"{}\" with header \"{}\"",
                printable(subject),
                printable(name)
            ))
        };
        let is = |name: &str, prefix: &str| {
            name.as_bytes().get(..prefix.len()).is_some_and(|h| h.eq_ignore_ascii_case(prefix.as_bytes()))
        };
        let mut out = HeaderMap::new();
        for (name, values) in headers.iter() {
            let n: &str = name.as_ref();
            let msg_id = n.eq_ignore_ascii_case(HDR_MSG_ID);
            let service = SERVICE_HEADERS.iter().any(|h| n.eq_ignore_ascii_case(h));
            if (is(n, SERVER_HEADERS) && !msg_id && !service) || (tenant.is_some() && is(n, PIPELINE_HEADERS)) {
                return Err(deny(n));
            }
            for v in values {
                if msg_id && !own_host(v.as_str()) {
                    return Err(deny(n));
                }
                match tenant {
                    Some(org) if msg_id => out.append(name.clone(), format!("{org}:{}", v.as_str()).as_str()),
                    _ => out.append(name.clone(), v.clone()),
                }
            }
        }
        Ok(out)
    }

    /// The subject a client sees for an upstream delivery, as parts to be
    /// written one after another (nothing is allocated per delivery).
    pub fn deliver<'a>(&self, upstream: &'a str) -> [&'a str; 3] {
        let Scope::Tenant { org, .. } = self else { return [upstream, "", ""] };
        let mut t = upstream.splitn(3, '.');
        match (t.next(), t.next(), t.next()) {
            (Some(family), Some(o), Some(rest)) if o == org.as_str() && ORG_SCOPED.contains(&family) => {
                [family, ".", rest]
            }
            _ => [upstream, "", ""],
        }
    }
}

/// Is `token` (a host as a subject token) one of a bound agent's `hosts`?
fn speaks_for(hosts: &[BoundHost], token: &str) -> bool {
    hosts.is_empty() || hosts.iter().any(|h| h.token == token)
}

/// The host of `flotilla.agent.<host>.status`, the heartbeat every agent
/// publishes (read in place: it is asked of every agent publish).
fn agent_status_host(subject: &str) -> Option<&str> {
    let host = subject.strip_prefix("flotilla.agent.")?.strip_suffix(".status")?;
    (!host.is_empty() && !host.contains('.')).then_some(host)
}

pub fn is_inbox(subject: &str) -> bool {
    subject.starts_with("_INBOX.") && subject.len() > "_INBOX.".len()
}

/// Subjects are echoed in errors: keep them to one printable line.
pub fn printable(s: &str) -> String {
    s.chars().take(256).map(|c| if c.is_control() { '?' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> Scope {
        Scope::Tenant { org: OrgId::new("acme").unwrap(), publish: false }
    }

    #[test]
    fn publishing_tenants_stay_in_their_org() {
        let t = Scope::Tenant { org: OrgId::new("acme").unwrap(), publish: true };
        assert_eq!(t.publish("logs.rpc.x").unwrap(), "logs.acme.rpc.x");
        assert_eq!(t.publish("logs.globex.web.iad.h1").unwrap(), "logs.acme.globex.web.iad.h1");
        for bad in ["rpc.x", "$JS.API.STREAM.LIST", "logs.*", "logs.>", "_INBOX.x", "logs", "flotilla.agent.h1.status"]
        {
            assert!(t.publish(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tenant_subscriptions_are_pinned_to_the_org() {
        let t = tenant();
        assert_eq!(t.subscribe("logs.>"), Ok(SubTarget::Upstream("logs.acme.>".into())));
        assert_eq!(t.subscribe("logs.web.*.h1"), Ok(SubTarget::Upstream("logs.acme.web.*.h1".into())));
        assert_eq!(t.subscribe("telemetry.>"), Ok(SubTarget::Upstream("telemetry.acme.>".into())));
        assert_eq!(t.subscribe("_INBOX.abc.*"), Ok(SubTarget::Inbox));
        for bad in [
            ">",
            "*.>",
            "logs",
            "*.acme.>",
            "$SYS.>",
            "$JS.API.>",
            "_INBOX",
            "flotilla.>",
            "logs..x",
            "logs.a b",
            "logs.a\r\nPUB x",
        ] {
            assert!(t.subscribe(bad).is_err(), "{bad}");
        }
        // Whatever comes after the family stays under the org prefix.
        assert_eq!(t.subscribe("logs.globex.>"), Ok(SubTarget::Upstream("logs.acme.globex.>".into())));
    }

    #[test]
    fn an_agents_publishes_count_against_the_org_they_go_to() {
        let agent =
            Scope::Agent { orgs: vec![OrgId::new("acme").unwrap(), OrgId::new("globex").unwrap()], hosts: vec![] };
        assert_eq!(agent.org_of("logs.globex.web.iad.h1"), "globex");
        assert_eq!(agent.org_of("telemetry.acme.iad.r1.if"), "acme");
        assert_eq!(agent.org_of("flotilla.agent.h1.status"), "_agent");
        assert_eq!(tenant().org_of("logs.acme.web.iad.h1"), "acme");
        assert_eq!(Scope::Admin.org_of("logs.acme.web.iad.h1"), "_admin");
    }

    #[test]
    fn a_tenant_token_that_names_no_org_gives_no_scope() {
        let mut entry = TokenEntry {
            name: "t".into(),
            role: Role::Tenant,
            orgs: vec![],
            publish: true,
            hosts: vec![],
            hash: "sha256:00".into(),
            created: chrono::Utc::now(),
            expires: None,
        };
        assert_eq!(Scope::for_token(&entry, None), None);
        assert_eq!(Scope::for_token(&entry, Some("acme")), None);
        entry.orgs = vec![OrgId::new("acme").unwrap()];
        assert_eq!(
            Scope::for_token(&entry, None),
            Some(Scope::Tenant { org: OrgId::new("acme").unwrap(), publish: true })
        );
    }

    #[test]
    fn a_tenants_queue_groups_are_its_orgs() {
        assert_eq!(tenant().queue("workers"), "acme.workers");
        assert_eq!(Scope::Admin.queue("workers"), "workers");
    }

    #[test]
    fn an_agent_bound_to_hosts_speaks_for_those_hosts_only() {
        let bound = Scope::Agent { orgs: vec![OrgId::new("acme").unwrap()], hosts: vec![BoundHost::new("h-acme")] };
        let free = Scope::Agent { orgs: vec![OrgId::new("acme").unwrap()], hosts: vec![] };
        let with_id = |id: &str| {
            let mut h = HeaderMap::new();
            h.insert("Nats-Msg-Id", id);
            h
        };
        let subject = "logs.acme.web.iad.h-acme";
        for own in ["h-acme/f/00ab/42", "h-acme/syslog/7", "h-acme/journal/k/s=1", "h-acme/f/00ab/42/notice"] {
            assert!(bound.publish_headers(subject, with_id(own)).is_ok(), "{own}");
        }
        for other in ["globex-h1/syslog/5", "h-acme2/f/00ab/1", "acme:h-acme/syslog/1", "anything"] {
            assert!(bound.publish_headers(subject, with_id(other)).is_err(), "{other}");
            assert!(free.publish_headers(subject, with_id(other)).is_ok(), "unbound: {other}");
        }
        assert!(bound.publish_headers(subject, HeaderMap::new()).is_ok(), "no id: nothing to check");
        assert_eq!(bound.publish("flotilla.agent.h-acme.status").as_deref(), Ok("flotilla.agent.h-acme.status"));
        assert!(bound.publish("flotilla.agent.globex-h1.status").is_err());
        assert!(free.publish("flotilla.agent.globex-h1.status").is_ok());
        // Its log subjects name it too; telemetry (a polled router) is not the host's.
        assert!(bound.publish("logs.acme.web.iad.h-acme").is_ok());
        assert!(bound.publish("logs.acme.web.iad.globex-h1").is_err());
        assert!(bound.publish("logs.acme.web.h-acme").is_err());
        assert!(free.publish("logs.acme.web.iad.globex-h1").is_ok());
        assert!(bound.publish("telemetry.acme.iad.r1.if").is_ok());
        // A host with dots: ids carry it whole, subjects as one token.
        let dotted = Scope::Agent {
            orgs: vec![OrgId::new("acme").unwrap()],
            hosts: vec![BoundHost::new("ip-10-0-0-1.ec2.internal")],
        };
        assert!(dotted.publish_headers(subject, with_id("ip-10-0-0-1.ec2.internal/syslog/1")).is_ok());
        assert!(dotted.publish("flotilla.agent.ip-10-0-0-1_ec2_internal.status").is_ok());
        assert!(dotted.publish("logs.acme.web.iad.ip-10-0-0-1_ec2_internal").is_ok());
    }

    #[test]
    fn a_tenants_message_ids_are_its_orgs_and_other_server_headers_are_refused() {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", "h1/f/00ff/120");
        h.append("X-Trace", "a");
        h.append("X-Trace", "b");
        let out = tenant().publish_headers("logs.x", h.clone()).unwrap();
        assert_eq!(out.get("Nats-Msg-Id").map(|v| v.as_str()), Some("acme:h1/f/00ff/120"));
        let traces: Vec<&str> = out.get_all("X-Trace").map(|v| v.as_str()).collect();
        assert_eq!(traces, ["a", "b"]);
        let agent = Scope::Agent { orgs: vec![OrgId::new("acme").unwrap()], hosts: vec![] };
        let mut origin = h.clone();
        origin.insert("Flotilla-Seq", "7");
        assert_eq!(
            agent.publish_headers("logs.acme.x", origin.clone()),
            Ok(origin.clone()),
            "agents' ids go as they are"
        );
        let refused = tenant().publish_headers("logs.x", origin).unwrap_err().0;
        assert_eq!(refused, "Permissions Violation for Publish to \"logs.x\" with header \"Flotilla-Seq\"");
        for name in ["Nats-Expected-Last-Msg-Id", "nats-trace-dest", "Nats-Rollup", "NATS-TTL"] {
            let mut bad = h.clone();
            bad.insert(name, "x");
            assert!(tenant().publish_headers("logs.x", bad.clone()).is_err(), "{name}");
            assert!(agent.publish_headers("logs.acme.x", bad.clone()).is_err(), "{name}");
            assert_eq!(Scope::Admin.publish_headers("logs.x", bad.clone()), Ok(bad), "{name}");
        }
        // A micro service's error reply.
        let mut service = HeaderMap::new();
        service.insert("Nats-Service-Error", "no such thing");
        service.insert("Nats-Service-Error-Code", "404");
        assert_eq!(tenant().publish_headers("logs.x", service.clone()), Ok(service.clone()));
        assert_eq!(agent.publish_headers("logs.acme.x", service.clone()), Ok(service));
        let mut lower = HeaderMap::new();
        lower.insert("nats-msg-id", "x");
        let out = tenant().publish_headers("logs.x", lower).unwrap();
        assert_eq!(out.get("nats-msg-id").map(|v| v.as_str()), Some("acme:x"), "any case of the name");
    }

    #[test]
    fn deliveries_drop_the_org_token() {
        let t = tenant();
        assert_eq!(t.deliver("logs.acme.web.iad.h1").concat(), "logs.web.iad.h1");
        assert_eq!(t.deliver("telemetry.acme.iad.r1.if").concat(), "telemetry.iad.r1.if");
        assert_eq!(Scope::Admin.deliver("logs.acme.web.iad.h1").concat(), "logs.acme.web.iad.h1");
        assert_eq!(t.deliver("logs.globex.web").concat(), "logs.globex.web", "another org's subject is left as it is");
    }

    #[test]
    fn agents_publish_only_into_their_orgs() {
        let a = Scope::Agent { orgs: vec![OrgId::new("acme").unwrap(), OrgId::new("globex").unwrap()], hosts: vec![] };
        assert!(a.publish("logs.acme.web.iad.h1").is_ok());
        assert!(a.publish("logs.globex.web.iad.h1").is_ok());
        assert!(a.publish("flotilla.agent.h1.status").is_ok(), "heartbeats");
        assert!(tenant().publish("flotilla.agent.h1.status").is_err());
        for bad in [
            "logs.initech.web.iad.h1",
            "logs.acme",
            "logs.*.web",
            "logs.acme.>",
            "$JS.API.STREAM.LIST",
            "_INBOX.x",
            "flotilla.agent.h1.status.x",
            "flotilla.dlq.x",
        ] {
            assert!(a.publish(bad).is_err(), "{bad}");
        }
        assert!(a.subscribe("logs.>").is_err());
        assert_eq!(a.subscribe("_INBOX.x.*"), Ok(SubTarget::Inbox));
        assert!(tenant().publish("logs.acme.web.iad.h1").is_err());
    }
}
