//! The agent binary's operator interface, and its promise to stay lean.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_flotilla-agent");

#[test]
fn validate_lists_every_problem_with_its_key_path_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        "data_dir = \"/tmp/x\"\nhttp_addr = \"nowhere\"\n[nats]\nurl = \"localhost\"\npassword = \"${FLOTILLA_TEST_SURELY_UNSET}\"\n",
    )
    .unwrap();
    let out = Command::new(BIN).args(["validate", "-c"]).arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("FLOTILLA_TEST_SURELY_UNSET is not set"), "{stderr}");

    std::fs::write(&path, "data_dir = \"/tmp/x\"\nhttp_addr = \"nowhere\"\n[nats]\nurl = \"localhost\"\n").unwrap();
    let out = Command::new(BIN).args(["validate", "-c"]).arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for key in ["http_addr: ", "nats.url: ", "sources: "] {
        assert!(stderr.contains(key), "{key} missing in {stderr}");
    }

    let out = Command::new(BIN).args(["run", "-c", "/nonexistent/agent.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config /nonexistent/agent.toml"));
}

#[test]
fn the_agent_does_not_link_arrow_parquet_or_object_store() {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-p", "flotilla-agent", "-e", "normal", "--prefix", "none"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.contains("async-nats"), "the tree was read");
    for heavy in ["arrow", "parquet", "object_store"] {
        assert!(!tree.lines().any(|l| l.starts_with(heavy)), "{heavy} in the agent's dependencies");
    }
}
