//! What a reconnect-storm run leaves behind: `report.json`, `report.md`,
//! `reconnects.svg` (reconnects per 100 ms and cumulative, per fleet size)
//! and `messages.svg` (messages over agents, log-log, with linear and
//! quadratic references).
//!
//! `report.json` is this module's [`StormReport`], not the pipeline
//! scenarios' report: no lines are written or archived, so `events_*`,
//! `lost`, `duplicated`, throughput and latency are left out. The
//! [`Report`] handed to `run --all` has them at 0 and the storm's figures
//! in `extra`.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use super::fit::{buckets, loglog_slope, quantile};
use super::server::Varz;
use super::trace::Tally;
use super::{Plan, BUCKET_MS, DEADLINE, NAME, SLOPE_BOUND, SPIKE_BOUND};
use crate::bench::BenchError;
use crate::run::orchestrate::RunOptions;
use crate::run::report::{Faults, Latency, Machine, Percentiles, Report, Series};
use crate::run::scenarios::Load;
use crate::run::stack::ProcStats;
use crate::run::verify::Verdict;

/// Per agent, in the window.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PerAgent {
    pub attempts: f64,
    /// Every operation the agents sent the server.
    pub received: f64,
    /// `CONNECT`, `PING`, `PONG`, `SUB`, `UNSUB`.
    pub handshake: f64,
    pub heartbeats: f64,
    /// Every operation the server sent the agents (`INFO` not traced).
    pub sent: f64,
}

/// One round: N agents, one kill and restart.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub agents: usize,
    /// `kill -9` → the restarted server's monitoring port answered.
    pub down_s: f64,
    pub window_s: f64,
    /// Agents whose client connected again by the deadline.
    pub reconnected: usize,
    /// Agents whose `CONNECT` the restarted server logged by the deadline.
    pub reconnected_server: usize,
    /// ... and within the window (the others' messages are not counted).
    pub back_in_window: usize,
    /// All clients connected again, seconds after the restart (client side).
    pub all_back_client_s: Option<f64>,
    /// Published once more through each agent's window after it, and acked.
    pub acked_after: usize,
    /// Seconds from "Server is ready" to an agent's `CONNECT`.
    pub back_p50_s: f64,
    pub back_p90_s: f64,
    pub back_p99_s: f64,
    pub back_max_s: f64,
    /// Connection attempts from the kill to the end of the window, refused
    /// ones (server down) included.
    pub attempts: u64,
    /// Operations the agents sent, by verb, from the server's trace.
    pub received: BTreeMap<String, u64>,
    pub received_total: u64,
    pub handshake: u64,
    /// `PUB`s on `flotilla.agent.*.status` received by the server.
    pub heartbeats: u64,
    /// Heartbeats a subscriber on `flotilla.agent.*.status` saw after the kill.
    pub heartbeats_seen: u64,
    /// Operations the server sent the agents, by verb.
    pub sent: BTreeMap<String, u64>,
    pub sent_total: u64,
    /// Connections the restarted server accepted (agents and the watcher).
    pub connections: u64,
    /// `/varz` at the end of the window (its counters start at the restart).
    pub varz: Varz,
    pub per_agent: PerAgent,
    /// Agents whose `CONNECT` arrived in each 100 ms after "ready" (to the
    /// last one or the end of the window).
    pub reconnects_per_100ms: Vec<u32>,
    pub max_per_100ms: u32,
    pub max_share_per_100ms: f64,
    pub unreadable_trace_lines: u64,
}

/// What the round saw from the client side.
#[derive(Debug, Clone, Copy)]
pub struct Observed {
    pub down_s: f64,
    /// Agents whose client connected again by the deadline.
    pub reconnected: usize,
    pub all_back_client: Option<f64>,
    pub acked_after: usize,
    /// In the window.
    pub attempts: u64,
    pub heartbeats_seen: u64,
    pub varz: Varz,
}

