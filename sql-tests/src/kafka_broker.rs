//! A Kafka-protocol broker for tests: `tansu` (installed by
//! `scripts/test.sh` with `cargo install`), on a free loopback port with
//! its data in a temporary directory, stopped when dropped. Topics are made
//! and messages produced by `sql-tests/kafka/kafka_client.py`, which uses
//! the Python `confluent-kafka` package: a client that is not Runnel.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A running broker.
pub struct KafkaBroker {
    child: Child,
    pub port: u16,
    _data: tempfile::TempDir,
}

/// One message to produce: partition, key, value (None: a tombstone).
pub type Produced<'a> = (i32, Option<&'a str>, Option<&'a str>);

/// A message as read back: partition, key, value (None: a tombstone).
pub type Consumed = (i32, Option<String>, Option<String>);

/// An Avro message as read back: partition, key, value (None: a
/// tombstone), each record as JSON.
pub type ConsumedAvro = (i32, Option<serde_json::Value>, Option<serde_json::Value>);

/// What confluent-kafka's consumer took to read a topic.
#[derive(Debug, serde::Deserialize)]
pub struct ConsumerRun {
    pub messages: u64,
    pub bytes: u64,
    /// CPU seconds of the client's process (every thread).
    pub cpu_s: f64,
    pub wall_s: f64,
}

/// `$RUNNEL_TANSU`, else `tansu` in cargo's bin directory, else on PATH.
fn tansu_binary() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("RUNNEL_TANSU") {
        return Ok(PathBuf::from(path));
    }
    if let Ok(home) = std::env::var("CARGO_HOME")
        .or_else(|_| std::env::var("HOME").map(|h| format!("{h}/.cargo")))
    {
        let path = PathBuf::from(home).join("bin/tansu");
        if path.exists() {
            return Ok(path);
        }
    }
    Ok(PathBuf::from("tansu"))
}

/// The Python of the test virtualenv, which has `confluent-kafka`.
pub(crate) fn python() -> Result<PathBuf> {
    crate::s3_server::test_venv_bin("python")
}

/// `sql-tests/kafka/kafka_client.py`: in the checkout cargo runs from
/// (its `CARGO_MANIFEST_DIR` names this crate or a sibling), so a binary
/// built in another checkout that shares the target directory still finds
/// this checkout's script; else where this crate was built.
pub(crate) fn client_script() -> PathBuf {
    const SCRIPT: &str = "kafka/kafka_client.py";
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(SCRIPT);
    let Some(running) = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from) else {
        return built;
    };
    [
        running.join(SCRIPT),
        running.join("../sql-tests").join(SCRIPT),
    ]
    .into_iter()
    .find(|path| path.is_file())
    .unwrap_or(built)
}

/// Runs tansu on `port` with its storage (and log) in `dir`.
fn spawn_tansu(port: u16, dir: &std::path::Path) -> Result<Child> {
    let url = format!("tcp://127.0.0.1:{port}");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("tansu.log"))?;
    Command::new(tansu_binary()?)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            // tansu takes the database path relative to its directory.
            "--storage-engine",
            "sqlite://tansu.db",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting tansu (cargo install tansu --features dynostore,libsql)")
}

impl KafkaBroker {
    /// Starts a broker and waits until it takes connections.
    pub fn start() -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let data = tempfile::tempdir()?;
        let child = spawn_tansu(port, data.path())?;
        let mut broker = Self {
            child,
            port,
            _data: data,
        };
        broker.wait_listening()?;
        Ok(broker)
    }

    /// Stops the broker (SIGKILL); [`KafkaBroker::restart`] brings it back
    /// with what it stored.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the broker again on the same port and storage.
    pub fn restart(&mut self) -> Result<()> {
        self.child = spawn_tansu(self.port, self._data.path())?;
        self.wait_listening()
    }

    fn wait_listening(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.try_wait()? {
                bail!("tansu exited during start-up: {status}: {}", self.log());
            }
            if Instant::now() > deadline {
                bail!("tansu did not listen on port {} within 60 s", self.port);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// `properties.bootstrap.server` for this broker.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What the broker logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._data.path().join("tansu.log")).unwrap_or_default()
    }

    /// Makes `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        self.client(&["create-topic", topic, &partitions.to_string()], "")
            .map(|_| ())
    }

    /// Produces `messages` to `topic`, each to its partition, and waits
    /// until the broker has them all.
    pub fn produce(&self, topic: &str, messages: &[Produced<'_>]) -> Result<()> {
        let mut input = String::new();
        for (partition, key, value) in messages {
            input.push_str(&serde_json::to_string(&(partition, key, value))?);
            input.push('\n');
        }
        self.client(&["produce", topic], &input).map(|_| ())
    }

    /// Produces `records` (partition, record) to `topic` encoded in Avro by
    /// fastavro with `schema`: bare bodies without `registry_id`, else in
    /// the schema registry's wire format with that schema id. A record that
    /// is a JSON string is sent as its text (a value that is not Avro).
    pub fn produce_avro(
        &self,
        topic: &str,
        schema: &serde_json::Value,
        registry_id: Option<u32>,
        records: &[(i32, serde_json::Value)],
    ) -> Result<()> {
        let mut input = String::new();
        for record in records {
            input.push_str(&serde_json::to_string(record)?);
            input.push('\n');
        }
        let id = registry_id.map_or("-1".to_string(), |id| id.to_string());
        self.client(&["produce-avro", topic, &schema.to_string(), &id], &input)
            .map(|_| ())
    }

    /// Every message of `topic`, each partition from its start to its end,
    /// as a read_committed consumer sees them: (partition, key, value).
    pub fn consume(&self, topic: &str) -> Result<Vec<Consumed>> {
        let output = self.client(&["consume", topic], "")?;
        output
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| serde_json::from_str(line).with_context(|| format!("consumed line {line}")))
            .collect()
    }

    /// Every message of `topic` like [`KafkaBroker::consume`], keys and
    /// values decoded by fastavro from the registry's wire format with the
    /// schemas of the registry at `registry_url`.
    pub fn consume_avro(&self, topic: &str, registry_url: &str) -> Result<Vec<ConsumedAvro>> {
        let output = self.client(&["consume-avro", topic, registry_url], "")?;
        output
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| serde_json::from_str(line).with_context(|| format!("consumed line {line}")))
            .collect()
    }

    /// Reads every message of `topic` with confluent-kafka's consumer as
    /// fast as it goes (the benchmark's baseline) and returns what it took.
    pub fn time_reading(&self, topic: &str) -> Result<ConsumerRun> {
        let out = self.client(&["count", topic], "")?;
        serde_json::from_str(out.trim()).with_context(|| format!("figures of count: {out}"))
    }

    fn client(&self, args: &[&str], input: &str) -> Result<String> {
        let mut child = Command::new(python()?)
            .arg(client_script())
            .arg(self.bootstrap())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running kafka_client.py")?;
        child
            .stdin
            .take()
            .context("kafka_client.py stdin")?
            .write_all(input.as_bytes())?;
        let output = child.wait_with_output()?;
        if !output.status.success() {
            bail!(
                "kafka_client.py {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
