//! Open connections: the caps on all connections, per source address and
//! per org, and closing the connections of tokens that were revoked or
//! expired. Counts are kept as connections come and go, so a check is one
//! lookup, not a pass over every connection under the lock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::auth::{TokenEntry, TokenStore};
use crate::outlet::lock;
use crate::queue::Queue;

/// Why the proxy closes a connection from outside its own loop.
pub type Closer = watch::Sender<Option<&'static str>>;

struct Conn {
    org: Option<String>,
    /// The token it authenticated with, as it was then.
    token: Option<TokenEntry>,
    close: Closer,
    queue: Queue,
}

#[derive(Default)]
struct Inner {
    conns: HashMap<u64, Conn>,
    /// Admitted sockets (in a TLS handshake, or served), in all and per address.
    admitted: usize,
    per_ip: HashMap<IpAddr, usize>,
    /// Authenticated connections per org label.
    per_org: HashMap<String, usize>,
}

#[derive(Default)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
}

/// The caps on admitted sockets.
pub struct Caps {
    pub total: usize,
    pub per_ip: usize,
}

/// A socket's place under the caps on all connections and on its address,
/// from its accept (before any TLS handshake) until it is dropped.
pub struct Admission {
    inner: Arc<Mutex<Inner>>,
    ip: IpAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut inner = lock(&self.inner);
        inner.admitted = inner.admitted.saturating_sub(1);
        if let Some(n) = inner.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.per_ip.remove(&self.ip);
            }
        }
    }
}

impl Registry {
    /// A socket just accepted from `ip`; `None` when the proxy, or that
    /// address, has as many as its cap already.
    pub fn admit(&self, ip: IpAddr, caps: &Caps) -> Option<Admission> {
        let mut inner = lock(&self.inner);
        let from_ip = inner.per_ip.get(&ip).copied().unwrap_or(0);
        if inner.admitted >= caps.total || from_ip >= caps.per_ip {
            return None;
        }
        inner.admitted += 1;
        *inner.per_ip.entry(ip).or_insert(0) += 1;
        Some(Admission { inner: self.inner.clone(), ip })
    }

    /// An admitted connection, served.
    pub fn open(&self, id: u64, close: Closer, queue: Queue) {
        lock(&self.inner).conns.insert(id, Conn { org: None, token: None, close, queue });
    }

    /// The connection authenticated; false when its org has `per_org` already.
    pub fn authenticated(&self, id: u64, org: &str, token: TokenEntry, per_org: usize) -> bool {
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        let Some(c) = inner.conns.get_mut(&id) else { return false };
        if c.org.is_none() {
            if inner.per_org.get(org).copied().unwrap_or(0) >= per_org {
                return false;
            }
            *inner.per_org.entry(org.to_string()).or_insert(0) += 1;
            c.org = Some(org.to_string());
        }
        c.token = Some(token);
        true
    }

    pub fn close(&self, id: u64) {
        let mut inner = lock(&self.inner);
        let Some(org) = inner.conns.remove(&id).and_then(|c| c.org) else { return };
        if let Some(n) = inner.per_org.get_mut(&org) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.per_org.remove(&org);
            }
        }
    }

    /// Close the connections whose token is gone, expired or changed.
    pub fn revalidate(&self, tokens: &TokenStore) {
        let inner = lock(&self.inner);
        for c in inner.conns.values() {
            let Some(token) = &c.token else { continue };
            if let Some(reason) = tokens.still_valid(token).err() {
                let _ = c.close.send(Some(reason));
            }
        }
    }

    /// Messages waiting in client queues, per org.
    pub fn queue_depths(&self) -> HashMap<String, i64> {
        let mut out: HashMap<String, i64> = HashMap::new();
        for c in lock(&self.inner).conns.values() {
            let org = c.org.clone().unwrap_or_else(|| "_unauthenticated".into());
            *out.entry(org).or_default() += c.queue.depth() as i64;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> Queue {
        Queue::new(1, None).0
    }

    #[test]
    fn admissions_are_capped_in_all_and_per_address_and_given_back() {
        let r = Registry::default();
        let caps = Caps { total: 3, per_ip: 2 };
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = r.admit(a, &caps).unwrap();
        let _a2 = r.admit(a, &caps).unwrap();
        assert!(r.admit(a, &caps).is_none(), "per address");
        let _b1 = r.admit(b, &caps).unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        assert!(r.admit(c, &caps).is_none(), "in all");
        drop(a1);
        assert!(r.admit(a, &caps).is_some(), "a place given back");
    }

    #[test]
    fn an_orgs_connections_are_counted_once_and_given_back_on_close() {
        let r = Registry::default();
        let token = || TokenEntry {
            name: "t".into(),
            role: crate::auth::Role::Tenant,
            orgs: vec![],
            publish: false,
            hosts: vec![],
            hash: "h".into(),
            created: chrono::Utc::now(),
            expires: None,
        };
        for id in 1..=3 {
            r.open(id, watch::channel(None).0, queue());
        }
        assert!(r.authenticated(1, "acme", token(), 2));
        assert!(r.authenticated(1, "acme", token(), 2), "the same connection again");
        assert!(r.authenticated(2, "acme", token(), 2));
        assert!(!r.authenticated(3, "acme", token(), 2), "the org's third");
        assert!(r.authenticated(3, "globex", token(), 2));
        r.close(1);
        r.open(4, watch::channel(None).0, queue());
        assert!(r.authenticated(4, "acme", token(), 2), "a place given back");
        for id in 2..=4 {
            r.close(id);
        }
        assert!(lock(&r.inner).per_org.is_empty());
    }
}
