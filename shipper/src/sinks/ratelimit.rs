//! Per-sink rate limits (events/s, bytes/s): the sink waits before its next
//! pull instead of dropping anything.

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::RateLimitConfig;

pub struct Limiter {
    events: Option<(DefaultDirectRateLimiter, u32)>,
    bytes: Option<(DefaultDirectRateLimiter, u32)>,
}

fn limiter(rate: Option<u32>) -> Option<(DefaultDirectRateLimiter, u32)> {
    let rate = NonZeroU32::new(rate?)?;
    // A burst of one second's worth.
    Some((RateLimiter::direct(Quota::per_second(rate)), rate.get()))
}

impl Limiter {
    pub fn new(cfg: &RateLimitConfig) -> Limiter {
        Limiter { events: limiter(cfg.events_per_sec), bytes: limiter(cfg.bytes_per_sec) }
    }

    /// At most one second's worth of events per pull.
    pub fn room(&self, room: usize) -> usize {
        match &self.events {
            Some((_, burst)) => room.min(*burst as usize).max(1),
            None => room,
        }
    }

    /// Wait until `events` events of `bytes` bytes (just pulled) fit the
    /// rates; the next pull waits with them.
    pub async fn consume(&self, events: u64, bytes: u64) {
        for (limiter, n) in [(&self.events, events), (&self.bytes, bytes)] {
            let Some((limiter, burst)) = limiter else { continue };
            let mut left = n;
            while left > 0 {
                let take = left.min(u64::from(*burst));
                left -= take;
                // `take` is 1..=burst, so the limiter can always grant it.
                if let Some(take) = NonZeroU32::new(take as u32) {
                    let _ = limiter.until_n_ready(take).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn waits_instead_of_dropping() {
        let l = Limiter::new(&RateLimitConfig { events_per_sec: Some(100), bytes_per_sec: Some(1000) });
        assert_eq!(l.room(10_000), 100);
        let start = Instant::now();
        l.consume(100, 100).await; // the first second's burst
        l.consume(50, 100).await; // half a second more of events
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(400), "{waited:?}");
        let start = Instant::now();
        l.consume(1, 1500).await; // 1.5 s of bytes, more than one burst
        assert!(start.elapsed() >= Duration::from_millis(400), "{:?}", start.elapsed());
        assert_eq!(Limiter::new(&RateLimitConfig::default()).room(7), 7);
    }
}
