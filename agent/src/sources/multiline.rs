//! Multi-line joining: stack traces and other events written over several
//! lines become one event.
//!
//! [`Joiner`] is a pure state machine: the caller pushes lines (each with a
//! token of its own, e.g. its offsets, so that an event knows the first and
//! last line it came from) and the current time; it hands back completed
//! events. An event is complete when a line starts the next one, when it has
//! waited `timeout` since its last line ([`Joiner::flush_due`], to be called
//! at [`Joiner::next_deadline`]), or on [`Joiner::flush`].
//!
//! Lines are joined with `"\n"`; trailing empty lines of an event are
//! dropped from its text (their tokens still count). An event never grows
//! past `max_bytes`: a line that would take it over completes it and starts
//! the next one, so nothing is lost. A single line longer than `max_bytes`
//! is an event of its own; cutting lines is the reader's job.
//!
//! [`MultilineMode::Indented`] continues the previous event with lines that
//! start with a space or tab, `Caused by:` or `at `; it also keeps a Python
//! traceback together: `Traceback (most recent call last):`, its frames,
//! the exception line after them, and chained tracebacks (`During handling
//! of the above exception…`, `The above exception was the direct cause…`
//! and the empty lines around them). A Java exception line that is not
//! indented (`java.lang.IllegalStateException: boom` after the log line)
//! starts an event of its own in this mode; use
//! [`MultilineMode::StartPattern`] with the log's timestamp to keep it with
//! its log line.

use std::time::{Duration, Instant};

use regex::Regex;

/// How to tell the first line of an event from a continuation.
#[derive(Debug, Clone)]
pub enum MultilineMode {
    /// A line matching the pattern starts a new event; any other line
    /// continues the pending one.
    StartPattern(Regex),
    /// Indented lines (and the other continuations in the module docs)
    /// continue the pending event; any other line starts a new one.
    Indented,
}

/// One joined event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece<T> {
    pub text: String,
    /// The token of the event's first line.
    pub first: T,
    /// The token of the event's last line.
    pub last: T,
}

/// Where a Python traceback is, in [`MultilineMode::Indented`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Python {
    Outside,
    /// After `Traceback (most recent call last):`, in the frames.
    Frames,
    /// After the exception line: a chained traceback may follow.
    AfterException,
}

#[derive(Debug)]
struct Pending<T> {
    text: String,
    first: T,
    last: T,
    last_at: Instant,
}

impl<T> Pending<T> {
    fn into_piece(self) -> Piece<T> {
        let mut text = self.text;
        text.truncate(text.trim_end_matches('\n').len());
        Piece { text, first: self.first, last: self.last }
    }
}

/// Joins lines into events; see the module docs.
#[derive(Debug)]
pub struct Joiner<T> {
    mode: MultilineMode,
    max_bytes: usize,
    timeout: Duration,
    pending: Option<Pending<T>>,
    python: Python,
}

impl<T: Clone> Joiner<T> {
    pub fn new(mode: MultilineMode, max_bytes: usize, timeout: Duration) -> Self {
        Joiner { mode, max_bytes, timeout, pending: None, python: Python::Outside }
    }

    /// Add a line (without its newline). Returns the pending event if this
    /// line completes it.
    pub fn push(&mut self, line: &str, token: T, now: Instant) -> Option<Piece<T>> {
        let continues = self.continues(line);
        if let Some(p) = &mut self.pending {
            if continues && p.text.len().saturating_add(1).saturating_add(line.len()) <= self.max_bytes {
                p.text.push('\n');
                p.text.push_str(line);
                p.last = token;
                p.last_at = now;
                return None;
            }
        }
        let done = self.pending.take().map(Pending::into_piece);
        self.pending = Some(Pending { text: line.to_string(), first: token.clone(), last: token, last_at: now });
        done
    }

    /// The pending event, if it has waited `timeout` since its last line.
    pub fn flush_due(&mut self, now: Instant) -> Option<Piece<T>> {
        let due = self.pending.as_ref().is_some_and(|p| now.saturating_duration_since(p.last_at) >= self.timeout);
        if due {
            self.flush()
        } else {
            None
        }
    }

    /// The pending event, whatever its age.
    pub fn flush(&mut self) -> Option<Piece<T>> {
        self.python = Python::Outside;
        self.pending.take().map(Pending::into_piece)
    }

    /// Forget the pending event (e.g. the file it came from was truncated).
    pub fn clear(&mut self) {
        self.python = Python::Outside;
        self.pending = None;
    }

    pub fn pending(&self) -> bool {
        self.pending.is_some()
    }

