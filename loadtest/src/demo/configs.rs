//! The demo stack's config files.

use std::path::Path;

pub struct Ports {
    pub nats: u16,
    pub nats_monitor: u16,
    pub proxy: u16,
    pub proxy_http: u16,
    pub agent_http: u16,
    pub shipper_http: u16,
}

pub fn proxy(ports: &Ports, tokens: &Path) -> String {
    format!(
        "listen = \"127.0.0.1:{}\"\nhttp_addr = \"127.0.0.1:{}\"\ntokens = \"{}\"\n\n[upstream]\nurl = \"nats://127.0.0.1:{}\"\n",
        ports.proxy,
        ports.proxy_http,
        tokens.display(),
        ports.nats
    )
}

pub fn shipper(ports: &Ports, archive: &Path) -> String {
    format!(
        "http_addr = \"127.0.0.1:{}\"\n\n[nats]\nurl = \"nats://127.0.0.1:{}\"\n\n[[sinks]]\nname = \"archive\"\ntype = \"parquet\"\nurl = \"file://{}\"\nsubjects = [\"logs.>\"]\nbatch_max_age = \"5s\"\nroll_max_age = \"10s\"\n",
        ports.shipper_http,
        ports.nats,
        archive.display()
    )
}

/// The demo agent's `host` (its token is bound to it).
pub const AGENT_HOST: &str = "demo-host";

/// The agent's secret stays out of the file: `${FLOTILLA_AGENT_TOKEN}`.
pub fn agent(ports: &Ports, data: &Path, logs: &Path, agent_name: &str) -> String {
    format!(
        "host = \"{AGENT_HOST}\"\nregion = \"local\"\ndata_dir = \"{}\"\nhttp_addr = \"127.0.0.1:{}\"\n\n[nats]\nurl = \"nats://127.0.0.1:{}\"\nuser = \"{agent_name}\"\npassword = \"${{FLOTILLA_AGENT_TOKEN}}\"\n\n[[sources]]\ntype = \"file\"\ninclude = [\"{}/{{org}}/{{app}}/*.log\"]\ncodec = \"json\"\n",
        data.display(),
        ports.agent_http,
        ports.proxy,
        logs.display()
    )
}
