//! Rates: failed-auth throttling per source address, publish limits per
//! connection and per org, and subscription changes per connection.
//! Clients over a limit are slowed by not reading their socket (TCP
//! backpressure), never dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::outlet::lock;

const WINDOW: Duration = Duration::from_secs(60);

/// Failed CONNECTs per source address in a one-minute window.
pub struct AuthThrottle {
    max: u32,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// When the table was last swept of old entries.
    swept: Mutex<Instant>,
}

/// Addresses tracked before old entries are swept (at most once a second:
/// a flood from many addresses must not make every failure a full pass).
const SWEEP_ABOVE: usize = 100_000;

impl AuthThrottle {
    pub fn new(max_per_minute: u32) -> Self {
        AuthThrottle { max: max_per_minute, failures: Mutex::new(HashMap::new()), swept: Mutex::new(Instant::now()) }
    }

    /// True while this address has used up its failed attempts.
    pub fn blocked(&self, ip: IpAddr) -> bool {
        let failures = lock(&self.failures);
        failures.get(&ip).is_some_and(|(n, since)| *n >= self.max && since.elapsed() < WINDOW)
    }

    pub fn failed(&self, ip: IpAddr) {
        let mut failures = lock(&self.failures);
        if failures.len() > SWEEP_ABOVE {
            let mut swept = lock(&self.swept);
            if swept.elapsed() >= Duration::from_secs(1) {
                *swept = Instant::now();
                failures.retain(|_, (_, since)| since.elapsed() < WINDOW);
            }
        }
        let e = failures.entry(ip).or_insert((0, Instant::now()));
        if e.1.elapsed() >= WINDOW {
            *e = (0, Instant::now());
        }
        e.0 += 1;
    }
}

/// A messages/s and a bytes/s limit (either may be off).
pub struct PublishRate {
    msgs: Option<DefaultDirectRateLimiter>,
    bytes: Option<DefaultDirectRateLimiter>,
    burst_bytes: u32,
}

impl PublishRate {
    pub fn new(msgs_per_sec: u32, bytes_per_sec: u32) -> Option<PublishRate> {
        let msgs = NonZeroU32::new(msgs_per_sec).map(|r| RateLimiter::direct(Quota::per_second(r)));
        let bytes = NonZeroU32::new(bytes_per_sec).map(|r| RateLimiter::direct(Quota::per_second(r)));
        (msgs.is_some() || bytes.is_some()).then_some(PublishRate { msgs, bytes, burst_bytes: bytes_per_sec.max(1) })
    }

    /// Wait until one more message of `len` bytes is within the limits.
    pub async fn admit(&self, len: usize) {
        if let Some(m) = &self.msgs {
            m.until_ready().await;
        }
        if let Some(b) = &self.bytes {
            // A message larger than a second's budget waits for a whole second's budget.
            let n = (len as u32).clamp(1, self.burst_bytes);
            if let Some(n) = NonZeroU32::new(n) {
                let _ = b.until_n_ready(n).await;
            }
        }
    }
}

/// SUBs and UNSUBs per second on one connection. Each new subject is a
/// change to nats-server's subscription index, which every publish is
/// matched against: a client that subscribes and unsubscribes in a loop
/// would tax every org's deliveries. The burst lets a client take its whole
/// allowance of subscriptions at once (as on connect and reconnect).
pub struct SubChanges(DefaultDirectRateLimiter);

impl SubChanges {
    pub fn new(per_sec: u32, max_subscriptions: usize) -> Option<SubChanges> {
        let rate = NonZeroU32::new(per_sec)?;
        let burst = NonZeroU32::new(u32::try_from(max_subscriptions).unwrap_or(u32::MAX).max(per_sec))?;
        Some(SubChanges(RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))))
    }

    /// Wait until one more change is within the limit; true if it had to.
    pub async fn admit(&self) -> bool {
        if self.0.check().is_ok() {
            return false;
        }
        self.0.until_ready().await;
        true
    }
}

/// Per-org publish limits, shared by all of an org's connections.
pub struct OrgRates {
    msgs: Option<DefaultKeyedRateLimiter<String>>,
    bytes: Option<DefaultKeyedRateLimiter<String>>,
    burst_bytes: u32,
}

impl OrgRates {
    pub fn new(msgs_per_sec: u32, bytes_per_sec: u32) -> OrgRates {
        OrgRates {
            msgs: NonZeroU32::new(msgs_per_sec).map(|r| RateLimiter::keyed(Quota::per_second(r))),
            bytes: NonZeroU32::new(bytes_per_sec).map(|r| RateLimiter::keyed(Quota::per_second(r))),
            burst_bytes: bytes_per_sec.max(1),
        }
    }

    pub async fn admit(&self, org: &str, len: usize) {
        let key = org.to_string();
        if let Some(m) = &self.msgs {
            m.until_key_ready(&key).await;
        }
        if let Some(b) = &self.bytes {
            let n = (len as u32).clamp(1, self.burst_bytes);
            if let Some(n) = NonZeroU32::new(n) {
                let _ = b.until_key_n_ready(&key, n).await;
            }
        }
    }
}

/// Subscriptions per org, over all its tenants' connections: a slot is
/// taken for each and given back when the subscription is dropped
/// (unsubscribed, spent, or its connection closed).
pub struct OrgSubs {
    max: usize,
    counts: Mutex<HashMap<String, usize>>,
}

/// One subscription's place in its org's count.
pub struct SubSlot {
    owner: Arc<OrgSubs>,
    org: String,
}

impl OrgSubs {
    pub fn new(max: usize) -> Arc<OrgSubs> {
        Arc::new(OrgSubs { max, counts: Mutex::new(HashMap::new()) })
    }

    /// A slot for one more subscription of `org`; `None` at the cap.
    pub fn take(self: &Arc<Self>, org: &str) -> Option<SubSlot> {
        let mut counts = lock(&self.counts);
        let n = counts.entry(org.to_string()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(SubSlot { owner: self.clone(), org: org.to_string() })
    }

    pub fn count(&self, org: &str) -> usize {
        lock(&self.counts).get(org).copied().unwrap_or(0)
    }
}

impl Drop for SubSlot {
    fn drop(&mut self) {
        let mut counts = lock(&self.owner.counts);
        if let Some(n) = counts.get_mut(&self.org) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.org);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_failures_block_an_address_for_the_window() {
        let t = AuthThrottle::new(3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert!(!t.blocked(a));
            t.failed(a);
        }
        assert!(t.blocked(a));
        assert!(!t.blocked(b));
    }

    #[test]
    fn an_orgs_subscriptions_are_capped_and_their_slots_given_back() {
        let subs = OrgSubs::new(2);
        let (a1, a2) = (subs.take("acme").unwrap(), subs.take("acme").unwrap());
        assert!(subs.take("acme").is_none(), "at the cap");
        let g = subs.take("globex").expect("another org counts apart");
        drop(a1);
        let a3 = subs.take("acme").expect("a slot given back");
        assert_eq!((subs.count("acme"), subs.count("globex")), (2, 1));
        drop((a2, a3, g));
        assert!(lock(&subs.counts).is_empty(), "no entry left for an org with none");
    }

    #[tokio::test]
    async fn publish_rate_slows_instead_of_dropping() {
        let r = PublishRate::new(20, 0).unwrap();
        let start = Instant::now();
        for _ in 0..30 {
            r.admit(10).await;
        }
        // 20 at once (the burst), the next 10 at 20/s.
        assert!(start.elapsed() >= Duration::from_millis(400), "{:?}", start.elapsed());
    }
}
