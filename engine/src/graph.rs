//! The `StreamGraph`: what a job runs. Fragments of chained operators,
//! joined by exchanges; each fragment runs as `parallelism` subtasks.
//!
//! Expressions are DataFusion physical expressions. The graph is built by
//! the planner from the view's SQL, deterministically, so a restart plans
//! the same graph with the same state table ids; shipping graphs to remote
//! workers will serialize the expressions with `datafusion-proto`.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::scalar::ScalarValue;

/// A whole job.
#[derive(Debug, Clone)]
pub struct StreamGraph {
    /// In dependency order: a fragment's inputs come before it; the last
    /// fragment ends in the job's sink (the materialize operator).
    pub fragments: Vec<Fragment>,
}

/// Operators that run chained in one task per parallel subtask.
#[derive(Debug, Clone)]
pub struct Fragment {
    pub id: usize,
    pub parallelism: usize,
    /// The first operator's inputs, in port order.
    pub inputs: Vec<FragmentInput>,
    /// Applied in order; the first reads `inputs`, each next one the
    /// previous one's output.
    pub operators: Vec<OperatorSpec>,
    /// Where the last operator's output goes.
    pub output: FragmentOutput,
}

/// Where a fragment's input comes from.
#[derive(Debug, Clone)]
pub enum FragmentInput {
    /// A source read by the fragment itself.
    Source(SourceSpec),
    /// The output of another fragment, through an exchange.
    Exchange { fragment: usize },
}

/// How rows are spread over the subtasks of the next fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Distribution {
    /// Everything to subtask 0.
    Single,
    /// By the key group of these columns.
    Hash(Vec<usize>),
    /// Subtask i to subtask i of a fragment of the same parallelism: the
    /// rows stay where they are (a sub-plan shared by several consumers
    /// hands its output on to each of them this way).
    Forward,
}

/// Where a fragment's output goes.
#[derive(Debug, Clone)]
pub enum FragmentOutput {
    /// To each of these exchanges, every row to every one of them: one
    /// exchange, or several when the fragment is a sub-plan that several
    /// parts of the job read.
    Exchanges(Vec<Exchange>),
    /// Nowhere: the last operator is a sink.
    Sink,
}

/// An exchange into input port `port` of fragment `fragment`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub fragment: usize,
    pub port: usize,
    pub distribution: Distribution,
}

impl FragmentOutput {
    /// One exchange into port `port` of fragment `fragment`.
    pub fn exchange(fragment: usize, port: usize, distribution: Distribution) -> Self {
        FragmentOutput::Exchanges(vec![Exchange {
            fragment,
            port,
            distribution,
        }])
    }

    /// The exchanges the output goes through (none for a sink).
    pub fn exchanges(&self) -> &[Exchange] {
        match self {
            FragmentOutput::Exchanges(exchanges) => exchanges,
            FragmentOutput::Sink => &[],
        }
    }
}

/// A source of changes.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// Id and name of the table or view whose change log is read.
    pub relation_id: u64,
    pub relation_name: String,
    /// The rows as stored (for a table: its columns, then the row key).
    pub schema: SchemaRef,
    /// State table keeping the read position.
    pub state_id: u64,
    /// True for a table (its rows are in the store and its log durable);
    /// false for a materialized view or a connector.
    pub is_table: bool,
    /// For a source with a connector: its `WITH (…)` options. The schema is
    /// then the declared columns plus a hidden row position.
    pub connector: Option<std::collections::BTreeMap<String, String>>,
    /// Only ever inserts rows: a connector, or a table with a watermark
    /// (which refuses UPDATE and DELETE).
    pub insert_only: bool,
}

/// One aggregate call of a hash aggregation.
#[derive(Debug, Clone)]
pub struct AggregateCall {
    pub function: Arc<AggregateFunctionExpr>,
    /// `FILTER (WHERE …)`, if any.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

/// A grouped aggregation one of whose group columns carries a watermark
/// (a window bound or time bucket): rows behind the watermark are late and
/// dropped, and a group's state is deleted once the watermark passes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowedGroups {
    /// The group column (index into `group_by`, which is also its output
    /// column) the watermark bounds.
    pub group_column: usize,
    /// The input column holding that group value, whose watermark it is.
    pub input_column: usize,
    /// `EMIT ON WINDOW CLOSE`: a group's row is emitted once, when the
    /// watermark passes it, and never changes (the output is append-only).
    pub emit_on_close: bool,
    /// Rows behind the watermark are not dropped: their groups are closed
    /// (and, on window close, emitted) at the next watermark. Only for a
    /// partial aggregation whose output another one merges — HOP slices,
    /// whose windows may still be open when a slice is late — never for a
    /// result: a group emitted twice would be two rows.
    pub keep_late: bool,
}

