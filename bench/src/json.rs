//! `runnel-bench json`: Nexmark as a user would compare engines — the
//! events written once as JSON-lines files (`person.json`, `auction.json`,
//! `bid.json`, `manifest.json`), each query run as a job over `filesystem`
//! sources reading them, timed by the wall clock from `CREATE` until
//! `FLUSH` returns (the bounded sources ended and every row is in), beside
//! Apache Flink 2.3 running the same SQL on the same files
//! (`../shared/bench-flink/run.sh`, when `--flink` names it).
//!
//! Each run is a child process of its own (`json-run`), so each starts
//! from a fresh heap and its peak resident memory is its own; Flink's runs
//! are measured the same way (the peak of the JVM, through `getrusage`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use datafusion::arrow::array::{ArrayRef, RecordBatch, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use runnel_connectors::{NexmarkGenerator, NexmarkTable};
use runnel_engine::runtime::connector::RowGenerator;
use runnel_server::session::Session;

use crate::{measure, queries};

/// What a job's rows go into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// `CREATE SINK … WITH (connector = 'blackhole')`, as Flink's runs.
    Blackhole,
    /// The same with `EMIT ON WINDOW CLOSE`, for queries with windows:
    /// each window's rows once, final, as Flink's window aggregations and
    /// joins give them.
    BlackholeOnClose,
    /// `CREATE MATERIALIZED VIEW`.
    View,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Blackhole => "blackhole",
            Target::BlackholeOnClose => "blackhole-eowc",
            Target::View => "view",
        }
    }
}

/// The flags of `json` and `json-run`.
#[derive(Debug, Clone)]
pub struct JsonArgs {
    /// Where the files are (written when missing or of other events).
    dir: PathBuf,
    events: u64,
    seed: u64,
    /// Event-time rate (events per second).
    rate: f64,
    queries: Vec<String>,
    runs: usize,
    parallelism: usize,
    into: Vec<Target>,
    barrier_interval_ms: u64,
    checkpoint_interval: String,
    /// Flink's harness (`run.sh`), to run beside.
    flink: Option<PathBuf>,
}

const USAGE: &str = "usage: runnel-bench json --dir DIR [--events N] [--seed S] [--rate EVENTS_PER_S] \
     [--query q0,q1,…] [--runs R] [--parallelism P] [--into blackhole,blackhole-eowc,view] \
     [--barrier-interval-ms MS] [--checkpoint-interval 10s] [--flink ../shared/bench-flink/run.sh]";

/// The queries Flink's harness knows.
const DEFAULT_QUERIES: &[&str] = &["q0", "q1", "q2", "q3", "q4", "q5", "q7", "q8"];

impl JsonArgs {
    /// Reads the flags after the mode.
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Self> {
        let mut parsed = Self {
            dir: PathBuf::new(),
            events: 10_000_000,
            seed: 0,
            rate: 10_000.0,
            queries: DEFAULT_QUERIES.iter().map(|q| q.to_string()).collect(),
            runs: 1,
            parallelism: 2,
            into: vec![Target::Blackhole, Target::View],
            barrier_interval_ms: 1000,
            checkpoint_interval: "0".into(),
            flink: None,
        };
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
            match flag.as_str() {
                "--dir" => parsed.dir = PathBuf::from(value),
                "--events" => parsed.events = value.replace('_', "").parse()?,
                "--seed" => parsed.seed = value.parse()?,
                "--rate" => parsed.rate = value.parse()?,
                "--query" => parsed.queries = value.split(',').map(str::to_string).collect(),
                "--runs" => parsed.runs = value.parse()?,
                "--parallelism" => parsed.parallelism = value.parse()?,
                "--into" => {
                    parsed.into = value
                        .split(',')
                        .map(|v| match v {
                            "blackhole" => Ok(Target::Blackhole),
                            "blackhole-eowc" => Ok(Target::BlackholeOnClose),
                            "view" => Ok(Target::View),
                            other => bail!(
                                "--into takes blackhole, blackhole-eowc and view, not {other}"
                            ),
                        })
                        .collect::<Result<_>>()?
                }
                "--barrier-interval-ms" => parsed.barrier_interval_ms = value.parse()?,
                "--checkpoint-interval" => parsed.checkpoint_interval = value,
                "--flink" => parsed.flink = Some(PathBuf::from(value)),
                other => bail!("unknown flag {other}\n{USAGE}"),
            }
        }
        if parsed.dir.as_os_str().is_empty() {
            bail!("--dir is needed\n{USAGE}");
        }
        Ok(parsed)
    }

    /// The flags that make a child run the same way.
    fn child_flags(&self, query: &str, into: Target) -> Vec<String> {
        vec![
            "--dir".into(),
            self.dir.display().to_string(),
            "--events".into(),
            self.events.to_string(),
            "--seed".into(),
            self.seed.to_string(),
            "--rate".into(),
            self.rate.to_string(),
            "--query".into(),
            query.into(),
            "--parallelism".into(),
            self.parallelism.to_string(),
            "--into".into(),
            into.name().into(),
            "--barrier-interval-ms".into(),
            self.barrier_interval_ms.to_string(),
            "--checkpoint-interval".into(),
            self.checkpoint_interval.clone(),
        ]
    }
}