impl Row {
    /// `t`: the trace counted over the window; `sorted_ms`: every agent's
    /// reconnect time (ms after "ready"), stragglers after the window too.
    pub fn new(n: usize, plan: &Plan, o: Observed, t: &Tally, sorted_ms: &[f64]) -> Row {
        let Observed {
            down_s,
            reconnected,
            all_back_client: all_back_client_s,
            acked_after,
            attempts,
            heartbeats_seen,
            varz,
        } = o;
        let window_ms = plan.window.as_secs_f64() * 1000.0;
        let per = |x: u64| x as f64 / n.max(1) as f64;
        let span_ms = sorted_ms.last().copied().unwrap_or(0.0).max(window_ms) + 1.0;
        let hist = buckets(sorted_ms, BUCKET_MS, span_ms);
        let max = hist.iter().copied().max().unwrap_or(0);
        Row {
            agents: n,
            down_s,
            window_s: plan.window.as_secs_f64(),
            reconnected,
            reconnected_server: sorted_ms.len(),
            back_in_window: t.first_connect_ms.len(),
            all_back_client_s,
            acked_after,
            back_p50_s: quantile(sorted_ms, 0.5) / 1000.0,
            back_p90_s: quantile(sorted_ms, 0.9) / 1000.0,
            back_p99_s: quantile(sorted_ms, 0.99) / 1000.0,
            back_max_s: quantile(sorted_ms, 1.0) / 1000.0,
            attempts,
            received: t.received.clone(),
            received_total: t.received_total(),
            handshake: t.handshake(),
            heartbeats: t.heartbeats,
            heartbeats_seen,
            sent: t.sent.clone(),
            sent_total: t.sent_total(),
            connections: t.connections,
            varz,
            per_agent: PerAgent {
                attempts: per(attempts),
                received: per(t.received_total()),
                handshake: per(t.handshake()),
                heartbeats: per(t.heartbeats),
                sent: per(t.sent_total()),
            },
            max_per_100ms: max,
            max_share_per_100ms: max as f64 / n.max(1) as f64,
            reconnects_per_100ms: hist,
            unreadable_trace_lines: t.unreadable,
        }
    }
}

/// Log-log slopes over the rounds (`null`: fewer than two sizes, or a zero).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Slopes {
    /// Every operation the agents sent the server: the figure that passes or fails.
    pub received: Option<f64>,
    pub handshake: Option<f64>,
    pub attempts: Option<f64>,
    pub heartbeats: Option<f64>,
    pub sent: Option<f64>,
}

impl Slopes {
    fn of(rows: &[Row]) -> Slopes {
        let fit = |f: &dyn Fn(&Row) -> u64| {
            loglog_slope(&rows.iter().map(|r| (r.agents as f64, f(r) as f64)).collect::<Vec<_>>())
        };
        Slopes {
            received: fit(&|r| r.received_total),
            handshake: fit(&|r| r.handshake),
            attempts: fit(&|r| r.attempts),
            heartbeats: fit(&|r| r.heartbeats),
            sent: fit(&|r| r.sent_total),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    pub scenario: String,
    pub quick: bool,
    pub started: String,
    pub command: String,
    pub ok: bool,
    /// The fields every scenario's report has. Here the events are the
    /// agents' JetStream publishes after the storm (one per agent and
    /// round): sent, acked (`events_archived`) and not acked (`lost`).
    /// There is no archive, line throughput or line latency: `null`.
    pub events_sent: u64,
    pub events_archived: u64,
    pub lost: u64,
    pub duplicated: Option<u64>,
    pub throughput_eps: Option<f64>,
    pub baseline_eps: Option<f64>,
    pub ratio: Option<f64>,
    pub latency_ms: Option<f64>,
    /// Why not, when not ok.
    pub failures: Vec<String>,
    pub plan: Plan,
    pub rows: Vec<Row>,
    pub slopes: Slopes,
    pub slope_bound: f64,
    pub spike_bound: f64,
    pub faults: Faults,
    pub processes: BTreeMap<String, ProcStats>,
    pub machine: Machine,
    pub versions: BTreeMap<String, String>,
    pub wall_s: f64,
}

fn f2(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.2}")).unwrap_or_else(|| "–".into())
}

impl StormReport {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        opts: &RunOptions,
        started: String,
        plan: Plan,
        rows: Vec<Row>,
        log: Vec<String>,
        processes: BTreeMap<String, ProcStats>,
        machine: Machine,
        versions: BTreeMap<String, String>,
        wall_s: f64,
    ) -> StormReport {
        let slopes = Slopes::of(&rows);
        let mut failures = Vec::new();
        for r in &rows {
            let n = r.agents;
            if r.reconnected < n || r.reconnected_server < n {
                failures.push(format!(
                    "{n} agents: only {} (client) / {} (server) reconnected within {} s of the restart",
                    r.reconnected,
                    r.reconnected_server,
                    DEADLINE.as_secs()
                ));
            }
            if r.acked_after < n {
                failures.push(format!("{n} agents: only {} publishes acked after the storm", r.acked_after));
            }
            if r.max_share_per_100ms > SPIKE_BOUND {
                failures.push(format!(
                    "{n} agents: {} ({:.0} %) reconnected within one 100 ms (bound {:.0} %)",
                    r.max_per_100ms,
                    r.max_share_per_100ms * 100.0,
                    SPIKE_BOUND * 100.0
                ));
            }
        }
        for (what, s) in [("messages from agents", slopes.received), ("connection attempts", slopes.attempts)] {
            match s {
                Some(s) if s < SLOPE_BOUND => {}
                Some(s) => failures.push(format!("{what} grow with N^{s:.2} (bound {SLOPE_BOUND})")),
                None => failures.push(format!("no slope of {what}: fewer than two sizes or a zero count")),
            }
        }
        let events_sent: u64 = rows.iter().map(|r| r.agents as u64).sum();
        let events_archived: u64 = rows.iter().map(|r| r.acked_after.min(r.agents) as u64).sum();
        StormReport {
            scenario: NAME.into(),
            quick: opts.quick,
            started,
            command: opts.command.clone(),
            ok: failures.is_empty() && !rows.is_empty(),
            events_sent,
            events_archived,
            lost: events_sent - events_archived,
            duplicated: None,
            throughput_eps: None,
            baseline_eps: None,
            ratio: None,
            latency_ms: None,
            failures,
            plan,
            faults: Faults { injected: rows.len() as u32, log },
            rows,
            slopes,
            slope_bound: SLOPE_BOUND,
            spike_bound: SPIKE_BOUND,
            processes,
            machine,
            versions,
            wall_s,
        }
    }

