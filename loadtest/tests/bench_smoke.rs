//! `flotilla-loadtest bench agent --tls` runs end to end on a small file:
//! nats-server requiring TLS with a CA made for the run, the agent and the
//! baseline trusting it, every line stored (the bench checks the stream),
//! and a report that says it was over TLS.

use std::path::Path;
use std::process::Command;

use flotilla_testsupport::repo_root;

const BIN: &str = env!("CARGO_BIN_EXE_flotilla-loadtest");

#[test]
fn bench_agent_over_tls_stores_every_line_and_says_so() {
    let agent = Path::new(BIN).parent().unwrap().join("flotilla-agent");
    assert!(agent.is_file(), "flotilla-agent not built next to flotilla-loadtest: run `cargo test --workspace`");
    let out = tempfile::tempdir().unwrap();
    let path = std::env::join_paths(
        std::iter::once(repo_root().join(".venv/bin")).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let run = Command::new(BIN)
        .args(["bench", "agent", "--lines", "3000", "--in-flight", "64", "--idle-files", "0", "--tls", "--out"])
        .arg(out.path())
        .env("PATH", path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "bench agent --tls failed:\n{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["tls"], true);
    assert_eq!(report["file"]["lines"], 3000);
    assert!(report["agent"]["lines_per_sec"].as_f64().is_some_and(|r| r > 0.0), "{}", report["agent"]);
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(md.contains("over TLS"), "{md}");
}
