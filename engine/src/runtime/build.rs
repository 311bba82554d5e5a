//! Turning a [`StreamGraph`] into running tasks: channels per subtask,
//! operators per subtask, sources and dispatchers wired between them.

use std::collections::HashMap;
use std::sync::Arc;

use runnel_storage::{StateTable, Store};
use tokio::sync::{mpsc, watch};

use super::JobSpec;
use std::sync::atomic::{AtomicU64, Ordering};

use super::connector::{
    ConnectorFactory, ConnectorSource, SourceShare, reader_group, stored_reader_position,
};
use super::exchange::{
    Dispatcher, ExchangeTargets, InputReceiver, InputSender, channel, subtask_of,
};
use super::logs::LogRegistry;
use super::manager::{JobStates, Report, RunningJob};
use super::metrics::JobMetrics;
use super::sink::Delivery;
use super::source::{LogSource, start_backfill, stored_position};
use super::split_watermarks::{SPLIT_WATERMARKS, SplitWatermarks};
use super::task::Task;
use crate::graph::{Distribution, FragmentInput, OperatorSpec, SourceSpec};
use crate::operator::StreamOperator;
use crate::operators::{
    BlackholeOperator, FilterOperator, HashAggOperator, HashJoinOperator, MaterializeOperator,
    ProjectOperator, SessionAggOperator, SessionSetup, SinkOperator, TopNOperator, TopNWindowSetup,
    UnionOperator, UnnestOperator, UpsertOperator, WatermarkOperator, WindowSetup,
};
use crate::{EngineError, EngineResult, Epoch};

/// Input indices of one fragment's subtasks: index → port, and
/// (port, upstream subtask) → index.
struct Inputs {
    ports: Vec<usize>,
    index: HashMap<(usize, usize), usize>,
}

/// One connector source's progress, shared between its task and the
/// runtime's reports.
#[derive(Clone)]
pub(crate) struct SourceCounters {
    /// Rows emitted so far.
    pub rows: Arc<AtomicU64>,
    /// Whether the source ends by itself ([`super::connector::SourceReader::bounded`]).
    pub bounded: bool,
    /// Whether its reader returned its last row (the end-of-input
    /// watermarks went out after it).
    pub reached_end: Arc<std::sync::atomic::AtomicBool>,
    /// The epoch of the first barrier that passed the source after its
    /// last row (its final position sealed in that epoch); 0 while it has
    /// not ended.
    pub ended_at: Arc<AtomicU64>,
}

impl SourceCounters {
    fn ended_at(&self) -> Option<u64> {
        Some(self.ended_at.load(Ordering::Relaxed)).filter(|epoch| *epoch > 0)
    }
}

/// One job's sources, for progress reports.
#[derive(Default)]
struct JobSources {
    connectors: Vec<SourceCounters>,
    /// Whether the job also reads change logs (tables, views), which never
    /// end.
    reads_logs: bool,
}

/// Rows emitted by each job's connector sources and whether they ended,
/// for progress reports, FLUSH and SHOW JOBS.
#[derive(Default)]
pub(crate) struct SourceProgress {
    jobs: std::sync::Mutex<HashMap<u64, JobSources>>,
}

impl SourceProgress {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, JobSources>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, job: u64, bounded: bool) -> SourceCounters {
        let counters = SourceCounters {
            rows: Arc::new(AtomicU64::new(0)),
            bounded,
            reached_end: Arc::default(),
            ended_at: Arc::new(AtomicU64::new(0)),
        };
        self.lock()
            .entry(job)
            .or_default()
            .connectors
            .push(counters.clone());
        counters
    }

    fn set_reads_logs(&self, job: u64) {
        self.lock().entry(job).or_default().reads_logs = true;
    }

    /// Forgets a dropped job's sources.
    pub(crate) fn remove(&self, job: u64) {
        self.lock().remove(&job);
    }

    /// Rows emitted by job `job`'s connector sources, and whether all of
    /// them ended.
    pub(crate) fn get(&self, job: u64) -> (u64, bool) {
        match self.lock().get(&job) {
            None => (0, false),
            Some(sources) => (
                sources
                    .connectors
                    .iter()
                    .map(|c| c.rows.load(Ordering::Relaxed))
                    .sum(),
                sources.connectors.iter().all(|c| c.ended_at().is_some()),
            ),
        }
    }

    /// The jobs with a bounded source that has not read its last row yet.
    pub(crate) fn unended_bounded(&self) -> Vec<u64> {
        self.lock()
            .iter()
            .filter(|(_, sources)| {
                sources
                    .connectors
                    .iter()
                    .any(|c| c.bounded && !c.reached_end.load(Ordering::Relaxed))
            })
            .map(|(job, _)| *job)
            .collect()
    }

    /// Whether job `job` is finished: it reads only connector sources,
    /// every one of them ended, and the epochs that sealed their ends are
    /// committed (at or before `committed`), so its results are final.
    pub(crate) fn finished(&self, job: u64, committed: u64) -> bool {
        self.lock().get(&job).is_some_and(|sources| {
            !sources.reads_logs
                && !sources.connectors.is_empty()
                && sources
                    .connectors
                    .iter()
                    .all(|c| c.ended_at().is_some_and(|at| at <= committed))
        })
    }
}

