use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use flotilla_core::daemon;
use flotilla_loadtest::bench::agent::{self, AgentBenchOptions};
use flotilla_loadtest::bench::proxy::{self as proxy_bench, ProxyBenchOptions};
use flotilla_loadtest::bench::BenchError;
use flotilla_loadtest::demo::{self, configs::Ports, DemoOptions};
use flotilla_loadtest::run::{self, scenarios, RunOptions};

#[derive(Parser)]
#[command(name = "flotilla-loadtest", version, about = "Flotilla load tests, fault injection and the local demo stack")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline locally with generated logs for two orgs.
    Demo {
        /// Where data, the archive, configs and daemon logs live.
        #[arg(long, default_value = "var/demo")]
        dir: PathBuf,
        /// Generated log lines per second.
        #[arg(long, default_value_t = 20)]
        rate: u32,
        #[arg(long, default_value_t = 4222)]
        nats_port: u16,
        #[arg(long, default_value_t = 8222)]
        nats_monitor_port: u16,
        #[arg(long, default_value_t = 4223)]
        proxy_port: u16,
        #[arg(long, default_value_t = 8080)]
        proxy_http_port: u16,
        #[arg(long, default_value_t = 9101)]
        agent_http_port: u16,
        #[arg(long, default_value_t = 9102)]
        shipper_http_port: u16,
    },
    /// Benchmarks; each starts its own nats-server on free loopback ports.
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
    /// Run a load scenario (or all of them): start nats-server, shipper and
    /// agent on free loopback ports, write the load, inject the faults, read
    /// the Parquet archive back and count loss and duplicates. Writes
    /// report.json, report.md, throughput.svg and latency.svg to --out.
    /// Uses the flotilla-agent and flotilla-shipper next to this binary.
    #[command(after_help = "Scenarios: steady, burst, slow-subscriber, agent-crash, nats-restart, shipper-crash, \
                            object-store-outage, cluster-node-loss, reconnect-storm, idle, noisy-tenant. \
                            Exit status: 0 all verified, 1 loss, duplicates or an error, 2 usage.")]
    Run {
        /// The scenario to run.
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        scenario: Option<String>,
        /// Every implemented scenario, each in <out>/<name>, and <out>/summary.md.
        #[arg(long)]
        all: bool,
        /// The short variant (what CI runs): lower rate, shorter load.
        #[arg(long)]
        quick: bool,
        /// Length of the load phase (e.g. 90s, 2m), instead of the scenario's.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<std::time::Duration>,
        /// Where the reports, charts, archive, logs and daemon logs go.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum Bench {
    /// Agent → JetStream lines/s, MB/s and CPU-seconds per GB next to a
    /// minimal async-nats publisher of the same lines, then the agent's
    /// idle CPU and memory. Uses the flotilla-agent next to this binary.
    Agent {
        /// Lines (~200-byte JSON) in the benchmark file.
        #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
        lines: u64,
        /// Publishes awaiting their ack, for the agent and the baseline.
        #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=65536))]
        in_flight: u64,
        /// Idle files tailed by the idle agent (0 skips the idle measurement).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=10_000))]
        idle_files: u64,
        /// Seconds the idle agent's CPU is measured over.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
        idle_secs: u64,
        /// Also run diagnostic publishers: the lines with a Nats-Msg-Id, and
        /// the agent's whole message format (to tell format costs from code costs).
        #[arg(long)]
        variants: bool,
        /// Everything over TLS: nats-server requires it (a private CA made
        /// for the run), the agent and the baseline trust that CA.
        #[arg(long)]
        tls: bool,
        /// Where report.json, report.md and the daemons' logs go.
        #[arg(long, default_value = "var/bench/agent")]
        out: PathBuf,
    },
    /// Tenant delivery through flotilla-proxy next to the same subscribers
    /// directly on nats-server: msgs/s (1 subscriber, fan-out over 10 orgs),
    /// added latency, RSS per idle connection. Uses the flotilla-proxy next
    /// to this binary.
    Proxy {
        /// 200-byte messages for the one-subscriber throughput run.
        #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
        messages: u64,
        /// Proxied one-subscriber runs, each between two direct runs; the
        /// median round's ratio is the result.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
        rounds: u64,
        /// Deliveries (messages × subscribers) per fan-out run.
        #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
        fanout_deliveries: u64,
        /// Also run the fan-out with this many subscriber connections (e.g. 1000).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        many: Option<u64>,
        /// Messages/s for the latency run (default: half the measured proxy peak).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        latency_rate: Option<u64>,
        /// Seconds of the latency run per path (proxy, bare hop, second
        /// direct subscriber), taken in one-second turns.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        latency_secs: u64,
        /// Idle tenant connections for the RSS measurement (0 skips it).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=10_000))]
        idle_conns: u64,
        /// Where report.json, report.md and the daemons' logs go.
        #[arg(long, default_value = "var/bench/proxy")]
        out: PathBuf,
    },
}

