//! Reconnect and retry delays: exponential with full jitter, so ten thousand
//! agents that lost NATS together do not come back together.

use std::time::Duration;

const BASE_MS: u64 = 100;
const CAP_MS: u64 = 30_000;

/// A random delay in `[0, min(cap, base·2^attempt)]` (at least 10 ms).
pub fn delay(attempt: u32) -> Duration {
    let ceiling = BASE_MS.saturating_mul(1u64 << attempt.min(16)).min(CAP_MS);
    Duration::from_millis(rand::random_range(10..=ceiling.max(10)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_is_spread_out() {
        assert!(delay(0) <= Duration::from_millis(100));
        let late: Vec<Duration> = (0..200).map(|_| delay(30)).collect();
        assert!(late.iter().all(|d| *d <= Duration::from_secs(30)));
        let distinct: std::collections::HashSet<_> = late.iter().collect();
        assert!(distinct.len() > 150, "full jitter spreads retries");
        assert!(late.iter().any(|d| *d < Duration::from_secs(10)) && late.iter().any(|d| *d > Duration::from_secs(20)));
    }
}
