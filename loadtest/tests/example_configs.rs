//! The example configs in `configs/` are valid for the daemons they belong to.

use flotilla_testsupport::repo_root;

fn load<T: serde::de::DeserializeOwned + flotilla_core::config::Validate>(name: &str) -> T {
    let text = std::fs::read_to_string(repo_root().join("configs").join(name)).unwrap();
    match flotilla_core::config::parse(&text, |_| Some("from-the-environment".into())) {
        Ok(c) => c,
        Err(problems) => panic!("configs/{name}: {problems:?}"),
    }
}

#[test]
fn example_configs_validate() {
    let agent: flotilla_agent::Config = load("agent.toml");
    assert_eq!(agent.sources.len(), 5);
    assert_eq!(agent.nats.password.as_deref(), Some("from-the-environment"));
    let _: flotilla_proxy::Config = load("proxy.toml");
    let shipper: flotilla_shipper::Config = load("shipper.toml");
    assert_eq!(shipper.sinks[0].name, "archive");
}
