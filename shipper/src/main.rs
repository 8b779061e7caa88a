//! The `flotilla-shipper` binary: `run`, `validate`, `replay`, `audit`, `completions`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use flotilla_core::daemon;
use flotilla_shipper::Config;

#[derive(Parser)]
#[command(name = "flotilla-shipper", version, about = "JetStream streams to Parquet on object storage")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the shipper until SIGTERM, then drain.
    Run {
        /// Config file (TOML).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Check a config file: "ok", or every problem with its key path (exit 2).
    Validate {
        /// Config file (TOML).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Publish archived events of one org in a time range onto NATS again.
    Replay {
        /// The archive: file:///path or s3://bucket/prefix (credentials from the AWS environment).
        #[arg(long)]
        from: String,
        #[arg(long)]
        org: String,
        /// RFC 3339, inclusive.
        #[arg(long)]
        since: chrono::DateTime<chrono::Utc>,
        /// RFC 3339, exclusive.
        #[arg(long)]
        until: chrono::DateTime<chrono::Utc>,
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        to: String,
        /// Prepended to `logs.<org>...`; "" publishes onto the live subjects.
        #[arg(long, default_value = "replay.")]
        subject_prefix: String,
    },
    /// Print the events agents reported that a sink never settled (the
    /// completeness ledger, as the running shipper stored it): exit 0 when
    /// nothing is missing, 1 when something is, 2 on error.
    Audit {
        /// Config file (TOML).
        #[arg(short, long)]
        config: PathBuf,
        /// Only this sink.
        #[arg(long)]
        sink: Option<String>,
        /// One JSON object per stream (every tracked stream, missing or not).
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run { config } => {
            let reload_from = config.clone();
            daemon::run("flotilla-shipper", &config, move |cfg, signals| {
                flotilla_shipper::run_with_reload(reload_from, cfg, signals)
            })
        }
        Command::Validate { config } => daemon::validate::<Config>(&config),
        Command::Replay { from, org, since, until, to, subject_prefix } => {
            let opts = flotilla_shipper::replay::ReplayOptions {
                from,
                storage: Default::default(),
                org,
                since,
                until,
                to,
                subject_prefix,
            };
            daemon::with_runtime("flotilla-shipper replay", |_| async move {
                let n = flotilla_shipper::replay::replay(&opts).await?;
                println!("replayed {n} events");
                Ok::<(), flotilla_shipper::replay::ReplayError>(())
            })
        }
        Command::Audit { config, sink, json } => audit(&config, sink.as_deref(), json),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "flotilla-shipper", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

/// `audit`: 0 nothing missing, 1 something missing, 2 could not tell.
fn audit(path: &std::path::Path, sink: Option<&str>, json: bool) -> ExitCode {
    let config = match flotilla_core::config::load::<Config>(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    daemon::install_crypto_provider();
    let lines = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(flotilla_shipper::ledger::audit::audit(&config, sink)),
        Err(e) => {
            eprintln!("flotilla-shipper audit: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let lines = match lines {
        Ok(l) => l,
        Err(e) => {
            eprintln!("flotilla-shipper audit: {e}");
            return ExitCode::from(2);
        }
    };
    if json {
        for l in &lines {
            println!("{}", serde_json::to_string(l).unwrap_or_default());
        }
    } else {
        print!("{}", flotilla_shipper::ledger::audit::table(&lines));
    }
    if lines.iter().any(|l| l.missing > 0) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
