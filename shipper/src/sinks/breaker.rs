//! The circuit breaker of an external sink: after `failures` failed sends
//! in a row, across batches, the sink pauses before its next send, and the
//! pause doubles with each further failure up to `max_cooldown`. A send
//! that the destination answers (2xx, or a refusal retrying cannot fix)
//! closes it.
//!
//! A batch's backoff starts small again with every new batch; the breaker
//! is what keeps a destination that is down from being hit by each new
//! batch's quick first retries. It never drops or dead-letters anything
//! itself: waiting costs a batch no attempts.

use std::time::Duration;

use tokio::time::Instant;

use flotilla_core::metrics::{Counter, Gauge};

use crate::config::BreakerConfig;

pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    max_cooldown: Duration,
    failures: u32,
    next_cooldown: Duration,
    open_until: Option<Instant>,
    opened: Counter,
    open: Gauge,
}

impl Breaker {
    /// `opened` counts closed → open transitions; `open` is 1 while open.
    pub fn new(cfg: &BreakerConfig, opened: Counter, open: Gauge) -> Breaker {
        Breaker {
            threshold: cfg.failures,
            cooldown: cfg.cooldown(),
            max_cooldown: cfg.max_cooldown(),
            failures: 0,
            next_cooldown: cfg.cooldown(),
            open_until: None,
            opened,
            open,
        }
    }

    /// When the next send may go (`None`: now).
    pub fn wait_until(&self) -> Option<Instant> {
        self.open_until.filter(|t| *t > Instant::now())
    }

    /// The destination answered: close.
    pub fn answered(&mut self) {
        self.failures = 0;
        self.next_cooldown = self.cooldown;
        self.open_until = None;
        self.open.set(0);
    }

    /// A send failed (timeout, connection error, 5xx, 429...).
    pub fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
        if self.threshold == 0 || self.failures < self.threshold {
            return;
        }
        if self.open_until.is_none() {
            self.opened.inc();
            tracing::warn!(failures = self.failures, cooldown = ?self.next_cooldown, "circuit breaker open");
        }
        self.open_until = Some(Instant::now() + self.next_cooldown);
        self.next_cooldown = (self.next_cooldown * 2).min(self.max_cooldown);
        self.open.set(1);
    }

    pub fn is_open(&self) -> bool {
        self.open_until.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32) -> Breaker {
        let cfg = BreakerConfig { failures, cooldown: "100ms".into(), max_cooldown: "350ms".into() };
        Breaker::new(&cfg, Counter::default(), Gauge::default())
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_failures_in_a_row_and_backs_off_to_its_ceiling() {
        let mut b = breaker(3);
        b.failed();
        b.failed();
        assert!(!b.is_open() && b.wait_until().is_none());
        b.failed();
        let waits: Vec<Duration> = (0..4)
            .map(|_| {
                let w = b.wait_until().map(|t| t - Instant::now()).unwrap_or_default();
                b.failed();
                w
            })
            .collect();
        assert_eq!(waits, [100, 200, 350, 350].map(Duration::from_millis));
        assert_eq!((b.opened.get(), b.open.get()), (1, 1));
        b.answered();
        assert!(!b.is_open() && b.wait_until().is_none());
        assert_eq!(b.open.get(), 0);
        // Closed again, it takes a full run of failures to reopen, at the first cooldown.
        b.failed();
        b.failed();
        assert!(!b.is_open());
        b.failed();
        assert_eq!(b.wait_until().map(|t| t - Instant::now()), Some(Duration::from_millis(100)));
        assert_eq!(b.opened.get(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_failures_turns_it_off() {
        let mut b = breaker(0);
        for _ in 0..100 {
            b.failed();
        }
        assert!(!b.is_open());
    }
}
