//! `runnel-bench checkpoint`: what checkpoints cost with a large state.
//!
//! 1. In this process: a view holding `--rows` rows of `--payload` bytes
//!    (about 1 GiB by default), then a full checkpoint, one percent more
//!    rows and an incremental checkpoint, each timed with the bytes it
//!    uploaded; then a restore of the latest checkpoint into an empty
//!    directory.
//! 2. With a `runnel` child process (built next to this binary): the same
//!    state plus a source that keeps flowing, killed with SIGKILL; the time
//!    from the kill until the flowing source's view moves past what it
//!    showed before, once with the data directory kept and once with it
//!    deleted (restored from the checkpoint).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use runnel_server::session::Session;
use runnel_server::{Config, Database};
use runnel_storage::checkpoint::{CheckpointLocation, Manifest, S3Options, restore_latest};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::measure;

/// What `checkpoint` is asked to do.
pub struct CheckpointArgs {
    pub rows: u64,
    pub payload: usize,
}

impl CheckpointArgs {
    /// Parses `--rows N --payload BYTES`.
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Self> {
        let mut parsed = Self {
            rows: 8_000_000,
            payload: 120,
        };
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--rows" => parsed.rows = value.replace('_', "").parse()?,
                "--payload" => parsed.payload = value.parse()?,
                other => bail!("unknown flag {other}"),
            }
        }
        Ok(parsed)
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn big_source(name: &str, rows: u64, first_id: u64, payload: usize) -> String {
    format!(
        "CREATE SOURCE {name} (id bigint, payload varchar) WITH (connector = 'datagen', \
         rows.per.second = '100000000', number-of-rows = '{rows}', \
         fields.id.kind = 'sequence', fields.id.start = '{first_id}', \
         fields.payload.length = '{payload}');
         CREATE MATERIALIZED VIEW {name}_rows AS SELECT id, payload FROM {name};"
    )
}

/// Runs `sql` in an embedded session and waits until the view `view`'s
/// sources ran out and their rows are committed.
async fn load(db: &Arc<Database>, sql: &str, view: &str) -> Result<()> {
    let mut session = Session::new(Arc::clone(db), "bench");
    crate::run(&mut session, sql).await?;
    let id = db
        .catalog
        .views()
        .into_iter()
        .find(|v| v.name.name == view)
        .context("view not created")?
        .id;
    while !db.runtime.source_progress(id).1 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    crate::run(&mut session, "FLUSH").await?;
    Ok(())
}

/// Takes one checkpoint now and prints what it took.
async fn checkpoint_now(db: &Arc<Database>, label: &str) -> Result<Manifest> {
    let checkpointer = db.checkpointer.clone().context("checkpoints are off")?;
    let started = Instant::now();
    let snapshot = {
        let checkpointer = Arc::clone(&checkpointer);
        let store = db.store.clone();
        tokio::task::spawn_blocking(move || checkpointer.snapshot(&store, 0)).await??
    };
    let snapshot_time = started.elapsed();
    let manifest = checkpointer
        .upload(snapshot, Duration::from_secs(3600))
        .await?;
    println!(
        "{label:<12} {:>10.2} {:>12.2} {:>12.1} {:>14.1} {:>8}",
        started.elapsed().as_secs_f64(),
        snapshot_time.as_secs_f64(),
        mib(manifest.total_bytes()),
        mib(manifest.uploaded_bytes),
        manifest.files.len()
    );
    Ok(manifest)
}

