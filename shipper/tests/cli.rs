//! The binary's operator interface: `validate` and `completions`.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_flotilla-shipper");

fn write(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("shipper.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn validate_lists_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(
        &dir,
        "http_addr = \"nowhere\"\n[nats]\nurl = \"nats://127.0.0.1:4222\"\n[[sinks]]\nname = \"archive\"\ntype = \"carrier-pigeon\"\nurl = \"ftp://bucket/logs\"\n",
    );
    let out = Command::new(BIN).args(["validate", "-c"]).arg(&path).output().expect("run flotilla-shipper");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for path in ["http_addr", "sinks[0].type", "sinks[0].url"] {
        assert!(stderr.contains(&format!("{path}: ")), "missing {path} in:\n{stderr}");
    }
    assert!(stderr.contains("unknown sink type"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn validate_accepts_a_good_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(
        &dir,
        "[nats]\nurl = \"nats://127.0.0.1:4222\"\n[[sinks]]\nname = \"archive\"\ntype = \"parquet\"\nurl = \"file:///var/lib/flotilla/archive\"\n",
    );
    let out = Command::new(BIN).args(["validate", "-c"]).arg(&path).output().expect("run flotilla-shipper");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
}

#[test]
fn missing_config_file_exits_2() {
    let out = Command::new(BIN).args(["validate", "-c", "/nonexistent/shipper.toml"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn prints_completions() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN).args(["completions", shell]).output().expect("run");
        assert!(out.status.success(), "{shell}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("validate"), "{shell}");
    }
}
