use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use flotilla_agent::Config;
use flotilla_core::config;
use flotilla_core::shutdown::Signals;

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
            flotilla_core::logging::init();
            let cfg: Config = match config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            rt.block_on(async {
                let signals = match Signals::from_process() {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("cannot install signal handlers: {e}");
                        return ExitCode::from(1);
                    }
                };
                match flotilla_agent::run_with_reload(path.clone(), cfg, signals).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("flotilla-agent: {e}");
                        ExitCode::from(1)
                    }
                }
            })
        }
        Command::Validate { config: path } => match config::load::<Config>(&path) {
            Ok(_) => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Args::command(), "flotilla-agent", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}