/// What building a job needs from the runtime.
pub(crate) struct BuildContext {
    pub store: Store,
    pub logs: Arc<LogRegistry>,
    pub connectors: Arc<dyn ConnectorFactory>,
    pub progress: Arc<SourceProgress>,
    pub metrics: Arc<JobMetrics>,
    pub idle_timeout: Option<std::time::Duration>,
    pub reports: mpsc::UnboundedSender<Report>,
    pub states: JobStates,
}

pub(crate) async fn build_job(
    spec: JobSpec,
    context: BuildContext,
    committed: Epoch,
    publishable: Epoch,
) -> EngineResult<RunningJob> {
    let BuildContext {
        store,
        logs,
        connectors,
        progress,
        metrics,
        idle_timeout,
        reports,
        states,
    } = context;
    let graph = &spec.graph;
    // Per fragment, per subtask, per input (upstream subtask of a port):
    // a channel of its own, so a subtask holding one input back at a
    // barrier stops reading it and the input's producer feels it.
    let mut channels: Vec<Vec<Vec<InputChannel>>> = vec![];
    let mut inputs: Vec<Inputs> = vec![];
    for fragment in &graph.fragments {
        let mut ports = vec![];
        let mut index = HashMap::new();
        for (port, input) in fragment.inputs.iter().enumerate() {
            let upstream = match input {
                FragmentInput::Source(_) => 1,
                // A forwarded input comes from one upstream subtask.
                FragmentInput::Exchange { fragment: from }
                    if graph.forwards(*from, fragment.id) =>
                {
                    1
                }
                FragmentInput::Exchange { fragment } => graph.fragments[*fragment].parallelism,
            };
            for subtask in 0..upstream {
                index.insert((port, subtask), ports.len());
                ports.push(port);
            }
        }
        channels.push(
            (0..fragment.parallelism)
                .map(|_| {
                    (0..ports.len())
                        .map(|_| {
                            let (tx, rx) = channel();
                            (tx, Some(rx))
                        })
                        .collect()
                })
                .collect(),
        );
        inputs.push(Inputs { ports, index });
    }

    let mut handles = vec![];
    let mut barriers = vec![];
    let mut reads = vec![];
    let mut writes_log = None;
    let mut publish = None;
    let mut reporters = 0;
    // Fragments whose source computes the watermark per split.
    let mut split_watermarks = std::collections::HashSet::new();
    for fragment in &graph.fragments {
        for (port, input) in fragment.inputs.iter().enumerate() {
            let FragmentInput::Source(source) = input else {
                continue;
            };
            let index = inputs[fragment.id].index[&(port, 0)];
            if let Some(options) = &source.connector {
                // One reader per subtask, each reading its share of the
                // splits into its subtask.
                for (subtask, subtask_inputs) in channels[fragment.id].iter().enumerate() {
                    let share = SourceShare {
                        subtask,
                        parallelism: fragment.parallelism,
                    };
                    let (barrier_tx, barrier_rx) = mpsc::unbounded_channel();
                    let output = (subtask_inputs[index].0.clone(), index);
                    let mut reader = connectors.open(options, &source.schema, share)?;
                    let state = StateTable::new(store.clone(), source.state_id);
                    reader.seek(stored_reader_position(&state, share)?.as_deref())?;
                    let counters = progress.add(spec.id, reader.bounded());
                    // A reader with splits says so from the start.
                    let watermark = match (reader.pending_splits(), watermark_of(fragment)) {
                        (Some(_), Some((column, expr))) => {
                            split_watermarks.insert(fragment.id);
                            Some(SplitWatermarks::new(
                                column,
                                expr,
                                idle_timeout,
                                state.get(reader_group(share), SPLIT_WATERMARKS)?.as_deref(),
                            )?)
                        }
                        _ => None,
                    };
                    handles.push(tokio::spawn(
                        ConnectorSource {
                            job: spec.id,
                            reader,
                            schema: Arc::clone(&source.schema),
                            barriers: barrier_rx,
                            state,
                            share,
                            output,
                            reports: reports.clone(),
                            progress: counters,
                            buffer: Arc::clone(store.epoch_buffer()),
                            emitted_in_epoch: false,
                            states: Arc::clone(&states),
                            skipped: (Arc::clone(&metrics.skipped_messages), 0),
                            watermark,
                        }
                        .run(),
                    ));
                    barriers.push(barrier_tx);
                    reporters += 1;
                }
                continue;
            }
            if fragment.parallelism != 1 {
                return Err(EngineError::Internal(
                    "a fragment reading a change log must have parallelism 1".into(),
                ));
            }
            let (barrier_tx, barrier_rx) = mpsc::unbounded_channel();
            let output = (channels[fragment.id][0][index].0.clone(), index);
            let runner = start_source(source, &store, &logs, committed).await?;
            let (log, position, backfill) = runner;
            handles.push(tokio::spawn(
                LogSource {
                    job: spec.id,
                    log,
                    position,
                    backfill,
                    barriers: barrier_rx,
                    state: StateTable::new(store.clone(), source.state_id),
                    output,
                    reports: reports.clone(),
                }
                .run(),
            ));
            barriers.push(barrier_tx);
            reads.push(source.relation_id);
            progress.set_reads_logs(spec.id);
            reporters += 1;
        }
    }

    for fragment in &graph.fragments {
        for subtask in 0..fragment.parallelism {
            let mut operators: Vec<Box<dyn StreamOperator>> = vec![];
            for op in &fragment.operators {
                if let OperatorSpec::Materialize { table_id, .. } = op {
                    writes_log = Some(*table_id);
                }
                if let OperatorSpec::Sink {
                    sink_id,
                    schema,
                    visible,
                    key,
                    options,
                    ..
                } = op
                {
                    if fragment.parallelism != 1 || publish.is_some() {
                        return Err(EngineError::Internal(
                            "a sink runs as one subtask of one fragment".into(),
                        ));
                    }
                    let written = Arc::new(schema.project(&(0..*visible).collect::<Vec<_>>())?);
                    let writer = connectors.open_sink(options, &written, key.as_deref())?;
                    let (tx, rx) = watch::channel(publishable);
                    publish = Some(tx);
                    handles.push(tokio::spawn(
                        Delivery {
                            job: spec.id,
                            sink_id: *sink_id,
                            schema: Arc::clone(schema),
                            visible: *visible,
                            store: store.clone(),
                            writer,
                            publishable: rx,
                            states: Arc::clone(&states),
                            reports: reports.clone(),
                        }
                        .run(),
                    ));
                }
                let place = Placement {
                    subtask,
                    parallelism: fragment.parallelism,
                    idle_timeout,
                };
                let from_source = split_watermarks.contains(&fragment.id);
                operators.push(build_operator(
                    op,
                    &store,
                    &logs,
                    place,
                    &metrics,
                    from_source,
                )?);
            }
            let mut exchanges = vec![];
            for exchange in fragment.output.exchanges() {
                let to = exchange.fragment;
                let target = |downstream: usize, upstream: usize| {
                    let index = inputs[to].index[&(exchange.port, upstream)];
                    (channels[to][downstream][index].0.clone(), index)
                };
                // A forwarded input is each downstream subtask's only one
                // from this fragment: its peer's.
                let targets = if exchange.distribution == Distribution::Forward {
                    if channels[to].len() != fragment.parallelism {
                        return Err(EngineError::Internal(
                            "a forward exchange joins fragments of different parallelism".into(),
                        ));
                    }
                    vec![target(subtask, 0)]
                } else {
                    (0..channels[to].len())
                        .map(|d| target(d, subtask))
                        .collect()
                };
                exchanges.push(ExchangeTargets {
                    targets,
                    distribution: exchange.distribution.clone(),
                });
            }
            let dispatcher = Dispatcher::new(exchanges);
            let receivers = channels[fragment.id][subtask]
                .iter_mut()
                .map(|(_, rx)| rx.take())
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| EngineError::Internal("subtask built twice".into()))?;
            let task = Task {
                job: spec.id,
                inputs: receivers,
                ports: inputs[fragment.id].ports.clone(),
                idle_timeout,
                operators,
                dispatcher,
                reports: reports.clone(),
                emitted: Default::default(),
                delivered: (1..fragment.operators.len())
                    .map(|_| Default::default())
                    .collect(),
            };
            handles.push(tokio::spawn(task.run()));
            reporters += 1;
        }
    }
    Ok(RunningJob {
        id: spec.id,
        reporters,
        barriers,
        handles,
        reads,
        writes_log,
        publish,
    })
}