    pub fn markdown(&self) -> String {
        let p = &self.plan;
        let mut s = format!(
            "# flotilla-loadtest run {}{} — {}\n\n`{}`\n\n**{}**: {} rounds; in each, N simulated agents \
             (the agent's connect options, reconnect backoff, heartbeat task and JetStream ack window) lose \
             nats-server to `kill -9` and it is restarted {:.0} s later on the same port and store. Counted \
             over the {:.0} s after the restarted server is ready: the protocol operations the agents sent it \
             and it sent them (its trace log, `-DV`), the agents' connection attempts (client side, refused \
             ones included), heartbeats (every {:.0} s per agent, jittered). Passes when every agent reconnects \
             within {} s of the restart and its JetStream publish is acked afterwards, messages grow with N at a log-log slope below {} \
             (linear = 1, quadratic = 2), and no 100 ms holds more than {:.0} % of the agents' reconnects.\n\n",
            self.scenario,
            if self.quick { " --quick" } else { "" },
            self.started,
            self.command,
            if self.ok { "PASS" } else { "FAIL" },
            self.rows.len(),
            p.down.as_secs_f64(),
            p.window.as_secs_f64(),
            p.heartbeat.as_secs_f64(),
            DEADLINE.as_secs(),
            self.slope_bound,
            self.spike_bound * 100.0,
        );
        for f in &self.failures {
            s += &format!("- **{f}**\n");
        }
        if !self.failures.is_empty() {
            s += "\n";
        }
        s += "| agents | reconnected (client / server; in the window) | acked after | back p50 / p90 / p99 / max s | attempts | per agent \
              | from agents | per agent | handshake | per agent | heartbeats (seen) | per agent | to agents | per agent \
              | max per 100 ms |\n|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|\n";
        for r in &self.rows {
            let a = &r.per_agent;
            s += &format!(
                "| {} | {} / {}; {} | {} | {:.2} / {:.2} / {:.2} / {:.2} | {} | {:.2} | {} | {:.2} | {} | {:.2} | {} ({}) | {:.2} | {} | {:.2} | {} ({:.1} %) |\n",
                r.agents,
                r.reconnected,
                r.reconnected_server,
                r.back_in_window,
                r.acked_after,
                r.back_p50_s,
                r.back_p90_s,
                r.back_p99_s,
                r.back_max_s,
                r.attempts,
                a.attempts,
                r.received_total,
                a.received,
                r.handshake,
                a.handshake,
                r.heartbeats,
                r.heartbeats_seen,
                a.heartbeats,
                r.sent_total,
                a.sent,
                r.max_per_100ms,
                r.max_share_per_100ms * 100.0,
            );
        }
        let sl = &self.slopes;
        s += &format!(
            "\nGrowth with N (log-log slope; 1 linear, 2 quadratic; bound {}): messages from agents **{}**, \
             handshake {}, connection attempts **{}**, heartbeats {}, messages to agents {}.\n\n",
            self.slope_bound,
            f2(sl.received),
            f2(sl.handshake),
            f2(sl.attempts),
            f2(sl.heartbeats),
            f2(sl.sent)
        );
        s += "Operations by verb (agents → server; server → agents):\n\n| agents | received | sent | accepted connections | /varz in_msgs / total_connections |\n|---:|---|---|---:|---|\n";
        for r in &self.rows {
            let verbs =
                |m: &BTreeMap<String, u64>| m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ");
            s += &format!(
                "| {} | {} | {} | {} | {} / {} |\n",
                r.agents,
                verbs(&r.received),
                verbs(&r.sent),
                r.connections,
                r.varz.in_msgs,
                r.varz.total_connections
            );
        }
        s += "\n| process | CPU s | max RSS MiB | starts |\n|---|---:|---:|---:|\n";
        for (name, p) in &self.processes {
            s += &format!("| {name} | {:.2} | {:.1} | {} |\n", p.cpu_s, p.max_rss_mib, p.starts);
        }
        s += &crate::run::report::footer(
            &self.faults.log,
            &self.machine,
            &self.versions,
            &["reconnects.svg", "messages.svg"],
        );
        s
    }

