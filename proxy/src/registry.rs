//! Open connections: caps per source address and per org, and closing the
//! connections of tokens that were revoked or expired.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::auth::TokenStore;
use crate::outlet::lock;
use crate::queue::Queue;

/// Why the proxy closes a connection from outside its own loop.
pub type Closer = watch::Sender<Option<&'static str>>;

struct Conn {
    ip: IpAddr,
    org: Option<String>,
    /// Token name and hash, once authenticated.
    token: Option<(String, String)>,
    close: Closer,
    queue: Queue,
}

#[derive(Default)]
pub struct Registry {
    conns: Mutex<HashMap<u64, Conn>>,
}

pub struct Caps {
    pub per_ip: usize,
    pub per_org: usize,
}

impl Registry {
    /// A new connection; false when its address has too many already.
    pub fn open(&self, id: u64, ip: IpAddr, close: Closer, queue: Queue, caps: &Caps) -> bool {
        let mut conns = lock(&self.conns);
        if conns.values().filter(|c| c.ip == ip).count() >= caps.per_ip {
            return false;
        }
        conns.insert(id, Conn { ip, org: None, token: None, close, queue });
        true
    }

    /// The connection authenticated; false when its org has too many already.
    pub fn authenticated(&self, id: u64, org: &str, token: (String, String), caps: &Caps) -> bool {
        let mut conns = lock(&self.conns);
        if conns.values().filter(|c| c.org.as_deref() == Some(org)).count() >= caps.per_org {
            return false;
        }
        if let Some(c) = conns.get_mut(&id) {
            c.org = Some(org.to_string());
            c.token = Some(token);
        }
        true
    }

    pub fn close(&self, id: u64) {
        lock(&self.conns).remove(&id);
    }

    /// Close the connections whose token is gone or expired.
    pub fn revalidate(&self, tokens: &TokenStore) {
        let conns = lock(&self.conns);
        for c in conns.values() {
            let Some((name, hash)) = &c.token else { continue };
            if let Some(reason) = tokens.still_valid(name, hash).err() {
                let _ = c.close.send(Some(reason));
            }
        }
    }

    /// Messages waiting in client queues, per org.
    pub fn queue_depths(&self) -> HashMap<String, i64> {
        let mut out: HashMap<String, i64> = HashMap::new();
        for c in lock(&self.conns).values() {
            let org = c.org.clone().unwrap_or_else(|| "_unauthenticated".into());
            *out.entry(org).or_default() += c.queue.depth() as i64;
        }
        out
    }
}
