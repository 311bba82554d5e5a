//! The Nexmark benchmark harness of Runnel.
//!
//! `runnel-bench nexmark --query q1 --events 10000000` runs each query as a
//! materialized view over `nexmark` sources in an embedded database and
//! reports events per second per core (events over the CPU seconds the
//! process spent) and peak memory; then runs the same query with
//! DataFusion as a batch over the same events (generated up front, in
//! memory) and prints the ratio. `--check` also compares the view's rows
//! with the batch query's, row for row. See `bench/README.md`.

mod checkpoint;
mod compare;
mod files;
mod json;
mod kafka;
mod measure;
mod queries;
mod report;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use report::{check_rows, print_header, print_row};
use runnel_connectors::{NexmarkGenerator, NexmarkTable};
use runnel_engine::runtime::JobState;
use runnel_engine::runtime::connector::RowGenerator;
use runnel_planner::parser::parse_commands;
use runnel_server::session::{Outcome, Session};
use runnel_server::{Config, Database};

#[derive(Clone)]
struct Args {
    /// `kafka`: the bids through a Kafka topic (see `kafka`).
    kafka: bool,
    /// Partitions of the Kafka topic.
    partitions: u32,
    /// `soak`: stream each query at `events` and at `factor` times as many,
    /// and compare peak memory; no batch run.
    soak: Option<u64>,
    /// `soak-run` (what `soak` starts per size): one query, one size,
    /// figures on one line.
    single: bool,
    queries: Vec<String>,
    events: u64,
    seed: u64,
    /// Event-time rate of the generator (events per second).
    rate: f64,
    /// Compare every row of the view with the batch query's.
    check: bool,
    /// Views of windowed queries `EMIT ON WINDOW CLOSE` (which must end
    /// equal to the batch answer as well, every window closed).
    emit_on_window_close: bool,
    /// `streaming.barrier-interval-ms` of the embedded database.
    barrier_interval_ms: u64,
    /// `storage.epoch-buffer-mb`, when not the server's default.
    epoch_buffer_mb: Option<u64>,
    /// `execution.checkpointing.interval` ("0", the default here: none).
    checkpoint_interval: String,
}