    /// `report.json`, `report.md` and the charts; `times` are each round's
    /// reconnect times (ms after "ready").
    pub fn save(&self, out: &Path, times: &[(usize, Vec<f64>)]) -> Result<(), BenchError> {
        let json = serde_json::to_string_pretty(self).map_err(|e| BenchError::Failed(e.to_string()))?;
        let (jp, mp) = (out.join("report.json"), out.join("report.md"));
        std::fs::write(&jp, json + "\n").map_err(|e| BenchError::io(&jp, e))?;
        std::fs::write(&mp, self.markdown()).map_err(|e| BenchError::io(&mp, e))?;
        let last_s = times.iter().flat_map(|(_, t)| t.last()).fold(0.0, |a: f64, b| a.max(*b)) / 1000.0;
        let span_s = self.plan.window.as_secs_f64().max(last_s.ceil());
        reconnects_chart(times, span_s, &out.join("reconnects.svg"))?;
        messages_chart(&self.rows, &out.join("messages.svg"))
    }

    /// The common report, for `run --all`: nothing sent or archived, the
    /// storm's figures in `extra`.
    pub fn to_report(&self) -> Report {
        let mut extra = BTreeMap::new();
        let sl = &self.slopes;
        extra.insert("slope_messages_from_agents".into(), serde_json::json!(sl.received));
        extra.insert("slope_connection_attempts".into(), serde_json::json!(sl.attempts));
        extra.insert("slope_bound".into(), serde_json::json!(self.slope_bound));
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                serde_json::json!({"agents": r.agents, "reconnected": r.reconnected_server,
                    "back_max_s": r.back_max_s, "messages_per_agent": r.per_agent.received,
                    "attempts_per_agent": r.per_agent.attempts, "max_share_per_100ms": r.max_share_per_100ms})
            })
            .collect();
        extra.insert("rounds".into(), serde_json::Value::Array(rows));
        if !self.failures.is_empty() {
            extra.insert("failures".into(), serde_json::json!(self.failures));
        }
        Report {
            scenario: self.scenario.clone(),
            quick: self.quick,
            started: self.started.clone(),
            command: self.command.clone(),
            load: Load {
                files: 0,
                rate: 0,
                duration: self.plan.window,
                capacity_lines: 0,
                baseline_lines: 0,
                faults: self.faults.injected,
            },
            events_sent: self.events_sent,
            events_archived: self.events_archived,
            lost: self.lost,
            duplicated: 0,
            verdict: Verdict::default(),
            archive_objects: 0,
            unreadable_objects: Vec::new(),
            throughput_measure: "not measured: reconnect-storm counts control messages (see extra)".into(),
            throughput_eps: 0.0,
            baseline_eps: 0.0,
            ratio: 0.0,
            latency_ms: Percentiles::default(),
            latency: Latency::default(),
            faults: self.faults.clone(),
            processes: self.processes.clone(),
            machine: self.machine.clone(),
            versions: self.versions.clone(),
            wall_s: self.wall_s,
            series: Series::default(),
            ok: self.ok,
            idle: None,
            phases: Vec::new(),
            extra,
        }
    }
}

const SIZE: (u32, u32) = (960, 720);
type Points = Vec<(f64, f64)>;
const COLORS: [RGBColor; 6] = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];

fn chart_err(path: &Path, e: impl std::fmt::Display) -> BenchError {
    BenchError::Failed(format!("{}: {e}", path.display()))
}

