//! `flotilla-loadtest demo`: the whole pipeline on this machine.
//!
//! nats-server (JetStream) ← shipper → Parquet in `<dir>/archive`;
//! agent → proxy → nats-server; a generator writes logs for two orgs and
//! three apps. Tokens are minted fresh on every start; data, checkpoints
//! and the archive are kept, so running it again resumes where it stopped.

pub mod configs;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::procs::{ensure_free, nats_server_binary, output, sibling_binary, Proc, ProcError};
use configs::Ports;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Proc(#[from] ProcError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

pub struct DemoOptions {
    pub dir: PathBuf,
    pub ports: Ports,
    /// Lines per second written by the generator.
    pub rate: u32,
}

const AGENT_NAME: &str = "demo-agent";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Io { path: path.to_path_buf(), source }
}

/// Start the stack, print what to try, and run until `stop`.
pub async fn run(opts: DemoOptions, stop: CancellationToken) -> Result<(), DemoError> {
    let p = &opts.ports;
    for port in [p.nats, p.nats_monitor, p.proxy, p.proxy_http, p.agent_http, p.shipper_http] {
        ensure_free(port)?;
    }
    let proxy_bin = sibling_binary("flotilla-proxy")?;
    let shipper_bin = sibling_binary("flotilla-shipper")?;
    let agent_bin = sibling_binary("flotilla-agent")?;
    let nats_bin = nats_server_binary()?;

    std::fs::create_dir_all(&opts.dir).map_err(io(&opts.dir))?;
    let dir = opts.dir.canonicalize().map_err(io(&opts.dir))?;
    let (store, logs, archive, data, run_dir) =
        (dir.join("nats"), dir.join("logs"), dir.join("archive"), dir.join("agent"), dir.join("run"));
    for d in [&store, &logs, &archive, &data, &run_dir] {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }

    // Fresh tokens each start: nothing secret survives a demo run in a file.
    let tokens = run_dir.join("tokens.toml");
    let _ = std::fs::remove_file(&tokens);
    let tokens_arg = tokens.to_string_lossy().to_string();
    let mint = |role: &str, orgs: &[&str], name: &str, extra: &[&str]| -> Result<String, ProcError> {
        let mut args = vec!["token", "new", "--tokens", &tokens_arg, "--role", role, "--name", name];
        for o in orgs {
            args.extend(["--org", o]);
        }
        args.extend(extra);
        output(&proxy_bin, &args)
    };
    // The agent's token speaks for its host only (`configs::agent`'s `host`).
    let agent_secret = mint("agent", &["acme", "globex"], AGENT_NAME, &["--host", configs::AGENT_HOST])?;
    let acme_secret = mint("tenant", &["acme"], "demo-acme", &[])?;
    let globex_secret = mint("tenant", &["globex"], "demo-globex", &[])?;

    let write = |name: &str, text: String| -> Result<PathBuf, DemoError> {
        let path = run_dir.join(name);
        std::fs::write(&path, text).map_err(io(&path))?;
        Ok(path)
    };
    let proxy_cfg = write("proxy.toml", configs::proxy(p, &tokens))?;
    let shipper_cfg = write("shipper.toml", configs::shipper(p, &archive))?;
    let agent_cfg = write("agent.toml", configs::agent(p, &data, &logs, AGENT_NAME))?;

    let s = |p: &Path| p.to_string_lossy().to_string();
    let (nats_port, monitor_port) = (p.nats.to_string(), p.nats_monitor.to_string());
    let mut nats = Proc::spawn(
        "nats-server",
        &nats_bin,
        &["-js", "-a", "127.0.0.1", "-p", &nats_port, "-m", &monitor_port, "-sd", &s(&store)],
        &[],
        &run_dir,
    )?;
    nats.wait_port(p.nats, Duration::from_secs(20))?;
    let mut shipper = Proc::spawn("shipper", &shipper_bin, &["run", "-c", &s(&shipper_cfg)], &[], &run_dir)?;
    shipper.wait_port(p.shipper_http, Duration::from_secs(20))?;
    let mut proxy = Proc::spawn("proxy", &proxy_bin, &["run", "-c", &s(&proxy_cfg)], &[], &run_dir)?;
    proxy.wait_port(p.proxy, Duration::from_secs(20))?;
    let mut agent = Proc::spawn(
        "agent",
        &agent_bin,
        &["run", "-c", &s(&agent_cfg)],
        &[("FLOTILLA_AGENT_TOKEN", &agent_secret)],
        &run_dir,
    )?;
    agent.wait_port(p.agent_http, Duration::from_secs(20))?;

    let gen_stop = CancellationToken::new();
    let generator = tokio::spawn(crate::generator::run(logs.clone(), opts.rate, gen_stop.clone()));

    println!(
        r#"
Flotilla demo is running (Ctrl-C stops it).

  Live tail of org acme through the proxy (stock NATS CLI):
    nats sub -s nats://127.0.0.1:{proxy} --user acme --password {acme_secret} 'logs.>'
  ... and of org globex (sees only globex):
    nats sub -s nats://127.0.0.1:{proxy} --user globex --password {globex_secret} 'logs.web.>'

  Metrics:   proxy   http://127.0.0.1:{proxy_http}/metrics
             agent   http://127.0.0.1:{agent_http}/metrics
             shipper http://127.0.0.1:{shipper_http}/metrics
             nats    http://127.0.0.1:{monitor}/jsz
  Logs written by the generator: {logs}
  Parquet archive (Hive partitions org=/app=/date=/hour=): {archive}
    duckdb -c "SELECT org, app, level, count(*) FROM read_parquet('{archive}/**/*.parquet') GROUP BY ALL ORDER BY ALL"
  Daemon logs and configs: {run}
"#,
        proxy = p.proxy,
        proxy_http = p.proxy_http,
        agent_http = p.agent_http,
        shipper_http = p.shipper_http,
        monitor = p.nats_monitor,
        logs = logs.display(),
        archive = archive.display(),
        run = run_dir.display(),
    );

    let mut failed = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                for proc in [&mut nats, &mut shipper, &mut proxy, &mut agent] {
                    if let Err(e) = proc.check_alive() {
                        failed = Some(e);
                    }
                }
                if failed.is_some() {
                    break;
                }
            }
        }
    }
    println!("stopping: generator, agent, proxy, shipper, nats-server");
    gen_stop.cancel();
    let _ = generator.await;
    let grace = Duration::from_secs(15);
    for proc in [&mut agent, &mut proxy, &mut shipper, &mut nats] {
        proc.stop(grace);
    }
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