/// What one group column of a session aggregation holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionColumn {
    /// The value of partition key `i` (index into `SessionWindow::keys`).
    Key(usize),
    /// The session's first time.
    Start,
    /// The session's last time plus the gap.
    End,
}

/// An aggregation grouped by session windows (`SESSION(rel, ts, gap,
/// keys…)` grouped by its keys and bounds): within each key, rows at most
/// `gap` apart form one session, and sessions merge as rows bridge them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionWindow {
    /// Input columns sessions are formed by (Flink's `PARTITION BY`).
    pub keys: Vec<usize>,
    /// The input's event-time column.
    pub time: usize,
    /// The gap, in nanoseconds (in the column's own units for a time
    /// column of integers).
    pub gap_nanos: i64,
    /// The output's group columns, in order.
    pub groups: Vec<SessionColumn>,
    /// The time column carries a watermark: sessions it passed (last row
    /// plus gap) close and are freed, later rows are dropped as late.
    pub watermarked: bool,
    /// `EMIT ON WINDOW CLOSE`: a session's row is emitted once, final.
    pub emit_on_close: bool,
}

/// A Top-N one of whose partition columns carries a watermark (Top-N per
/// window): a partition the watermark passed never changes again, so its
/// state is deleted, rows for it are late, and the watermark goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopNWindow {
    /// The input column of that partition column.
    pub input_column: usize,
    /// The output columns holding the same value, which the watermark is
    /// passed on for.
    pub outputs: Vec<usize>,
}

/// How far apart the bounded columns of a join's match may be: every
/// matching pair has `left >= right + lower` and `left <= right + upper`.
#[derive(Debug, Clone, PartialEq)]
pub enum JoinOffset {
    /// Equal (a join key).
    Zero,
    /// An interval or number added to the right column.
    By(ScalarValue),
}

/// A join whose matches bound one column of each side by the other, both
/// carrying watermarks: a window join (a key pair, offsets zero) or an
/// interval join (`a.ts BETWEEN b.ts - INTERVAL … AND b.ts + …`). A row
/// that no future row of the other side can match, and that its own side's
/// watermark passed, is deleted; the output carries the derived watermarks.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinCleanup {
    /// Per side, the bounded column (in that side's schema).
    pub columns: [usize; 2],
    /// `left >= right + lower` for every match, if known.
    pub lower: Option<JoinOffset>,
    /// `left <= right + upper` for every match, if known.
    pub upper: Option<JoinOffset>,
    /// Per side, the output columns that copy its bounded column.
    pub outputs: [Vec<usize>; 2],
}

/// Which rows a join emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    /// Every left row, null-padded when nothing matches.
    Left,
    Right,
    Full,
    /// Left rows with at least one match (`IN`, `EXISTS`).
    LeftSemi,
    /// Left rows without a match (`NOT EXISTS`).
    LeftAnti,
    RightSemi,
    RightAnti,
}

/// One input of a join.
#[derive(Debug, Clone)]
pub struct JoinSide {
    /// The input's columns: visible ones first.
    pub schema: SchemaRef,
    pub visible: usize,
    /// Columns compared with the other side's (in pairs, in order).
    pub keys: Vec<usize>,
    /// The input's stream key.
    pub stream_key: Vec<usize>,
}

/// Direction of one ORDER BY column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortOrder {
    pub column: usize,
    pub descending: bool,
    pub nulls_first: bool,
}