/// One input's channel of one subtask; the receiver until the task takes it.
type InputChannel = (InputSender, Option<InputReceiver>);

type StartedSource = (
    Arc<crate::log::ChangeLog>,
    u64,
    Option<mpsc::Receiver<EngineResult<crate::StreamChunk>>>,
);

/// Opens a source's log and finds where it starts: its committed position,
/// or (for a new job) the position matching a snapshot it backfills from.
async fn start_source(
    source: &SourceSpec,
    store: &Store,
    logs: &LogRegistry,
    committed: Epoch,
) -> EngineResult<StartedSource> {
    let log = if source.is_table {
        logs.open_table_log(
            store,
            source.relation_id,
            &source.relation_name,
            &source.schema,
        )?
    } else {
        logs.live_view_log(source.relation_id).ok_or_else(|| {
            EngineError::UpstreamFailed(format!(
                "materialized view {} is not running",
                source.relation_name
            ))
        })?
    };
    if let Some(position) = stored_position(store, source)? {
        return Ok((log, position, None));
    }
    if source.is_table {
        let (rows, snapshot) = start_backfill(store, source, Some(Arc::clone(&log)));
        let position = snapshot
            .await
            .map_err(|_| EngineError::Internal(format!("reading {} failed", source.relation_name)))?
            .ok_or_else(|| EngineError::Internal("a table snapshot has a position".into()))?;
        Ok((log, position, Some(rows)))
    } else {
        // Between epochs the view's rows in the store are those of the
        // committed epoch, which ended at this seal of its log.
        let position = log.seal_end(committed).unwrap_or_else(|| log.next_seq());
        let (rows, snapshot) = start_backfill(store, source, None);
        snapshot.await.map_err(|_| {
            EngineError::Internal(format!("reading {} failed", source.relation_name))
        })?;
        Ok((log, position, Some(rows)))
    }
}

