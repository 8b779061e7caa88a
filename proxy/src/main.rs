use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use flotilla_core::daemon;
use flotilla_proxy::auth::Role;
use flotilla_proxy::{cli, Config};

/// mimalloc: every delivery allocates its frame; glibc's malloc costs more.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "flotilla-proxy", version, about = "Authenticating, org-scoped NATS front door")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Check a config file: exit 0 when valid, else list every problem and exit 2.
    Validate {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Manage the tokens file.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Append a hashed token to FILE and print its secret, once, alone on stdout.
    New {
        #[arg(long)]
        tokens: PathBuf,
        #[arg(long, value_enum)]
        role: Role,
        #[arg(long = "org")]
        orgs: Vec<String>,
        #[arg(long)]
        name: Option<String>,
        /// Lifetime such as 30d or 12h.
        #[arg(long)]
        expires: Option<String>,
        /// Tenants only: may publish into their own org.
        #[arg(long)]
        publish: bool,
        /// Agents only: bind the token to this host (repeatable): its
        /// events' origin ids and its heartbeats must name one of them.
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Remove a token; proxies close its connections within seconds.
    Revoke {
        #[arg(long)]
        tokens: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// List tokens (names, roles, orgs, expiry; never secrets).
    List {
        #[arg(long)]
        tokens: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Command::Run { config } => daemon::run("flotilla-proxy", &config, flotilla_proxy::run),
        // The config, then the tokens file it names (as `run` reads them).
        Command::Validate { config } => {
            daemon::validate_with::<Config, _>(&config, |c| flotilla_proxy::auth::store::read(&c.tokens).map(|_| ()))
        }
        Command::Token { command: TokenCommand::New { tokens, role, orgs, name, expires, publish, hosts } } => {
            match cli::token_new_for_hosts(&tokens, role, &orgs, &hosts, name, expires.as_deref(), publish) {
                Ok(secret) => {
                    println!("{secret}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("flotilla-proxy token new: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Token { command: TokenCommand::Revoke { tokens, name } } => match cli::token_revoke(&tokens, &name) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("flotilla-proxy token revoke: {e}");
                ExitCode::from(2)
            }
        },
        Command::Token { command: TokenCommand::List { tokens } } => match cli::token_list(&tokens) {
            Ok(lines) => {
                lines.iter().for_each(|l| println!("{l}"));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("flotilla-proxy token list: {e}");
                ExitCode::from(2)
            }
        },
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Args::command(), "flotilla-proxy", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}