/// One operator of a fragment.
#[derive(Debug, Clone)]
pub enum OperatorSpec {
    Project {
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    },
    Filter {
        predicate: Arc<dyn PhysicalExpr>,
    },
    /// `unnest(list)`: one row per element of the list columns, the
    /// element's ordinal appended (part of the stream key).
    Unnest {
        lists: Vec<usize>,
        options: datafusion::common::UnnestOptions,
        schema: SchemaRef,
    },
    HashAggregate {
        group_by: Vec<Arc<dyn PhysicalExpr>>,
        aggregates: Vec<AggregateCall>,
        /// Group columns, then one column per aggregate.
        schema: SchemaRef,
        /// Tables `state_id`, `state_id + 1`, and `state_id + 2` when
        /// windowed (the watermark).
        state_id: u64,
        window: Option<WindowedGroups>,
        /// The input only ever inserts rows: min and max keep a running
        /// value instead of every input value.
        append_only_input: bool,
    },
    /// Aggregation over session windows of an append-only input.
    SessionAggregate {
        window: SessionWindow,
        aggregates: Vec<AggregateCall>,
        input_schema: SchemaRef,
        /// Group columns (`window.groups`), then one column per aggregate.
        schema: SchemaRef,
        /// Tables `state_id` (sessions) and `state_id + 1` (watermark).
        state_id: u64,
    },
    /// A changelog source's upserts and deletes by `key` (columns of the
    /// input, which is also the output) as a consistent change log.
    Upsert {
        key: Vec<usize>,
        schema: SchemaRef,
        state_id: u64,
    },
    /// Passes rows on and emits the watermark `WATERMARK FOR column AS
    /// expr` declares.
    Watermark {
        column: usize,
        expr: Arc<dyn PhysicalExpr>,
        state_id: u64,
    },
    /// Rows of several inputs with the same visible columns; the output
    /// ends in a binary key made of the input port and that input's key.
    Union {
        /// Per input port, its stream key columns.
        keys: Vec<Vec<usize>>,
        schema: SchemaRef,
    },
    /// An equi-join (possibly with no key: a cross join) with an optional
    /// extra condition, over both inputs' full state.
    HashJoin {
        kind: JoinKind,
        left: JoinSide,
        right: JoinSide,
        /// Over the left's visible columns followed by the right's.
        filter: Option<Arc<dyn PhysicalExpr>>,
        /// `NULL = NULL` matches (IS NOT DISTINCT FROM keys).
        nulls_equal: bool,
        /// Inner and outer joins: left visible, right visible, left hidden,
        /// right hidden. Semi and anti joins: the kept side's columns.
        schema: SchemaRef,
        state_id: u64,
        /// Boxed: most joins have none, and it is large.
        cleanup: Option<Box<JoinCleanup>>,
    },
    /// The first `limit` rows (after `offset`) of each partition in
    /// `order`: `ORDER BY … LIMIT` and `row_number() … <= N`.
    TopN {
        partition: Vec<usize>,
        order: Vec<SortOrder>,
        offset: usize,
        limit: usize,
        /// Where the 1-based row number goes in the output, if it is kept.
        rank_column: Option<usize>,
        input_schema: SchemaRef,
        stream_key: Vec<usize>,
        schema: SchemaRef,
        /// Tables `state_id`, `state_id + 1`, and `state_id + 2` when
        /// windowed (the watermark).
        state_id: u64,
        window: Option<TopNWindow>,
        /// The input only inserts: only each partition's top rows are
        /// kept (a row that falls out can never come back).
        append_only_input: bool,
    },
    /// Writes the view's rows and feeds its change log.
    Materialize {
        table_id: u64,
        relation_name: String,
        /// The stream key: which columns identify a row.
        key: Vec<usize>,
        schema: SchemaRef,
        state_id: u64,
        /// The input only inserts rows, each under a key never seen before
        /// (what a stream key of an append-only stream is), so no row is
        /// ever replaced and none needs looking up.
        append_only_input: bool,
    },
    /// The end of a sink's job: stages each epoch's changes for delivery
    /// once the epoch (or, with checkpoints, its checkpoint) completes.
    Sink {
        /// The sink's id: its staged changes and delivery position.
        sink_id: u64,
        sink_name: String,
        /// The columns that identify a row in what is written (the sink's
        /// primary key), or None when the input is append-only and rows go
        /// out as they come.
        key: Option<Vec<usize>>,
        /// The input's columns; the first `visible` are written.
        schema: SchemaRef,
        visible: usize,
        /// The `WITH (…)` options, for the connector that writes.
        options: std::collections::BTreeMap<String, String>,
        /// Tables `state_id` (the staging position) and `state_id + 1` (the
        /// last row written per key).
        state_id: u64,
    },
    /// The end of a `blackhole` sink's job: takes every change and writes
    /// nothing, in every subtask.
    Blackhole {
        sink_name: String,
    },
}

