//! The `flotilla-shipper` binary: `run`, `validate`, `completions`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use flotilla_core::config::ConfigError;
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
        Command::Run { config } => run(&config),
        Command::Validate { config } => match load(&config) {
            Ok(_) => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "flotilla-shipper", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

/// Load and validate; on failure print why and return exit code 2.
fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    flotilla_core::config::load::<Config>(path).map_err(|e| {
        match &e {
            ConfigError::Invalid { .. } => eprintln!("{e}"),
            ConfigError::Read { .. } => eprintln!("error: {e}"),
        }
        ExitCode::from(2)
    })
}

fn run(path: &std::path::Path) -> ExitCode {
    flotilla_core::logging::init();
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let signals = match flotilla_core::shutdown::Signals::from_process() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        match flotilla_shipper::run(config, signals).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "shipper failed");
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
