//! Exponential backoff with jitter, and a sleep that shutdown interrupts.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max, next: min }
    }

    /// The next delay (doubling up to `max`), with ±20% jitter.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = rand::random_range(0.8..1.2);
        base.mul_f64(jitter)
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Sleep for `d`; false if `shutdown` was cancelled first.
pub async fn sleep_or_shutdown(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let d: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert!((80..=120).contains(&d[0]), "{d:?}");
        assert!((160..=240).contains(&d[1]), "{d:?}");
        assert!((280..=420).contains(&d[2]) && (280..=420).contains(&d[3]), "{d:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }
}