impl OperatorSpec {
    /// The name shown in plans.
    pub fn name(&self) -> &'static str {
        match self {
            OperatorSpec::Project { .. } => "Project",
            OperatorSpec::Filter { .. } => "Filter",
            OperatorSpec::Unnest { .. } => "Unnest",
            OperatorSpec::Upsert { .. } => "Upsert",
            OperatorSpec::Watermark { .. } => "Watermark",
            OperatorSpec::HashAggregate { .. } => "HashAggregate",
            OperatorSpec::SessionAggregate { .. } => "SessionAggregate",
            OperatorSpec::Union { .. } => "Union",
            OperatorSpec::HashJoin { .. } => "HashJoin",
            OperatorSpec::TopN { .. } => "TopN",
            OperatorSpec::Materialize { .. } => "Materialize",
            OperatorSpec::Sink { .. } => "Sink",
            OperatorSpec::Blackhole { .. } => "Blackhole",
        }
    }

    /// True when the output is append-only whenever the input is.
    pub fn preserves_append_only(&self) -> bool {
        match self {
            // Inserts only ever meet inserts: matches are only added. An
            // outer or anti join retracts a row when its first match comes.
            OperatorSpec::HashJoin { kind, .. } => matches!(
                kind,
                JoinKind::Inner | JoinKind::LeftSemi | JoinKind::RightSemi
            ),
            OperatorSpec::HashAggregate { .. } | OperatorSpec::SessionAggregate { .. } => {
                self.makes_append_only()
            }
            OperatorSpec::TopN { .. } | OperatorSpec::Upsert { .. } => false,
            _ => true,
        }
    }

    /// True when the output is append-only whatever the input is (an
    /// aggregation that emits on window close).
    pub fn makes_append_only(&self) -> bool {
        matches!(
            self,
            OperatorSpec::HashAggregate {
                window: Some(WindowedGroups {
                    emit_on_close: true,
                    ..
                }),
                ..
            } | OperatorSpec::SessionAggregate {
                window: SessionWindow {
                    emit_on_close: true,
                    ..
                },
                ..
            }
        )
    }
}

fn list<T: fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for OperatorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OperatorSpec::Project { exprs, .. } => write!(f, "Project: {}", list(exprs)),
            OperatorSpec::Filter { predicate } => write!(f, "Filter: {predicate}"),
            OperatorSpec::Unnest { lists, .. } => write!(f, "Unnest: lists=[{}]", list(lists)),
            OperatorSpec::Upsert { key, .. } => write!(f, "Upsert: key=[{}]", list(key)),
            OperatorSpec::Watermark { column, expr, .. } => {
                write!(f, "Watermark: column={column}, expr={expr}")
            }
            OperatorSpec::HashAggregate {
                group_by,
                aggregates,
                window,
                ..
            } => {
                write!(
                    f,
                    "HashAggregate: group_by=[{}], aggregates=[{}]",
                    list(group_by),
                    list(aggregates.iter().map(|a| a.function.name().to_string()))
                )?;
                match window {
                    Some(w) if w.emit_on_close => {
                        write!(f, ", emit on close of group column {}", w.group_column)?;
                        if w.keep_late {
                            write!(f, ", late rows kept")?;
                        }
                        Ok(())
                    }
                    Some(w) => write!(f, ", state cleaned by group column {}", w.group_column),
                    None => Ok(()),
                }
            }
            OperatorSpec::SessionAggregate {
                window, aggregates, ..
            } => write!(
                f,
                "SessionAggregate: keys=[{}], time={}, gap={}ns, aggregates=[{}]{}",
                list(&window.keys),
                window.time,
                window.gap_nanos,
                list(aggregates.iter().map(|a| a.function.name().to_string())),
                if window.emit_on_close {
                    ", emit on close"
                } else if window.watermarked {
                    ", state cleaned by watermark"
                } else {
                    ""
                }
            ),
            OperatorSpec::Union { keys, .. } => write!(f, "Union: inputs={}", keys.len()),
            OperatorSpec::TopN {
                partition,
                order,
                offset,
                limit,
                window,
                ..
            } => {
                write!(
                    f,
                    "TopN: partition_by=[{}], order_by=[{}], offset={offset}, limit={limit}",
                    list(partition),
                    list(order.iter().map(|o| format!(
                        "{}{}",
                        o.column,
                        if o.descending { " DESC" } else { "" }
                    )))
                )?;
                match window {
                    Some(w) => write!(f, ", per window of column {}", w.input_column),
                    None => Ok(()),
                }
            }
            OperatorSpec::HashJoin {
                kind,
                left,
                right,
                filter,
                cleanup,
                ..
            } => {
                write!(
                    f,
                    "HashJoin: {kind:?}, on=[{}]",
                    left.keys
                        .iter()
                        .zip(&right.keys)
                        .map(|(l, r)| format!(
                            "left.{} = right.{}",
                            left.schema.field(*l).name(),
                            right.schema.field(*r).name()
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                )?;
                if let Some(filter) = filter {
                    write!(f, ", filter={filter}")?;
                }
                if let Some(c) = cleanup {
                    write!(
                        f,
                        ", state cleaned by left.{} and right.{}",
                        left.schema.field(c.columns[0]).name(),
                        right.schema.field(c.columns[1]).name()
                    )?;
                }
                Ok(())
            }
            OperatorSpec::Materialize {
                relation_name, key, ..
            } => write!(f, "Materialize: {relation_name}, key=[{}]", list(key)),
            OperatorSpec::Sink {
                sink_name,
                key,
                options,
                ..
            } => {
                let connector = options.get("connector").map_or("?", String::as_str);
                write!(f, "Sink: {sink_name} ({connector} connector)")?;
                match key {
                    Some(key) => write!(f, ", key=[{}]", list(key)),
                    None => write!(f, ", append-only"),
                }
            }
            OperatorSpec::Blackhole { sink_name } => {
                write!(f, "Sink: {sink_name} (blackhole connector)")
            }
        }
    }
}