fn parse_args() -> Result<Args> {
    let mut args = std::env::args().skip(1);
    let mode = args.next();
    let single = mode.as_deref() == Some("soak-run");
    let kafka = mode.as_deref() == Some("kafka");
    let soak = match mode.as_deref() {
        Some("nexmark") | Some("soak-run") | Some("kafka") => None,
        Some("soak") => Some(10),
        _ => bail!(
            "usage: runnel-bench nexmark [--query q0,q1,…] [--events N] [--seed S] [--rate EVENTS_PER_S] [--barrier-interval-ms MS] [--epoch-buffer-mb MB] [--checkpoint-interval 1s] [--emit-on-window-close] [--check]\n       runnel-bench json --dir DIR [--events N] [--query q0,…] [--runs R] [--parallelism P] [--into blackhole,view] [--flink ../shared/bench-flink/run.sh]\n       runnel-bench kafka [--query q1,q5] [--partitions P] [--events N] [--seed S] [--rate EVENTS_PER_S] [--barrier-interval-ms MS] [--check]\n       runnel-bench soak [--query q5,q7] [--events N] [--factor F] [--barrier-interval-ms MS] [--epoch-buffer-mb MB]\n       runnel-bench checkpoint [--rows N] [--payload BYTES]"
        ),
    };
    let mut parsed = Args {
        kafka,
        partitions: 4,
        soak,
        single,
        queries: queries::ALL
            .iter()
            .map(|(name, _, _)| name.to_string())
            .collect(),
        events: 1_000_000,
        seed: 0,
        rate: 10_000.0,
        check: false,
        emit_on_window_close: false,
        barrier_interval_ms: 1000,
        epoch_buffer_mb: None,
        checkpoint_interval: "0".into(),
    };
    if parsed.soak.is_some() {
        parsed.queries = vec!["q5".into(), "q7".into()];
    }
    if parsed.kafka {
        parsed.queries = vec!["q1".into(), "q5".into()];
    }
    while let Some(flag) = args.next() {
        if flag == "--check" {
            parsed.check = true;
            continue;
        }
        if flag == "--emit-on-window-close" {
            parsed.emit_on_window_close = true;
            continue;
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--query" => parsed.queries = value.split(',').map(str::to_string).collect(),
            "--events" => parsed.events = value.replace('_', "").parse()?,
            "--seed" => parsed.seed = value.parse()?,
            "--rate" => parsed.rate = value.parse()?,
            "--barrier-interval-ms" => parsed.barrier_interval_ms = value.parse()?,
            "--epoch-buffer-mb" => parsed.epoch_buffer_mb = Some(value.parse()?),
            "--checkpoint-interval" => parsed.checkpoint_interval = value,
            "--factor" if parsed.soak.is_some() => parsed.soak = Some(value.parse()?),
            "--partitions" if parsed.kafka => parsed.partitions = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(parsed)
}

pub(crate) async fn run(
    session: &mut Session,
    sql: &str,
) -> Result<Vec<datafusion::arrow::array::RecordBatch>> {
    let mut out = vec![];
    for command in parse_commands(sql)? {
        let text = command.to_string();
        let prepared = session.prepare_command(command, &text).await?;
        let result = session
            .execute(&prepared, &datafusion::common::ParamValues::List(vec![]))
            .await?;
        if let Outcome::Rows { stream, .. } = result.outcome {
            use futures::TryStreamExt;
            out.extend(stream.try_collect::<Vec<_>>().await?);
        }
    }
    Ok(out)
}

/// The `CREATE SOURCE` statements of Nexmark sources for `tables`.
fn nexmark_sources(tables: &[NexmarkTable], args: &Args) -> Vec<String> {
    tables.iter().map(|t| source_sql(*t, args)).collect()
}

fn source_sql(table: NexmarkTable, args: &Args) -> String {
    let columns = queries::declared_columns(table);
    let name = queries::table_name(table);
    format!(
        "CREATE SOURCE {name} ({}, WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) \
         WITH (connector = 'nexmark', nexmark.table.type = '{name}', \
         nexmark.event.num = '{}', nexmark.seed = '{}', nexmark.event.rate = '{}', \
         nexmark.throttle = 'false')",
        columns, args.events, args.seed, args.rate
    )
}

/// An embedded database in `dir` as the bench runs it: writes not synced,
/// barriers `barrier_interval_ms` apart, checkpoints at
/// `checkpoint_interval` ("0": none), plus `extra` settings.
pub(crate) async fn embedded_database(
    dir: &std::path::Path,
    barrier_interval_ms: u64,
    checkpoint_interval: &str,
    mut extra: BTreeMap<&'static str, String>,
) -> Result<Arc<Database>> {
    extra.insert("data.dir", dir.display().to_string());
    extra.insert("storage.sync-writes", "false".to_string());
    extra.insert(
        "streaming.barrier-interval-ms",
        barrier_interval_ms.to_string(),
    );
    extra.insert(
        "execution.checkpointing.interval",
        checkpoint_interval.to_string(),
    );
    let db = Database::open(Config::from_values(&extra)?)?;
    runnel_server::streaming::restart_jobs(&db).await?;
    Ok(db)
}

/// Streaming: the query as a materialized view over the sources `sources`
/// create, timed from CREATE until its sources ran out and the last epoch
/// committed. With `--check`, also the view's rows (read after the timing).
async fn streaming(
    name: &str,
    sql: &str,
    sources: &[String],
    files: &files::QueryFiles,
    args: &Args,
) -> Result<(measure::Run, Vec<datafusion::arrow::array::RecordBatch>)> {
    let dir = tempfile::tempdir()?;
    let mut extra = BTreeMap::new();
    if let Some(mb) = args.epoch_buffer_mb {
        extra.insert("storage.epoch-buffer-mb", mb.to_string());
    }
    let db = embedded_database(
        dir.path(),
        args.barrier_interval_ms,
        &args.checkpoint_interval,
        extra,
    )
    .await?;
    let mut session = Session::new(Arc::clone(&db), "bench");
    for source in sources {
        run(&mut session, source).await?;
    }
    measure::reset_peak_memory();
    let start = measure::Usage::now();
    let sql = if args.emit_on_window_close && queries::has_windows(sql) && !files.writes_sink() {
        format!("{sql} EMIT ON WINDOW CLOSE")
    } else {
        sql.to_string()
    };
    run(&mut session, &files.create_sql(name, &sql)).await?;
    let id = if files.writes_sink() {
        db.catalog
            .sinks()
            .into_iter()
            .find(|s| s.name.name == name)
            .context("sink not created")?
            .id
    } else {
        db.catalog
            .views()
            .into_iter()
            .find(|v| v.name.name == name)
            .context("view not created")?
            .id
    };
    loop {
        let (_, exhausted) = db.runtime.source_progress(id);
        if exhausted {
            break;
        }
        if let Some(JobState::Failed(error)) = db.runtime.job_state(id) {
            bail!("{name} failed: {error}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run(&mut session, "FLUSH").await?;
    if files.writes_sink() {
        files::wait_delivered(&db, id, Duration::from_secs(600)).await?;
    }
    let usage = start.elapsed();
    let peak_bytes = measure::peak_memory();
    let late = db.runtime.late_rows(id);
    if late > 0 {
        eprintln!("{name}: windowed operators dropped {late} late rows");
    }
    let (count, contents) = if files.writes_sink() {
        let written = files.read_back().await?;
        let count = written.iter().map(|b| b.num_rows() as u64).sum();
        (count, if args.check { written } else { vec![] })
    } else {
        let rows = run(&mut session, &format!("SELECT count(*) FROM {name}")).await?;
        let contents = if args.check {
            run(&mut session, &format!("SELECT * FROM {name}")).await?
        } else {
            vec![]
        };
        (measure::first_count(&rows)?, contents)
    };
    let store = Some(db.store.memory_report()?);
    let data_bytes = measure::dir_bytes(dir.path());
    // Stops the job, so no source outlives the run (a Kafka consumer
    // would complain once the benchmark's broker is gone).
    run(&mut session, &files.drop_sql(name)).await?;
    drop(session);
    Ok((
        measure::Run {
            usage,
            peak_bytes,
            result_rows: count,
            data_bytes,
            store,
            input: None,
        },
        contents,
    ))
}

/// Batch: the same events in memory, the same query through DataFusion
/// (window functions rewritten by Runnel's parser, as for the view).
async fn batch(
    sql: &str,
    tables: &[NexmarkTable],
    files: &files::QueryFiles,
    args: &Args,
) -> Result<(measure::Run, Vec<datafusion::arrow::array::RecordBatch>)> {
    let ctx = SessionContext::new();
    for function in runnel_planner::windows::session::session_window_functions() {
        ctx.register_udwf(function.as_ref().clone());
    }
    let generating = measure::Usage::now();
    for table in tables {
        let mut generator = NexmarkGenerator::new(*table, args.seed, Some(args.events), args.rate);
        let mut batches = vec![];
        let mut position = 0;
        while let Some(batch) = generator.generate(position, 8192)? {
            position += batch.num_rows() as u64;
            batches.push(batch);
        }
        let provider = MemTable::try_new(table.schema(), vec![batches])?;
        ctx.register_table(queries::table_name(*table), Arc::new(provider))?;
    }
    let input = generating.elapsed();
    files.register(&ctx).await?;
    let rewritten = runnel_planner::parser::parse_sql(sql)?
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    measure::reset_peak_memory();
    let start = measure::Usage::now();
    let result = ctx.sql(&rewritten).await?.collect().await?;
    let usage = start.elapsed();
    Ok((
        measure::Run {
            usage,
            peak_bytes: measure::peak_memory(),
            result_rows: result.iter().map(|b| b.num_rows() as u64).sum(),
            data_bytes: 0,
            store: None,
            input: Some(input),
        },
        result,
    ))
}

/// One soak run, in a process of its own: what it measured.
struct SoakRun {
    peak_bytes: u64,
    data_bytes: u64,
    store: runnel_storage::MemoryReport,
}

/// Streams `name` at `events` in a child process (`soak-run`), so each size
/// starts from a fresh heap, and reads back what it measured.
fn soak_child(name: &str, events: u64, args: &Args) -> Result<SoakRun> {
    let output = std::process::Command::new(std::env::current_exe()?)
        .args(["soak-run", "--query", name])
        .args(["--events", &events.to_string()])
        .args(["--seed", &args.seed.to_string()])
        .args(["--rate", &args.rate.to_string()])
        .args([
            "--barrier-interval-ms",
            &args.barrier_interval_ms.to_string(),
        ])
        .args(
            args.epoch_buffer_mb
                .into_iter()
                .flat_map(|mb| ["--epoch-buffer-mb".to_string(), mb.to_string()]),
        )
        .args(["--checkpoint-interval", &args.checkpoint_interval])
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "soak run of {name} at {events} events failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SOAK "))
        .context("the soak run printed no figures")?;
    let numbers = line
        .split_whitespace()
        .map(str::parse::<u64>)
        .collect::<Result<Vec<_>, _>>()?;
    let [
        peak_bytes,
        data_bytes,
        state_rows,
        memtable_bytes,
        block_cache_bytes,
        table_reader_bytes,
    ] = numbers[..]
    else {
        bail!("unexpected soak figures: {line}");
    };
    Ok(SoakRun {
        peak_bytes,
        data_bytes,
        store: runnel_storage::MemoryReport {
            memtable_bytes,
            block_cache_bytes,
            table_reader_bytes,
            state_rows,
        },
    })
}

/// `soak-run`: one query at one size, figures on a line for the parent.
async fn soak_run(args: &Args) -> Result<()> {
    let name = args.queries.first().context("soak-run needs --query")?;
    let (sql, tables) = queries::find(name)?;
    let files = files::QueryFiles::for_query(name)?;
    let mut sources = nexmark_sources(tables, args);
    sources.extend(files.source_sql());
    let (run, _) = streaming(name, sql, &sources, &files, args).await?;
    let store = run.store.unwrap_or_default();
    println!(
        "SOAK {} {} {} {} {} {}",
        run.peak_bytes,
        run.data_bytes,
        store.state_rows,
        store.memtable_bytes,
        store.block_cache_bytes,
        store.table_reader_bytes
    );
    Ok(())
}

/// Streams each query at the configured events and at `factor` times as
/// many, each in a process of its own; prints both runs' peak memory and
/// state size and their ratio.
fn soak(args: &Args, factor: u64) -> Result<()> {
    println!(
        "{:<4} {:>12} {:>10} {:>10} {:>12} {:>10} {:>10} {:>10}",
        "q", "events", "peak MiB", "data MiB", "events", "peak MiB", "data MiB", "peak x"
    );
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    for name in &args.queries {
        let long_events = args.events * factor;
        let short_run = soak_child(name, args.events, args)?;
        let long_run = soak_child(name, long_events, args)?;
        println!(
            "{:<4} {:>12} {:>10.1} {:>10.1} {:>12} {:>10.1} {:>10.1} {:>10.2}",
            name,
            args.events,
            mib(short_run.peak_bytes),
            mib(short_run.data_bytes),
            long_events,
            mib(long_run.peak_bytes),
            mib(long_run.data_bytes),
            long_run.peak_bytes as f64 / short_run.peak_bytes.max(1) as f64
        );
        for (events, run) in [(args.events, &short_run), (long_events, &long_run)] {
            println!(
                "     {events:>12} events: state rows {}, memtables {:.1} MiB, block cache {:.1} MiB, table readers {:.1} MiB",
                run.store.state_rows,
                mib(run.store.memtable_bytes),
                mib(run.store.block_cache_bytes),
                mib(run.store.table_reader_bytes)
            );
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("checkpoint") {
        let args = checkpoint::CheckpointArgs::parse(std::env::args().skip(2))?;
        return tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(checkpoint::run(args));
    }
    // Logs only when asked for (`RUST_LOG=runnel_engine=debug`), on stderr.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match std::env::args().nth(1).as_deref() {
        Some("json") => return json::run(&json::JsonArgs::parse(std::env::args().skip(2))?),
        Some("json-run") => {
            let args = json::JsonArgs::parse(std::env::args().skip(2))?;
            return tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(json::run_one(&args));
        }
        _ => {}
    }
    let args = parse_args()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run_bench(args))
}

async fn run_bench(args: Args) -> Result<()> {
    if args.single {
        return soak_run(&args).await;
    }
    if let Some(factor) = args.soak {
        return soak(&args, factor);
    }
    if args.kafka {
        return kafka::run(&args).await;
    }
    println!(
        "Nexmark, {} events, seed {}, {} cores available",
        args.events,
        args.seed,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    print_header();
    for name in &args.queries {
        let (sql, tables) = queries::find(name)?;
        let files = files::QueryFiles::for_query(name)?;
        let mut sources = nexmark_sources(tables, &args);
        sources.extend(files.source_sql());
        let (stream, view_rows) = streaming(name, sql, &sources, &files, &args).await?;
        let (batch, batch_rows) = batch(sql, tables, &files, &args).await?;
        check_rows(name, &args, &stream, &view_rows, &batch, &batch_rows)?;
        print_row(name, args.events, &stream, &batch);
    }
    for (name, why) in queries::LEFT_OUT {
        println!("{name:<4} not run: {why}");
    }
    Ok(())
}
