//! The `runnel` process as an operator meets it: the HTTP endpoints, a port
//! already in use, and `--help`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;

use runnel_sql_tests::TestServer;

const BIN: &str = env!("CARGO_BIN_EXE_runnel");

fn http_get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to web port");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn healthz_and_overview_answer() {
    let server = TestServer::start(Path::new(BIN)).unwrap();
    let health = http_get(server.web_port, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("ok"), "{health}");
    let overview = http_get(server.web_port, "/overview");
    assert!(overview.starts_with("HTTP/1.1 200"), "{overview}");
    let body = overview.split("\r\n\r\n").nth(1).unwrap();
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["mode"], "standalone");
    assert!(json["slots_total"].as_u64().is_some());
    // jemalloc's figures and the state cache's budget.
    assert!(json["memory"]["allocated_bytes"].as_u64().unwrap() > 0);
    assert!(json["memory"]["resident_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        json["memory"]["state_cache_limit_bytes"].as_u64(),
        Some(256 << 20)
    );
}

#[test]
fn a_port_in_use_is_a_one_line_error_naming_the_option() {
    let server = TestServer::start(Path::new(BIN)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .args([
            "--pgwire-port",
            &server.pg_port.to_string(),
            "--web-port",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("runnel:"))
        .unwrap_or_default();
    assert!(line.contains(&server.pg_port.to_string()), "{stderr}");
    assert!(line.contains("--pgwire-port"), "{stderr}");
}

#[test]
fn help_lists_every_option() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for spec in runnel_server::config::KEYS {
        assert!(
            help.contains(&format!("--{}", spec.key.replace('.', "-"))),
            "{}",
            spec.key
        );
        for alias in spec.aliases {
            assert!(help.contains(alias), "{alias}");
        }
    }
    assert!(help.contains("standalone"));
}