impl StreamGraph {
    /// Whether fragment `from` sends its rows to fragment `to` subtask by
    /// subtask (so each subtask of `to` has one input from `from`).
    pub fn forwards(&self, from: usize, to: usize) -> bool {
        self.fragments[from]
            .output
            .exchanges()
            .iter()
            .any(|e| e.fragment == to && e.distribution == Distribution::Forward)
    }

    /// Whether fragment `id`'s output is append-only.
    pub fn is_append_only(&self, id: usize) -> bool {
        let fragment = &self.fragments[id];
        let inputs = fragment.inputs.iter().all(|input| match input {
            FragmentInput::Source(source) => source.insert_only,
            FragmentInput::Exchange { fragment } => self.is_append_only(*fragment),
        });
        operators_append_only(inputs, &fragment.operators)
    }
}

/// Whether `operators` in a row emit only inserts, given whether their
/// input does.
pub fn operators_append_only(input_append_only: bool, operators: &[OperatorSpec]) -> bool {
    operators.iter().fold(input_append_only, |append_only, op| {
        op.makes_append_only() || (append_only && op.preserves_append_only())
    })
}

impl fmt::Display for StreamGraph {
    /// The plan `EXPLAIN CREATE MATERIALIZED VIEW` prints, root first.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for fragment in self.fragments.iter().rev() {
            let output = match &fragment.output {
                FragmentOutput::Sink => "sink".to_string(),
                FragmentOutput::Exchanges(exchanges) => exchanges
                    .iter()
                    .map(|e| match &e.distribution {
                        Distribution::Single => {
                            format!("single exchange to fragment {}", e.fragment)
                        }
                        Distribution::Hash(keys) => format!(
                            "hash exchange on [{}] to fragment {}",
                            list(keys),
                            e.fragment
                        ),
                        Distribution::Forward => format!("forward to fragment {}", e.fragment),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            let mode = if self.is_append_only(fragment.id) {
                "append-only"
            } else {
                "retracting"
            };
            writeln!(
                f,
                "Fragment {} (parallelism {}, {mode}) -> {output}",
                fragment.id, fragment.parallelism
            )?;
            for op in fragment.operators.iter().rev() {
                writeln!(f, "  {op}")?;
            }
            for input in &fragment.inputs {
                match input {
                    FragmentInput::Source(s) if s.connector.is_some() => writeln!(
                        f,
                        "  Source: {} ({} connector)",
                        s.relation_name,
                        s.connector
                            .as_ref()
                            .and_then(|o| o.get("connector"))
                            .map(String::as_str)
                            .unwrap_or("?")
                    )?,
                    FragmentInput::Source(s) => {
                        let kind = if s.is_table {
                            "table"
                        } else {
                            "materialized view"
                        };
                        writeln!(f, "  Source: changes of {kind} {}", s.relation_name)?
                    }
                    FragmentInput::Exchange { fragment } => {
                        writeln!(f, "  Exchange: from fragment {fragment}")?
                    }
                }
            }
        }
        Ok(())
    }
}
