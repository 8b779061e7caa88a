use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use flotilla_core::shutdown::Signals;
use flotilla_loadtest::demo::{self, configs::Ports, DemoOptions};

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
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
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
                match demo::run(DemoOptions { dir, ports, rate }, signals.shutdown.clone()).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("flotilla-loadtest demo: {e}");
                        ExitCode::from(1)
                    }
                }
            })
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Args::command(), "flotilla-loadtest", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}
