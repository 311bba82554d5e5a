//! The benchmark keeps running, and on small inputs its streaming and batch
//! runs agree: every Nexmark query's view holds exactly the rows of
//! DataFusion's batch answer over the same events (`--check`; the harness
//! exits non-zero when they differ). No timing is asserted.

use std::process::Command;

/// Runs `runnel-bench` with `args`; fails unless it succeeds and prints a
/// line starting with each of `lines`.
fn bench_prints(args: &[&str], lines: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_runnel-bench"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("runnel-bench starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "runnel-bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in lines {
        assert!(
            stdout.lines().any(|l| l.starts_with(line)),
            "{line} missing from:\n{stdout}"
        );
    }
}

#[test]
fn nexmark_queries_run_and_agree_with_batch() {
    bench_prints(
        &["nexmark", "--events", "20000", "--rate", "500", "--check"],
        &[
            "q0", "q1", "q2", "q3", "q4", "q5", "q7", "q8", "q9", "q10", "q11", "q13", "q14",
            "q15", "q16", "q17", "q18", "q19", "q20", "q21", "q22",
        ],
    );
}

/// The windowed queries again emitting on window close (q5's HOP counted
/// per slice and merged): once the sources end every window is closed and
/// each view must equal the batch answer.
#[test]
fn windowed_queries_emitting_on_close_agree_with_batch() {
    bench_prints(
        &[
            "nexmark",
            "--events",
            "20000",
            "--rate",
            "500",
            "--query",
            "q5,q7,q8",
            "--emit-on-window-close",
            "--check",
        ],
        &["q5", "q7", "q8"],
    );
}

/// The same through a Kafka topic on a real broker (tansu, as the test
/// command installs it): Nexmark q1 and q5 over bids read from four
/// partitions equal the batch answer, and the count view saw every
/// message.
#[test]
fn nexmark_over_kafka_agrees_with_batch() {
    bench_prints(
        &["kafka", "--events", "20000", "--rate", "500", "--check"],
        &["librdkafka", "Runnel Kafka source", "q1 ", "q5 "],
    );
}
