//! The `flotilla-shipper` binary: `run`, `validate`, `completions`.

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
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "flotilla-shipper", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}