/// Top: share of each round's agents reconnecting per 100 ms after the
/// restart; bottom: share reconnected so far.
pub fn reconnects_chart(times: &[(usize, Vec<f64>)], span_s: f64, path: &Path) -> Result<(), BenchError> {
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let (upper, lower) = root.split_vertically(SIZE.1 / 2);
        let per_bucket: Vec<(usize, Vec<f64>)> = times
            .iter()
            .map(|(n, t)| {
                let b = buckets(t, BUCKET_MS, span_s * 1000.0);
                (*n, b.iter().map(|&c| c as f64 * 100.0 / (*n).max(1) as f64).collect())
            })
            .collect();
        let top = per_bucket.iter().flat_map(|(_, v)| v.iter().copied()).fold(1.0, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(&upper)
            .caption("agents reconnecting per 100 ms after the restart", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..span_s, 0f64..top)?;
        chart.configure_mesh().x_desc("seconds since nats-server was ready").y_desc("% of agents").draw()?;
        for (i, (n, v)) in per_bucket.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let points = v.iter().enumerate().map(|(j, p)| (j as f64 * BUCKET_MS / 1000.0, *p));
            chart
                .draw_series(LineSeries::new(points, color))?
                .label(format!("{n} agents"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        let mut chart = ChartBuilder::on(&lower)
            .caption("agents reconnected so far", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..span_s, 0f64..100.0)?;
        chart.configure_mesh().x_desc("seconds since nats-server was ready").y_desc("% of agents").draw()?;
        for (i, (n, t)) in times.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let mut points = vec![(0.0, 0.0)];
            points
                .extend(t.iter().enumerate().map(|(j, ms)| (ms / 1000.0, (j + 1) as f64 * 100.0 / (*n).max(1) as f64)));
            points.push((span_s, points.last().map(|p| p.1).unwrap_or(0.0)));
            chart
                .draw_series(LineSeries::new(points, color))?
                .label(format!("{n} agents"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| chart_err(path, e))
}

/// Messages and attempts over agents, log-log, with a linear and a
/// quadratic reference through the smallest round's messages.
pub fn messages_chart(rows: &[Row], path: &Path) -> Result<(), BenchError> {
    let series: [(&str, Points, RGBColor); 3] = [
        ("operations from agents", rows.iter().map(|r| (r.agents as f64, r.received_total as f64)).collect(), BLUE),
        (
            "handshake (CONNECT, PING, SUB, ...)",
            rows.iter().map(|r| (r.agents as f64, r.handshake as f64)).collect(),
            GREEN,
        ),
        ("connection attempts", rows.iter().map(|r| (r.agents as f64, r.attempts as f64)).collect(), RED),
    ];
    let xs = || rows.iter().map(|r| r.agents as f64);
    let (x0, x1) = (xs().fold(f64::MAX, f64::min).min(1e9), xs().fold(1.0, f64::max));
    let (x0, x1) = if x0 >= x1 { (1.0, 10.0) } else { (x0 * 0.8, x1 * 1.25) };
    let first = rows.first().map(|r| (r.agents as f64, r.received_total.max(1) as f64)).unwrap_or((1.0, 1.0));
    let reference = |power: f64| -> Points {
        let (nx, ny) = first;
        xs().map(|x| (x, ny * (x / nx).powf(power))).collect()
    };
    let (linear, quadratic) = (reference(1.0), reference(2.0));
    let ys = || {
        series.iter().flat_map(|s| s.1.iter().map(|p| p.1)).chain(quadratic.iter().map(|p| p.1)).filter(|y| *y > 0.0)
    };
    let (y0, y1) = (ys().fold(f64::MAX, f64::min).clamp(1.0, 1e12) * 0.5, ys().fold(10.0, f64::max) * 2.0);
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (960, 520)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("messages in the reconnect window over agents (log-log)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())?;
        chart.configure_mesh().x_desc("agents").y_desc("count").draw()?;
        for (label, points, color) in &series {
            let color = *color;
            let points: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.1 > 0.0).collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color))?
                .label(*label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
        }
        for (label, points, color) in
            [("linear reference", linear, BLACK.mix(0.5)), ("quadratic reference", quadratic, MAGENTA.mix(0.5))]
        {
            chart
                .draw_series(LineSeries::new(points, color))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| chart_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_even_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let times = vec![(50, vec![120.0, 480.0, 2500.0]), (100, vec![90.0, 300.0, 301.0, 5000.0])];
        reconnects_chart(&times, 12.0, &dir.path().join("r.svg")).unwrap();
        reconnects_chart(&[], 12.0, &dir.path().join("r0.svg")).unwrap();
        messages_chart(&[], &dir.path().join("m0.svg")).unwrap();
        for f in ["r.svg", "r0.svg", "m0.svg"] {
            let text = std::fs::read_to_string(dir.path().join(f)).unwrap();
            assert!(text.contains("<svg") && text.contains("</svg>"), "{f}");
        }
    }
}