/// The `WATERMARK FOR` column and expression of a fragment, if it has one.
fn watermark_of(
    fragment: &crate::graph::Fragment,
) -> Option<(usize, Arc<dyn datafusion::physical_expr::PhysicalExpr>)> {
    fragment.operators.iter().find_map(|op| match op {
        OperatorSpec::Watermark { column, expr, .. } => Some((*column, Arc::clone(expr))),
        _ => None,
    })
}

/// Which subtask of how many an operator instance is.
#[derive(Debug, Clone, Copy)]
struct Placement {
    subtask: usize,
    parallelism: usize,
    /// For operators that merge several inputs' watermarks.
    idle_timeout: Option<std::time::Duration>,
}

impl Placement {
    /// The key groups whose state this subtask owns.
    fn key_groups(self) -> Vec<u16> {
        (0..runnel_storage::state_table::KEY_GROUPS)
            .filter(|&g| subtask_of(g, self.parallelism) == self.subtask)
            .collect()
    }
}

fn build_operator(
    spec: &OperatorSpec,
    store: &Store,
    logs: &LogRegistry,
    place: Placement,
    metrics: &JobMetrics,
    watermark_from_source: bool,
) -> EngineResult<Box<dyn StreamOperator>> {
    Ok(match spec {
        OperatorSpec::Project { exprs, schema } => {
            Box::new(ProjectOperator::new(exprs.clone(), Arc::clone(schema)))
        }
        OperatorSpec::Filter { predicate } => Box::new(FilterOperator::new(Arc::clone(predicate))),
        OperatorSpec::Unnest {
            lists,
            options,
            schema,
        } => Box::new(UnnestOperator::new(
            lists.clone(),
            options.clone(),
            Arc::clone(schema),
        )),
        OperatorSpec::Upsert {
            key,
            schema,
            state_id,
        } => Box::new(UpsertOperator::new(
            key.clone(),
            Arc::clone(schema),
            store.clone(),
            *state_id,
        )),
        OperatorSpec::Watermark {
            column,
            expr,
            state_id,
        } => Box::new(WatermarkOperator::new(
            *column,
            Arc::clone(expr),
            store.clone(),
            *state_id,
            place.subtask as u16,
            watermark_from_source,
        )?),
        OperatorSpec::HashAggregate {
            group_by,
            aggregates,
            schema,
            state_id,
            window,
            append_only_input,
        } => Box::new(
            HashAggOperator::new(
                group_by.clone(),
                aggregates.clone(),
                Arc::clone(schema),
                store.clone(),
                *state_id,
                window.as_ref().map(|spec| WindowSetup {
                    spec: spec.clone(),
                    key_groups: place.key_groups(),
                    late_rows: Arc::clone(&metrics.late_rows),
                }),
            )?
            .with_append_only_input(*append_only_input)?,
        ),
        OperatorSpec::SessionAggregate {
            window,
            aggregates,
            input_schema,
            schema,
            state_id,
        } => Box::new(SessionAggOperator::new(
            SessionSetup {
                window: window.clone(),
                key_groups: place.key_groups(),
                late_rows: Arc::clone(&metrics.late_rows),
            },
            aggregates.clone(),
            input_schema,
            Arc::clone(schema),
            store.clone(),
            *state_id,
        )?),
        OperatorSpec::HashJoin {
            kind,
            left,
            right,
            filter,
            nulls_equal,
            schema,
            state_id,
            cleanup,
        } => Box::new(HashJoinOperator::new(
            *kind,
            left.clone(),
            right.clone(),
            filter.clone(),
            *nulls_equal,
            Arc::clone(schema),
            store.clone(),
            *state_id,
            cleanup.as_deref().map(|c| (c.clone(), place.key_groups())),
        )?),
        OperatorSpec::TopN {
            partition,
            order,
            offset,
            limit,
            rank_column,
            input_schema,
            stream_key,
            schema,
            state_id,
            window,
            append_only_input,
        } => Box::new(
            TopNOperator::new(
                partition.clone(),
                order.clone(),
                *offset,
                *limit,
                *rank_column,
                Arc::clone(input_schema),
                stream_key.clone(),
                Arc::clone(schema),
                store.clone(),
                *state_id,
                window.as_ref().map(|spec| TopNWindowSetup {
                    spec: spec.clone(),
                    key_groups: place.key_groups(),
                    late_rows: Arc::clone(&metrics.late_rows),
                }),
            )?
            .with_append_only_input(*append_only_input)?,
        ),
        OperatorSpec::Union { schema, keys } => Box::new(UnionOperator::new(
            Arc::clone(schema),
            keys.clone(),
            place.idle_timeout,
        )),
        OperatorSpec::Sink {
            sink_id,
            key,
            state_id,
            ..
        } => Box::new(SinkOperator::new(
            *sink_id,
            key.clone(),
            store.clone(),
            *state_id,
        )?),
        OperatorSpec::Blackhole { .. } => Box::new(BlackholeOperator),
        OperatorSpec::Materialize {
            table_id,
            relation_name,
            key,
            schema,
            state_id,
            append_only_input,
        } => {
            let next_seq = MaterializeOperator::stored_log_position(store, *state_id)?.unwrap_or(0);
            let log = logs.view_log(*table_id, relation_name, next_seq);
            Box::new(
                MaterializeOperator::new(
                    *table_id,
                    key.clone(),
                    Arc::clone(schema),
                    log,
                    store.clone(),
                    *state_id,
                )
                .with_append_only_input(*append_only_input),
            )
        }
    })
}