fn bench(bench: Bench) -> ExitCode {
    match bench {
        Bench::Agent { lines, in_flight, idle_files, idle_secs, variants, tls, out } => {
            let opts = AgentBenchOptions {
                lines,
                // Both bounded by clap above.
                in_flight: in_flight as usize,
                idle_files: idle_files as usize,
                idle_secs,
                variants,
                tls,
                out,
            };
            bench_agent(opts)
        }
        Bench::Proxy { messages, rounds, fanout_deliveries, many, latency_rate, latency_secs, idle_conns, out } => {
            let opts = ProxyBenchOptions {
                messages,
                // Bounded by clap above.
                rounds: rounds as usize,
                fanout_deliveries,
                fanout_conns: std::iter::once(100).chain(many.map(|m| m as usize)).collect(),
                latency_rate: latency_rate.unwrap_or(0),
                latency_secs,
                // Bounded by clap above.
                idle_conns: idle_conns as usize,
                out,
            };
            bench_proxy(opts)
        }
    }
}

fn bench_proxy(opts: ProxyBenchOptions) -> ExitCode {
    daemon::with_runtime("flotilla-loadtest bench proxy", |signals| async move {
        // Ctrl-C drops the run, and with it the proxy and nats-server.
        let report = tokio::select! {
            r = proxy_bench::run(&opts) => r?,
            _ = signals.shutdown.cancelled() => return Err(BenchError::Failed("interrupted".into())),
        };
        println!("\n{}", proxy_bench::markdown(&report));
        proxy_bench::save(&report, &opts.out)?;
        println!("report: {}", opts.out.join("report.md").display());
        Ok(())
    })
}

fn bench_agent(opts: AgentBenchOptions) -> ExitCode {
    daemon::with_runtime("flotilla-loadtest bench agent", |signals| async move {
        // Ctrl-C drops the run, and with it the agent and nats-server it
        // started (stopped on drop: they are in their own process group).
        let report = tokio::select! {
            r = agent::run(&opts) => r?,
            _ = signals.shutdown.cancelled() => return Err(BenchError::Failed("interrupted".into())),
        };
        println!("\n{}", agent::markdown(&report));
        agent::save(&report, &opts.out)?;
        println!("report: {}", opts.out.join("report.md").display());
        Ok(())
    })
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    flotilla_core::config::parse_duration(s).ok_or_else(|| format!("not a duration: {s:?} (e.g. 30s, 2m, 500ms)"))
}

fn run_command(
    scenario: Option<String>,
    all: bool,
    quick: bool,
    duration: Option<std::time::Duration>,
    out: PathBuf,
) -> ExitCode {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let scenario = match scenario {
        Some(name) if !all => match scenarios::find(&name) {
            Some(sc) if sc.fault.is_some() => Some(sc),
            Some(_) => {
                eprintln!("flotilla-loadtest run: scenario {name} is not yet implemented\n\n{}", scenarios::table());
                return ExitCode::from(2);
            }
            None => {
                eprintln!("flotilla-loadtest run: no scenario {name}\n\n{}", scenarios::table());
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let mut ok = false;
    let code = daemon::with_runtime("flotilla-loadtest run", |signals| {
        let ok = &mut ok;
        async move {
            match scenario {
                Some(sc) => {
                    let opts = RunOptions { scenario: sc, quick, duration, out: out.clone(), command };
                    let report = tokio::select! {
                        r = run::run_one(&opts) => r?,
                        _ = signals.shutdown.cancelled() => return Err(BenchError::Failed("interrupted".into())),
                    };
                    let md = out.join("report.md");
                    println!("{}", std::fs::read_to_string(&md).unwrap_or_else(|_| report.markdown()));
                    println!("report: {}", md.display());
                    *ok = report.ok;
                }
                None => {
                    *ok = tokio::select! {
                        r = run::run_all(&out, quick, duration, &command) => r?,
                        _ = signals.shutdown.cancelled() => return Err(BenchError::Failed("interrupted".into())),
                    };
                    println!("summary: {}", out.join("summary.md").display());
                }
            }
            Ok::<(), BenchError>(())
        }
    });
    if code == ExitCode::SUCCESS && !ok {
        return ExitCode::FAILURE;
    }
    code
}

fn main() -> ExitCode {
    match Args::parse().command {
        Command::Demo {
            dir,
            rate,
            nats_port,
            nats_monitor_port,
            proxy_port,
            proxy_http_port,
            agent_http_port,
            shipper_http_port,
        } => {
            flotilla_core::logging::init();
            let ports = Ports {
                nats: nats_port,
                nats_monitor: nats_monitor_port,
                proxy: proxy_port,
                proxy_http: proxy_http_port,
                agent_http: agent_http_port,
                shipper_http: shipper_http_port,
            };
            daemon::with_runtime("flotilla-loadtest demo", |signals| {
                demo::run(DemoOptions { dir, ports, rate }, signals.shutdown.clone())
            })
        }
        Command::Bench { bench: which } => bench(which),
        Command::Run { scenario, all, quick, duration, out } => run_command(scenario, all, quick, duration, out),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Args::command(), "flotilla-loadtest", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}
