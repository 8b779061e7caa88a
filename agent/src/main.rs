use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use flotilla_agent::Config;
use flotilla_core::daemon;

/// mimalloc: glibc's malloc and free were a quarter of the agent's CPU per
/// line (a few short-lived buffers per event).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "flotilla-agent", version, about = "Tails logs and publishes them to org-scoped NATS subjects")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent.
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Check a config file: exit 0 when valid, else list every problem and exit 2.
    Validate {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
}

fn main() -> ExitCode {
    match Args::parse().command {
        Command::Run { config: path } => {
            let reload_from = path.clone();
            daemon::run("flotilla-agent", &path, move |cfg: Config, signals| {
                flotilla_agent::run_with_reload(reload_from, cfg, signals)
            })
        }
        Command::Validate { config } => daemon::validate::<Config>(&config),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Args::command(), "flotilla-agent", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}
