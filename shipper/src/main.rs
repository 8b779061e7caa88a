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
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run { config } => daemon::run("flotilla-shipper", &config, flotilla_shipper::run),
        Command::Validate { config } => daemon::validate::<Config>(&config),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "flotilla-shipper", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}