async fn in_process(args: &CheckpointArgs) -> Result<()> {
    let data = tempfile::tempdir()?;
    let remote = tempfile::tempdir()?;
    let url = format!("file://{}", remote.path().display());
    let mut values = BTreeMap::new();
    values.insert("data.dir", data.path().display().to_string());
    values.insert("storage.sync-writes", "false".to_string());
    values.insert("state.checkpoints.dir", url.clone());
    // On, but never due by itself: the bench takes them.
    values.insert("execution.checkpointing.interval", "24h".to_string());
    let db = Database::open(Config::from_values(&values)?)?;
    runnel_server::streaming::restart_jobs(&db).await?;
    let started = Instant::now();
    load(
        &db,
        &big_source("big", args.rows, 1, args.payload),
        "big_rows",
    )
    .await?;
    println!(
        "loaded {} rows of {} bytes in {:.1} s; data directory {:.1} MiB",
        args.rows,
        args.payload,
        started.elapsed().as_secs_f64(),
        mib(measure::dir_bytes(data.path()))
    );
    println!(
        "{:<12} {:>10} {:>12} {:>12} {:>14} {:>8}",
        "checkpoint", "total s", "snapshot s", "size MiB", "uploaded MiB", "files"
    );
    checkpoint_now(&db, "full").await?;
    let more = (args.rows / 100).max(1);
    load(
        &db,
        &big_source("more", more, args.rows + 1, args.payload),
        "more_rows",
    )
    .await?;
    checkpoint_now(&db, "incremental").await?;
    let location = CheckpointLocation::open(&url, &S3Options::default())?;
    let target = tempfile::tempdir()?;
    let started = Instant::now();
    let manifest = restore_latest(&location, &target.path().join("store"))
        .await?
        .context("nothing to restore")?;
    println!(
        "restore of checkpoint {} ({:.1} MiB) into an empty directory: {:.2} s",
        manifest.id,
        mib(manifest.total_bytes()),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A `runnel` child process on fixed ports and a data directory.
struct Server {
    binary: PathBuf,
    args: Vec<String>,
    port: u16,
    child: Option<Child>,
}

impl Server {
    fn start(&mut self) -> Result<()> {
        let child = Command::new(&self.binary)
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn connect(&self, deadline: Instant) -> Result<Client> {
        loop {
            let conn = format!(
                "host=127.0.0.1 port={} user=runnel dbname=runnel",
                self.port
            );
            match tokio_postgres::connect(&conn, NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    return Ok(client);
                }
                Err(e) if Instant::now() > deadline => bail!("no connection: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn number(client: &Client, sql: &str) -> Result<i64> {
    for message in client.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(row) = message {
            return Ok(row.get(0).unwrap_or("0").parse()?);
        }
    }
    bail!("{sql} returned no row")
}

/// Polls `sql` until it returns more than `above`.
async fn wait_above(server: &Server, sql: &str, above: i64, deadline: Instant) -> Result<()> {
    loop {
        let client = server.connect(deadline).await?;
        loop {
            match number(&client, sql).await {
                Ok(n) if n > above => return Ok(()),
                Ok(_) => {}
                // Still starting (views restarting): ask again.
                Err(_) if client.is_closed() => break,
                Err(_) => {}
            }
            if Instant::now() > deadline {
                bail!("{sql} stayed at or below {above}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn recovery(args: &CheckpointArgs) -> Result<()> {
    let binary = std::env::current_exe()?
        .parent()
        .map(|dir| dir.join("runnel"))
        .filter(|p| p.exists())
        .context("no runnel binary next to runnel-bench: cargo build --release -p runnel-server")?;
    let data = tempfile::tempdir()?;
    let remote = tempfile::tempdir()?;
    let port = free_port()?;
    let mut server = Server {
        binary,
        args: [
            "--data-dir",
            &data.path().display().to_string(),
            "--pgwire-port",
            &port.to_string(),
            "--web-port",
            &free_port()?.to_string(),
            "--storage-sync-writes",
            "false",
            "--state-checkpoints-dir",
            &format!("file://{}", remote.path().display()),
            "--execution-checkpointing-interval",
            "1s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        port,
        child: None,
    };
    server.start()?;
    let deadline = Instant::now() + Duration::from_secs(3600);
    let client = server.connect(deadline).await?;
    client
        .batch_execute(&big_source("big", args.rows, 1, args.payload))
        .await?;
    client
        .batch_execute(
            "CREATE SOURCE ticks (id bigint) WITH (connector = 'datagen', \
             rows.per.second = '10000', fields.id.kind = 'sequence');
             CREATE MATERIALIZED VIEW tick_count AS SELECT count(*) AS n FROM ticks;",
        )
        .await?;
    wait_above(
        &server,
        "SELECT count(*) FROM big_rows",
        args.rows as i64 - 1,
        deadline,
    )
    .await?;
    // Two more checkpoints after the load, so the newest holds all of it.
    let loaded = completed_checkpoints(&client).await?;
    while completed_checkpoints(&client).await? < loaded + 2 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "{:<36} {:>12}",
        "recovery (SIGKILL → view moving)", "seconds"
    );
    for lose_data in [false, true] {
        let client = server.connect(deadline).await?;
        let before = number(&client, "SELECT n FROM tick_count").await?;
        server.kill();
        let started = Instant::now();
        if lose_data {
            std::fs::remove_dir_all(data.path().join("store"))?;
        }
        server.start()?;
        wait_above(&server, "SELECT n FROM tick_count", before, deadline).await?;
        println!(
            "{:<36} {:>12.2}",
            if lose_data {
                "data directory lost (restore)"
            } else {
                "data directory kept"
            },
            started.elapsed().as_secs_f64()
        );
        // The next round kills again only after a checkpoint of this one.
        let client = server.connect(deadline).await?;
        while completed_checkpoints(&client).await? < 1 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Completed checkpoints this server process took.
async fn completed_checkpoints(client: &Client) -> Result<usize> {
    let mut completed = 0;
    for message in client.simple_query("SHOW CHECKPOINTS").await? {
        if let SimpleQueryMessage::Row(row) = message
            && row.get(2) == Some("completed")
        {
            completed += 1;
        }
    }
    Ok(completed)
}

/// Runs both parts.
pub async fn run(args: CheckpointArgs) -> Result<()> {
    in_process(&args).await?;
    recovery(&args).await
}
