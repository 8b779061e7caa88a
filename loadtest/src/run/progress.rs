//! The progress bar on stderr (indicatif); on anything but a terminal only
//! one line per phase.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
    tty: bool,
    scenario: String,
}

impl Progress {
    /// A bar over the load's seconds.
    pub fn new(scenario: &str, load: Duration) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let bar = if tty {
            let bar = ProgressBar::new(load.as_secs().max(1));
            let style =
                ProgressStyle::with_template("{prefix:.bold} [{elapsed_precise}] {wide_bar} {pos}/{len} s  {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(scenario.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress { bar, tty, scenario: scenario.into() }
    }

    pub fn phase(&self, msg: &str) {
        if self.tty {
            self.bar.set_message(msg.to_string());
        } else {
            eprintln!("[{}] {msg}", self.scenario);
        }
    }

    /// A passing status: shown on a terminal only.
    pub fn status(&self, msg: &str) {
        if self.tty {
            self.bar.set_message(msg.to_string());
        }
    }

    /// Seconds of load done.
    pub fn at(&self, secs: u64) {
        self.bar.set_position(secs);
    }

    /// A line that stays (a fault, a warning).
    pub fn note(&self, msg: &str) {
        if self.tty {
            self.bar.println(msg);
        } else {
            eprintln!("[{}] {msg}", self.scenario);
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
