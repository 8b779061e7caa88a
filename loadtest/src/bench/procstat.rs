//! CPU time and memory of a process (this one or a child), read from the
//! kernel.
//!
//! CPU time comes from the process's CPU-time clock
//! (`clock_getcpuclockid` + `clock_gettime`): user + system time of every
//! thread, including threads that already exited, with nanosecond
//! resolution. `/proc/<pid>/stat` (utime + stime in clock ticks, usually
//! 10 ms) is the fallback and a cross-check: its resolution is too coarse for
//! an idle process, where a 30 s window holds less than one tick.

use std::io;

/// CPU seconds (user + system) used so far by `pid`, and how they were read.
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    pub secs: f64,
    pub source: CpuSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuSource {
    Clock,
    ProcStat,
}

impl CpuSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CpuSource::Clock => "clock_getcpuclockid",
            CpuSource::ProcStat => "/proc/<pid>/stat",
        }
    }
}

/// CPU seconds of `pid`: its CPU-time clock, or `/proc/<pid>/stat`.
pub fn cpu(pid: u32) -> io::Result<Cpu> {
    match cpu_clock(pid) {
        Ok(secs) => Ok(Cpu { secs, source: CpuSource::Clock }),
        Err(_) => Ok(Cpu { secs: cpu_ticks(pid)?, source: CpuSource::ProcStat }),
    }
}

/// CPU seconds of `pid` from its process CPU-time clock.
pub fn cpu_clock(pid: u32) -> io::Result<f64> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: both calls only write into the locals we pass.
    let rc = unsafe { libc::clock_getcpuclockid(pid, &mut clock) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: as above.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
}

/// CPU seconds of `pid` from `/proc/<pid>/stat` (utime + stime).
pub fn cpu_ticks(pid: u32) -> io::Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (utime, stime) = parse_stat_times(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("unexpected /proc/{pid}/stat")))?;
    Ok((utime + stime) as f64 / clock_ticks())
}

/// utime and stime (fields 14 and 15). The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat_times(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 is the first after ')'
    let utime = fields.next()?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: u32, field: &str) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no {field} in /proc/{pid}/status")))
}

/// CPU seconds all CPUs spent busy since boot (`/proc/stat`: everything but
/// idle and iowait). Its change during a measurement, minus what the measured
/// processes used, is what other processes took: a disturbance indicator.
pub fn system_busy_secs() -> io::Result<f64> {
    system_cpu().map(|c| c.busy)
}

/// All CPUs' time since boot, seconds, from the `cpu` line of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SystemCpu {
    /// Everything but idle and iowait (steal included).
    pub busy: f64,
    /// Time the hypervisor ran something else while this VM had work.
    pub steal: f64,
    pub total: f64,
}

impl SystemCpu {
    /// What was spent between `earlier` and this reading.
    pub fn since(&self, earlier: &SystemCpu) -> SystemCpu {
        SystemCpu {
            busy: self.busy - earlier.busy,
            steal: self.steal - earlier.steal,
            total: self.total - earlier.total,
        }
    }

    /// Steal as a share of all the CPU time (of a span: see [`SystemCpu::since`]).
    pub fn steal_share(&self) -> f64 {
        if self.total > 0.0 {
            self.steal / self.total
        } else {
            0.0
        }
    }
}

impl std::ops::AddAssign for SystemCpu {
    fn add_assign(&mut self, other: SystemCpu) {
        (self.busy, self.steal, self.total) =
            (self.busy + other.busy, self.steal + other.steal, self.total + other.total);
    }
}

pub fn system_cpu() -> io::Result<SystemCpu> {
    let text = std::fs::read_to_string("/proc/stat")?;
    parse_system_cpu(&text, clock_ticks())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/stat"))
}

fn parse_system_cpu(stat: &str, ticks: f64) -> Option<SystemCpu> {
    let fields = stat.lines().next()?.strip_prefix("cpu ")?;
    // user nice system idle iowait irq softirq steal (guest is inside user)
    let v: Vec<u64> = fields.split_whitespace().take(8).filter_map(|f| f.parse().ok()).collect();
    if v.len() < 8 {
        return None;
    }
    let total: u64 = v.iter().sum();
    Some(SystemCpu {
        busy: (total - v[3] - v[4]) as f64 / ticks,
        steal: v[7] as f64 / ticks,
        total: total as f64 / ticks,
    })
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a constant of the running system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// The 1-minute load average, if readable.
pub fn load1() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 3 0 100 1000 200";
        assert_eq!(parse_stat_times(stat), Some((17, 5)));
        assert_eq!(parse_stat_times("garbage"), None);
    }

    #[test]
    fn system_cpu_counts_steal_as_busy_and_alone() {
        let stat = "cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 1 2 3\n";
        let c = parse_system_cpu(stat, 100.0).unwrap();
        assert_eq!(c, SystemCpu { busy: 1.9, steal: 0.35, total: 10.0 });
        let later = SystemCpu { busy: 3.0, steal: 0.85, total: 12.0 };
        assert!((later.since(&c).steal_share() - 0.25).abs() < 1e-9);
        assert_eq!(parse_system_cpu("cpu  1 2 3\n", 100.0), None, "too few fields");
        assert_eq!(parse_system_cpu("intr 5\n", 100.0), None);
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(cpu_clock(pid).is_ok_and(|s| s > 0.0));
        assert!(cpu_ticks(pid).is_ok());
        assert!(status_kib(pid, "VmRSS").is_ok_and(|k| k > 0));
        assert!(system_busy_secs().is_ok_and(|s| s > 0.0));
    }
}