    /// When [`Joiner::flush_due`] will return the pending event; `None` if
    /// nothing is pending (or the timeout is too large to represent).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.as_ref().and_then(|p| p.last_at.checked_add(self.timeout))
    }

    /// Whether `line` continues an event (if one is pending); keeps track
    /// of Python tracebacks.
    fn continues(&mut self, line: &str) -> bool {
        if let MultilineMode::StartPattern(re) = &self.mode {
            return !re.is_match(line);
        }
        if line.starts_with("Traceback (most recent call last):") {
            self.python = Python::Frames;
            return true;
        }
        if line.starts_with(char::is_whitespace) || line.starts_with("Caused by:") || line.starts_with("at ") {
            return true;
        }
        match self.python {
            Python::Frames => {
                // `ValueError: bad`: the traceback's last line.
                self.python = Python::AfterException;
                true
            }
            Python::AfterException
                if line.is_empty()
                    || line.starts_with("During handling of the above exception")
                    || line.starts_with("The above exception was the direct cause") =>
            {
                true
            }
            _ => {
                self.python = Python::Outside;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(500);

    /// Push every line (token = line number) at one instant, then flush.
    fn join(mode: MultilineMode, max_bytes: usize, text: &str) -> Vec<Piece<usize>> {
        let now = Instant::now();
        let mut j = Joiner::new(mode, max_bytes, TIMEOUT);
        let mut out: Vec<_> = text.lines().enumerate().filter_map(|(i, l)| j.push(l, i, now)).collect();
        out.extend(j.flush());
        assert!(!j.pending());
        out
    }

    fn texts(pieces: &[Piece<usize>]) -> Vec<&str> {
        pieces.iter().map(|p| p.text.as_str()).collect()
    }

    fn timestamped() -> MultilineMode {
        MultilineMode::StartPattern(Regex::new(r"^\d{4}-\d{2}-\d{2}[ T]").unwrap())
    }

    const JAVA: &str = "\
2026-01-02 03:04:05,123 ERROR [http-nio-8080-exec-1] c.e.OrderController - order failed
java.lang.IllegalStateException: payment declined
\tat com.example.PaymentService.charge(PaymentService.java:88)
\tat com.example.OrderController.create(OrderController.java:42)
\tat java.base/java.lang.Thread.run(Thread.java:1583)
Caused by: java.net.SocketTimeoutException: Read timed out
\tat java.base/sun.nio.ch.NioSocketImpl.timedRead(NioSocketImpl.java:288)
\t... 2 more
2026-01-02 03:04:06,001 INFO  [main] c.e.App - still serving";

    #[test]
    fn java_stack_trace_by_start_pattern() {
        let pieces = join(timestamped(), 1 << 20, JAVA);
        assert_eq!(pieces.len(), 2);
        assert_eq!((pieces[0].first, pieces[0].last), (0, 7));
        assert_eq!(pieces[0].text, JAVA.lines().take(8).collect::<Vec<_>>().join("\n"));
        assert_eq!((pieces[1].first, pieces[1].last, pieces[1].text.as_str()), (8, 8, JAVA.lines().nth(8).unwrap()));
    }

    #[test]
    fn java_stack_trace_by_indentation() {
        let pieces = join(MultilineMode::Indented, 1 << 20, JAVA);
        // The unindented exception line starts its own event.
        assert_eq!(pieces.iter().map(|p| (p.first, p.last)).collect::<Vec<_>>(), [(0, 0), (1, 7), (8, 8)]);
        assert!(pieces[1].text.starts_with("java.lang.IllegalStateException"));
        assert!(pieces[1].text.ends_with("\t... 2 more"));
        // Frames without a tab, as some loggers write them.
        let pieces = join(MultilineMode::Indented, 1 << 20, "boom\nat a.B.c(B.java:1)\nCaused by: x\nnext");
        assert_eq!(texts(&pieces), ["boom\nat a.B.c(B.java:1)\nCaused by: x", "next"]);
    }

    const PYTHON: &str = "\
2026-01-02 03:04:05,123 ERROR app: request failed
Traceback (most recent call last):
  File \"/srv/app/db.py\", line 12, in fetch
    return conn.execute(q)
           ^^^^^^^^^^^^^^^
KeyError: 'user_id'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File \"/srv/app/views.py\", line 40, in order
    row = fetch(q)
ZeroDivisionError: division by zero
2026-01-02 03:04:05,200 INFO app: next request
2026-01-02 03:04:05,300 INFO app: and another";

    #[test]
    fn python_traceback_by_indentation() {
        let pieces = join(MultilineMode::Indented, 1 << 20, PYTHON);
        let lines: Vec<&str> = PYTHON.lines().collect();
        assert_eq!(texts(&pieces), [lines[..13].join("\n").as_str(), lines[13], lines[14]]);
        assert_eq!((pieces[0].first, pieces[0].last), (0, 12));
    }

    #[test]
    fn python_traceback_by_start_pattern() {
        let pieces = join(timestamped(), 1 << 20, PYTHON);
        assert_eq!(pieces.len(), 3);
        assert_eq!((pieces[0].first, pieces[0].last), (0, 12));
        assert!(pieces[0].text.ends_with("ZeroDivisionError: division by zero"));
    }

    #[test]
    fn blank_lines_after_a_traceback_are_not_kept() {
        let text = "Traceback (most recent call last):\n  File \"x\", line 1\nValueError: x\n\n\nnext";
        let pieces = join(MultilineMode::Indented, 1 << 20, text);
        assert_eq!(texts(&pieces), ["Traceback (most recent call last):\n  File \"x\", line 1\nValueError: x", "next"]);
        assert_eq!((pieces[0].first, pieces[0].last), (0, 4));
    }

    #[test]
    fn continuation_without_a_start() {
        let pieces = join(timestamped(), 1 << 20, "  orphan\n  frame\n2026-01-02 x");
        assert_eq!(texts(&pieces), ["  orphan\n  frame", "2026-01-02 x"]);
    }

    #[test]
    fn timeout_completes_the_pending_event() {
        let t0 = Instant::now();
        let mut j = Joiner::new(MultilineMode::Indented, 1024, TIMEOUT);
        assert_eq!(j.next_deadline(), None);
        assert_eq!(j.push("ERROR failed", 1u64, t0), None);
        assert_eq!(j.push("  at frame", 2, t0 + Duration::from_millis(300)), None);
        let deadline = t0 + Duration::from_millis(800);
        assert_eq!(j.next_deadline(), Some(deadline));
        assert_eq!(j.flush_due(deadline - Duration::from_millis(1)), None);
        assert_eq!(j.flush_due(t0), None); // time going backwards is "not yet"
        assert_eq!(j.flush_due(deadline), Some(Piece { text: "ERROR failed\n  at frame".into(), first: 1, last: 2 }));
        assert!(!j.pending());
        assert_eq!(j.flush_due(deadline + TIMEOUT), None);
        assert_eq!(j.flush(), None);
    }

    #[test]
    fn max_bytes_completes_the_event_first() {
        let now = Instant::now();
        let mut j = Joiner::new(MultilineMode::Indented, 20, TIMEOUT);
        assert_eq!(j.push("start", 0, now), None);
        assert_eq!(j.push("  aaaaaaaaaaaa", 1, now), None); // 5 + 1 + 14 = 20
        let first = j.push("  bb", 2, now);
        assert_eq!(first, Some(Piece { text: "start\n  aaaaaaaaaaaa".into(), first: 0, last: 1 }));
        assert_eq!(j.push("  cc", 3, now), None);
        // A line longer than max_bytes is an event of its own.
        let long = format!("  {}", "x".repeat(30));
        assert_eq!(j.push(&long, 4, now), Some(Piece { text: "  bb\n  cc".into(), first: 2, last: 3 }));
        assert_eq!(j.push("  dd", 5, now), Some(Piece { text: long.clone(), first: 4, last: 4 }));
        assert_eq!(j.flush(), Some(Piece { text: "  dd".into(), first: 5, last: 5 }));
        // Nothing lost: every byte of input is in an output.
        let pieces = join(MultilineMode::Indented, 16, JAVA);
        let joined: usize = pieces.iter().map(|p| p.text.lines().count()).sum();
        assert_eq!(joined, JAVA.lines().count());
        assert!(pieces.iter().all(|p| p.text.len() <= 16 || p.first == p.last));
    }

    #[test]
    fn clear_forgets() {
        let now = Instant::now();
        let mut j = Joiner::new(MultilineMode::Indented, 1024, TIMEOUT);
        j.push("Traceback (most recent call last):", 'a', now);
        assert!(j.pending());
        j.clear();
        assert!(!j.pending());
        assert_eq!(j.next_deadline(), None);
        // The traceback state went too: an unindented line is a new event.
        assert_eq!(j.push("one", 'b', now), None);
        assert_eq!(j.push("two", 'c', now), Some(Piece { text: "one".into(), first: 'b', last: 'b' }));
    }

    #[test]
    fn huge_timeout_has_no_deadline() {
        let mut j = Joiner::new(MultilineMode::Indented, 1024, Duration::MAX);
        j.push("x", (), Instant::now());
        assert_eq!(j.next_deadline(), None);
        assert_eq!(j.flush_due(Instant::now()), None);
    }
}