/// One run's figures.
#[derive(Debug, Clone, Copy)]
struct Figures {
    seconds: f64,
    peak_bytes: u64,
    rows: u64,
}

/// `json`: writes the files if needed, then runs every query (in child
/// processes) and Flink beside, and prints one table.
pub fn run(args: &JsonArgs) -> Result<()> {
    let counts = ensure_files(args)?;
    println!(
        "Nexmark JSON files in {}: {} events (person {}, auction {}, bid {}), parallelism {}, {} cores",
        args.dir.display(),
        args.events,
        counts["person"],
        counts["auction"],
        counts["bid"],
        args.parallelism,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<4} {:<22} {:>4} {:>12} {:>9} {:>12} {:>9} {:>10}",
        "q", "engine", "run", "events", "wall s", "events/s", "peak MiB", "rows"
    );
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    for query in &args.queries {
        let (sql, tables) = queries::find(query)?;
        let events: u64 = tables.iter().map(|t| counts[queries::table_name(*t)]).sum();
        for into in &args.into {
            if *into == Target::BlackholeOnClose && !queries::has_windows(sql) {
                continue;
            }
            for run in 1..=args.runs {
                let figures = runnel_child(args, query, *into)?;
                println!(
                    "{:<4} {:<22} {:>4} {:>12} {:>9.2} {:>12.0} {:>9.1} {:>10}",
                    query,
                    format!("runnel-{}", into.name()),
                    run,
                    events,
                    figures.seconds,
                    events as f64 / figures.seconds,
                    mib(figures.peak_bytes),
                    figures.rows
                );
            }
        }
        if let Some(script) = &args.flink {
            for run in 1..=args.runs {
                match flink_run(script, args, query)? {
                    Ok(figures) => println!(
                        "{:<4} {:<22} {:>4} {:>12} {:>9.2} {:>12.0} {:>9.1} {:>10}",
                        query,
                        "flink",
                        run,
                        events,
                        figures.seconds,
                        events as f64 / figures.seconds,
                        mib(figures.peak_bytes),
                        "-"
                    ),
                    Err(line) => println!("{query:<4} {:<22} {run:>4} failed: {line}", "flink"),
                }
            }
        }
    }
    Ok(())
}

/// Starts `json-run` for one query and reads back its figures.
fn runnel_child(args: &JsonArgs, query: &str, into: Target) -> Result<Figures> {
    let output = std::process::Command::new(std::env::current_exe()?)
        .arg("json-run")
        .args(args.child_flags(query, into))
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "{query} into {} failed:\n{stdout}\n{}",
            into.name(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("JSONRUN "))
        .context("the run printed no figures")?;
    let numbers: Vec<&str> = line.split_whitespace().collect();
    let [seconds, peak, rows] = numbers[..] else {
        bail!("unexpected figures: {line}");
    };
    Ok(Figures {
        seconds: seconds.parse()?,
        peak_bytes: peak.parse()?,
        rows: rows.parse()?,
    })
}

/// One Flink run of `query` through its harness, with the peak resident
/// memory of the JVM (the largest child `getrusage` saw, in a Python
/// process of its own so each run's peak is its own). Err: the harness's
/// failure line.
fn flink_run(script: &Path, args: &JsonArgs, query: &str) -> Result<Result<Figures, String>> {
    const MEASURE: &str = "import resource, subprocess, sys\n\
        out = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n\
        sys.stdout.write(out.stdout)\n\
        sys.stderr.write(out.stderr)\n\
        print('PEAK_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n";
    let output = std::process::Command::new("python3")
        .args(["-c", MEASURE])
        .arg(script)
        .arg(&args.dir)
        .arg("1")
        .arg(query)
        .env("FLINK_ARGS", format!("--parallelism {}", args.parallelism))
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let peak_kib: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PEAK_KIB "))
        .context("no peak from the Flink run")?
        .trim()
        .parse()?;
    let Some(line) = stdout.lines().find(|l| l.starts_with("query=")) else {
        return Ok(Err(format!("no result line: {stdout}")));
    };
    if line.contains("FAILED") {
        return Ok(Err(line.to_string()));
    }
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
    };
    let seconds: f64 = field("seconds")
        .context("no seconds in Flink's line")?
        .parse()?;
    Ok(Ok(Figures {
        seconds,
        peak_bytes: peak_kib * 1024,
        rows: 0,
    }))
}

