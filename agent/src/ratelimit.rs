//! Per-source rate limits: over the limit events are dropped and counted,
//! and the next event that passes is preceded by a notice saying how many.

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::{Map, Value};

use flotilla_core::codec::Decoded;

use crate::config::RateLimitConfig;

pub struct RateGate {
    limiter: DefaultDirectRateLimiter,
    dropped: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Send it; `dropped_before` events were dropped since the last notice.
    Pass {
        dropped_before: u64,
    },
    Drop,
}

impl RateGate {
    pub fn new(cfg: RateLimitConfig) -> Option<RateGate> {
        let rate = NonZeroU32::new(cfg.events_per_sec)?;
        let burst = cfg.burst.and_then(NonZeroU32::new).unwrap_or(rate);
        Some(RateGate { limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)), dropped: 0 })
    }

    pub fn admit(&mut self) -> Admit {
        if self.limiter.check().is_ok() {
            Admit::Pass { dropped_before: std::mem::take(&mut self.dropped) }
        } else {
            self.dropped += 1;
            Admit::Drop
        }
    }
}

/// The synthetic event that reports drops.
pub fn notice(dropped: u64, source: &str) -> Decoded {
    let mut fields = Map::new();
    fields.insert("flotilla_notice".into(), Value::from("rate_limited"));
    fields.insert("dropped".into(), Value::from(dropped));
    Decoded {
        ts: None,
        level: "warn".into(),
        message: format!("flotilla-agent dropped {dropped} events of source {source} over its rate limit"),
        fields,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_over_the_limit_and_reports_them() {
        let mut g = RateGate::new(RateLimitConfig { events_per_sec: 1, burst: Some(3) }).unwrap();
        let first: Vec<Admit> = (0..5).map(|_| g.admit()).collect();
        assert_eq!(
            first[..3],
            [Admit::Pass { dropped_before: 0 }, Admit::Pass { dropped_before: 0 }, Admit::Pass { dropped_before: 0 }]
        );
        assert_eq!(first[3..], [Admit::Drop, Admit::Drop]);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(g.admit(), Admit::Pass { dropped_before: 2 });
    }
}
