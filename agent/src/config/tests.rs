use super::*;

fn parse(text: &str) -> Result<Config, Vec<flotilla_core::config::Problem>> {
    flotilla_core::config::parse(text, |_| Some("s".into()))
}

#[test]
fn a_config_with_every_source_type_parses() {
    let text = r#"
        host = "h1"
        data_dir = "/tmp/x"
        [nats]
        url = "nats://127.0.0.1:4223"
        user = "agent"
        password = "${TOKEN}"
        [[sources]]
        type = "file"
        include = ["/var/log/apps/{org}/{app}/*.log"]
        codec = "json"
        multiline = { start_pattern = "^\\d{4}-", timeout = "500ms" }
        rate_limit = { events_per_sec = 100 }
        [[sources]]
        type = "docker"
        org = "acme"
        app = "containers"
        [[sources]]
        type = "syslog"
        udp = "127.0.0.1:5514"
        tcp = "127.0.0.1:5514"
        org = "acme"
        queue = { max_bytes = 10485760, when_full = "drop_newest" }
        [[sources]]
        type = "journald"
        org = "acme"
        [[sources]]
        type = "stdin"
        name = "pipe"
        org = "acme"
        app = "batch"
        codec = "logfmt"
    "#;
    let cfg = parse(text).unwrap();
    assert_eq!(cfg.nats.password.as_deref(), Some("s"));
    assert_eq!(cfg.sources.len(), 5);
    let names: Vec<String> = cfg.sources.iter().enumerate().map(|(i, s)| s.name(i)).collect();
    assert_eq!(names, ["file-0", "docker-1", "syslog-2", "journald-3", "pipe"]);
    match &cfg.sources[2] {
        SourceConfig::Syslog(s) => assert_eq!(s.queue.when_full, WhenFull::DropNewest),
        other => panic!("{other:?}"),
    }
    match &cfg.sources[1] {
        SourceConfig::Docker(d) => assert_eq!(d.includes(true), ["/var/lib/docker/containers/*/*-json.log"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let text = r#"
        data_dir = "/tmp/x"
        http_addr = "nowhere"
        [nats]
        url = "127.0.0.1:4222"
        user = "agent"
        [[sources]]
        type = "file"
        include = ["/var/log/{app}/*.log"]
        org = "Not An Org"
        poll_interval = "often"
        multiline = { start_pattern = "([", indented = false }
        [[sources]]
        type = "file"
        name = "file-0"
        include = []
        rate_limit = { events_per_sec = 0 }
        [[sources]]
        type = "syslog"
        org = "acme"
        queue = { max_bytes = 10 }
    "#;
    let err = parse(text).err().unwrap();
    let paths: Vec<_> = err.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "http_addr",
            "nats.url",
            "nats",
            "sources[0].org",
            "sources[0].poll_interval",
            "sources[0].multiline.start_pattern",
            "sources[1].name",
            "sources[1].rate_limit.events_per_sec",
            "sources[1].include",
            "sources[2]",
            "sources[2].queue.max_bytes",
        ],
        "{err:#?}"
    );
}

#[test]
fn unknown_source_types_and_keys_are_errors() {
    let base = "data_dir = \"/x\"\n[nats]\nurl = \"nats://a:1\"\n[[sources]]\n";
    let err = parse(&format!("{base}type = \"carrier-pigeon\"\n")).err().unwrap();
    assert!(err[0].message.contains("carrier-pigeon"), "{err:?}");
    let err = parse(&format!("{base}type = \"file\"\ninclude = [\"/a/{{org}}/{{app}}\"]\nbogus = 1\n")).err().unwrap();
    assert!(err[0].message.contains("bogus"), "{err:?}");
}