/// `json-run`: one query into one output, figures on a line for the
/// parent: wall seconds, peak bytes, result rows (views only).
pub async fn run_one(args: &JsonArgs) -> Result<()> {
    let query = args.queries.first().context("json-run needs --query")?;
    let into = *args.into.first().context("json-run needs --into")?;
    let (sql, tables) = queries::find(query)?;
    let data = tempfile::tempdir()?;
    let db = crate::embedded_database(
        data.path(),
        args.barrier_interval_ms,
        &args.checkpoint_interval,
        BTreeMap::new(),
    )
    .await?;
    let mut session = Session::new(Arc::clone(&db), "bench");
    for table in tables {
        crate::run(&mut session, &source_sql(*table, &args.dir)).await?;
    }
    crate::run(
        &mut session,
        &format!("SET parallelism = {}", args.parallelism),
    )
    .await?;
    let create = match into {
        Target::Blackhole => format!("CREATE SINK {query} AS {sql} WITH (connector = 'blackhole')"),
        Target::BlackholeOnClose => format!(
            "CREATE SINK {query} AS {sql} EMIT ON WINDOW CLOSE WITH (connector = 'blackhole')"
        ),
        Target::View => format!("CREATE MATERIALIZED VIEW {query} AS {sql}"),
    };
    measure::reset_peak_memory();
    let start = std::time::Instant::now();
    crate::run(&mut session, &create).await?;
    crate::run(&mut session, "FLUSH").await?;
    let seconds = start.elapsed().as_secs_f64();
    let peak = measure::peak_memory();
    let rows = match into {
        Target::Blackhole | Target::BlackholeOnClose => 0,
        Target::View => {
            let counted =
                crate::run(&mut session, &format!("SELECT count(*) FROM {query}")).await?;
            measure::first_count(&counted)?
        }
    };
    println!("JSONRUN {seconds} {peak} {rows}");
    std::io::stdout().flush()?;
    Ok(())
}

/// The `CREATE SOURCE` of `table` over its JSON file in `dir`.
fn source_sql(table: NexmarkTable, dir: &Path) -> String {
    let columns = queries::declared_columns(table);
    let name = queries::table_name(table);
    format!(
        "CREATE SOURCE {name} ({}, WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) \
         WITH (connector = 'filesystem', path = 'file://{}/{name}.json') FORMAT PLAIN ENCODE JSON",
        columns,
        dir.display()
    )
}

/// Writes the three files and the manifest unless `dir` holds them for
/// the same events and seed; returns the rows per table.
fn ensure_files(args: &JsonArgs) -> Result<BTreeMap<String, u64>> {
    let manifest_path = args.dir.join("manifest.json");
    let wanted = |m: &serde_json::Value| {
        m["events"].as_u64() == Some(args.events)
            && m["seed"].as_u64() == Some(args.seed)
            && m["rate"].as_f64() == Some(args.rate)
    };
    if let Ok(text) = std::fs::read_to_string(&manifest_path)
        && let Ok(manifest) = serde_json::from_str::<serde_json::Value>(&text)
        && wanted(&manifest)
    {
        return ["person", "auction", "bid"]
            .iter()
            .map(|t| {
                let rows = manifest[*t]
                    .as_u64()
                    .with_context(|| format!("manifest lacks {t}"))?;
                Ok((t.to_string(), rows))
            })
            .collect();
    }
    std::fs::create_dir_all(&args.dir)?;
    let mut counts = BTreeMap::new();
    for table in [
        NexmarkTable::Person,
        NexmarkTable::Auction,
        NexmarkTable::Bid,
    ] {
        let name = queries::table_name(table);
        let rows = write_table(table, &args.dir.join(format!("{name}.json")), args)?;
        counts.insert(name.to_string(), rows);
    }
    let manifest = serde_json::json!({
        "person": counts["person"],
        "auction": counts["auction"],
        "bid": counts["bid"],
        "events": args.events,
        "seed": args.seed,
        "rate": args.rate,
    });
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest)?)?;
    Ok(counts)
}

/// Writes `table`'s rows as JSON lines, timestamps as
/// `YYYY-MM-DD HH:MM:SS.sss` (Flink's SQL timestamp format).
fn write_table(table: NexmarkTable, file: &Path, args: &JsonArgs) -> Result<u64> {
    let mut generator = NexmarkGenerator::new(table, args.seed, Some(args.events), args.rate);
    let out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(file)?);
    // Flink's harness reads with `json.fail-on-missing-field`: nulls are
    // written, not left out.
    let mut writer = datafusion::arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, datafusion::arrow::json::writer::LineDelimited>(out);
    let mut position = 0;
    while let Some(batch) = generator.generate(position, 8192)? {
        position += batch.num_rows() as u64;
        writer.write(&with_text_times(&batch)?)?;
    }
    writer.finish()?;
    Ok(position)
}

/// `batch` with its timestamp columns as text in Flink's SQL format.
fn with_text_times(batch: &RecordBatch) -> Result<RecordBatch> {
    let mut fields = vec![];
    let mut columns: Vec<ArrayRef> = vec![];
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if let Some(times) = column.as_any().downcast_ref::<TimestampMicrosecondArray>() {
            let text: datafusion::arrow::array::StringArray = times
                .iter()
                .map(|t| {
                    t.and_then(chrono::DateTime::from_timestamp_micros)
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
                })
                .collect();
            fields.push(Field::new(field.name(), DataType::Utf8, true));
            columns.push(Arc::new(text));
        } else {
            fields.push(field.as_ref().clone());
            columns.push(Arc::clone(column));
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}
