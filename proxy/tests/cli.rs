//! The proxy binary: `token new` prints the secret alone and stores only its
//! hash; `validate` reports every problem and exits 2.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_flotilla-proxy");

#[test]
fn token_new_prints_the_secret_alone_and_stores_a_hash() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    let out = Command::new(BIN)
        .args(["token", "new", "--tokens"])
        .arg(&tokens)
        .args(["--role", "tenant", "--org", "acme", "--expires", "30d"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let secret = stdout.trim_end_matches('\n');
    assert_eq!(stdout.lines().count(), 1);
    assert!(secret.starts_with("flt_") && secret.len() > 40, "{secret}");
    let stored = std::fs::read_to_string(&tokens).unwrap();
    assert!(!stored.contains(secret), "the secret is not stored");
    assert!(stored.contains("sha256:") && stored.contains("expires"));

    let list = Command::new(BIN).args(["token", "list", "--tokens"]).arg(&tokens).output().unwrap();
    let listed = String::from_utf8(list.stdout).unwrap();
    assert!(listed.contains("tenant") && listed.contains("acme") && !listed.contains("sha256"), "{listed}");

    // A tenant needs exactly one org.
    let bad =
        Command::new(BIN).args(["token", "new", "--tokens"]).arg(&tokens).args(["--role", "tenant"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let bad = Command::new(BIN)
        .args(["token", "new", "--tokens"])
        .arg(&tokens)
        .args(["--role", "agent", "--org", "Not-Valid"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));

    // An agent bound to its hosts; --host is for agents, and a host name.
    let new = |args: &[&str]| Command::new(BIN).args(["token", "new", "--tokens"]).arg(&tokens).args(args).output();
    let bound =
        new(&["--role", "agent", "--org", "acme", "--name", "h1-agent", "--host", "h1", "--host", "Web2.example.com"])
            .unwrap();
    assert!(bound.status.success(), "{}", String::from_utf8_lossy(&bound.stderr));
    let list = Command::new(BIN).args(["token", "list", "--tokens"]).arg(&tokens).output().unwrap();
    let listed = String::from_utf8(list.stdout).unwrap();
    assert!(
        listed.lines().any(|l| l.starts_with("h1-agent\tagent\t") && l.ends_with("\thosts h1,Web2.example.com")),
        "{listed}"
    );
    for args in [
        &["--role", "tenant", "--org", "acme", "--host", "h1"][..],
        &["--role", "agent", "--org", "acme", "--host", "a/b"],
    ] {
        assert_eq!(new(args).unwrap().status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn validate_reports_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, "listen = \"x\"\ntokens = \"t\"\nmax_payload = 0\n[upstream]\nurl = \"http://nope\"\n")
        .unwrap();
    let out = Command::new(BIN).args(["validate", "-c"]).arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for key in ["listen: ", "upstream.url: ", "max_payload: "] {
        assert!(stderr.contains(key), "{key} missing in {stderr}");
    }
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &path,
        format!("listen = \"127.0.0.1:4223\"\ntokens = {tokens:?}\n[upstream]\nurl = \"nats://127.0.0.1:4222\"\n"),
    )
    .unwrap();
    let validate = || Command::new(BIN).args(["validate", "-c"]).arg(&path).output().unwrap();
    // The tokens file is read too, as `run` reads it.
    let out = validate();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read tokens file"));
    std::fs::write(&tokens, "[[tokens]]\nname = \"t\"\nrole = \"admin\"\n").unwrap();
    let out = validate();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tokens.toml is not valid: line 1, column 1: missing field `hash`"), "{stderr}");
    std::fs::write(&tokens, "").unwrap();
    assert!(validate().status.success());
}
