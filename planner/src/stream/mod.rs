//! The streaming planner: an optimized DataFusion `LogicalPlan` to the
//! engine's [`StreamGraph`] of incremental operators.
//!
//! Every node of the plan becomes operators over changelog chunks whose
//! columns are the node's logical columns followed by hidden columns that
//! complete its stream key (the columns that identify a row, so a later
//! delete finds what an earlier insert wrote). Exchanges cut the plan into
//! fragments where rows must meet by key (before an aggregation) or come
//! together (before the view is written). Anything the engine cannot
//! maintain incrementally is refused with [`PlanError::NotSupported`].

use std::sync::Arc;

mod hop_slices;
mod join;
mod scan;
mod session;
mod shared;
mod sink;
mod top_n;
mod union;
mod unnest;
mod watermarks;

pub use sink::{PlannedSink, SinkOptions, plan_sink};
use top_n::rank_limit;

use crate::types::ColumnType;
use crate::{PlanError, PlanResult};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::{DFSchema, TableReference};
use datafusion::common::{JoinType, NullEquality};
use datafusion::logical_expr::execution_props::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Aggregate, Expr, Join, LogicalPlan, Projection};
use datafusion::physical_expr::aggregate::LoweredAggregateBuilder;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_expr::{PhysicalExpr, create_physical_expr};
use runnel_engine::graph::{
    AggregateCall, Distribution, Fragment, FragmentInput, FragmentOutput, JoinCleanup, JoinKind,
    JoinOffset, JoinSide, OperatorSpec, StreamGraph, WindowedGroups,
};
use watermarks::{check_emit_on_window_close, interval_bounds, projected_watermarks};

/// A table or materialized view a stream can read the changes of.
#[derive(Debug, Clone)]
pub struct StreamInput {
    pub id: u64,
    pub name: String,
    pub is_table: bool,
    /// The rows as stored: visible columns, then hidden key columns.
    pub schema: SchemaRef,
    /// How many leading columns of `schema` are visible.
    pub visible: usize,
    /// For a source with a connector: its options.
    pub connector: Option<std::collections::BTreeMap<String, String>>,
    /// The stream key (indices into `schema`).
    pub key: Vec<usize>,
    /// `WATERMARK FOR column AS expr`, if declared.
    pub watermark: Option<SourceWatermark>,
    /// A changelog source (`FORMAT UPSERT | DEBEZIUM`): it sends upserts
    /// and deletes by `key`, which an Upsert operator turns into changes.
    pub upsert: bool,
    /// Read by as many parallel readers as the job's stateful fragments
    /// have subtasks, each taking a share of the source's splits (an
    /// append-only Kafka source's partitions); else by one.
    pub parallel: bool,
}

/// A declared watermark, planned over the input's stored columns.
#[derive(Debug, Clone)]
pub struct SourceWatermark {
    pub column: usize,
    pub expr: Arc<dyn PhysicalExpr>,
}

/// Finds what a plan's table scans read.
pub trait StreamCatalog {
    /// The table or materialized view `name` resolves to, if it is one.
    fn stream_input(&self, name: &TableReference) -> PlanResult<Option<StreamInput>>;
}

/// The planned job of a materialized view.
#[derive(Debug, Clone)]
pub struct PlannedView {
    pub graph: StreamGraph,
    /// The rows the view stores: visible columns, then hidden key columns.
    pub schema: SchemaRef,
    pub visible_columns: usize,
    pub key: Vec<usize>,
    /// Relations the view reads.
    pub reads: Vec<u64>,
}

/// A planned node: the fragment being built and what its output looks like.
struct Node {
    /// The fragment id reserved for this node's fragment.
    id: usize,
    inputs: Vec<FragmentInput>,
    operators: Vec<OperatorSpec>,
    parallelism: usize,
    /// Visible then hidden columns.
    schema: SchemaRef,
    key: Vec<usize>,
    /// Columns that carry a watermark.
    watermarks: Vec<usize>,
}

struct Planner<'a> {
    catalog: &'a dyn StreamCatalog,
    props: ExecutionProps,
    planning: PhysicalPlanningContext,
    /// Indexed by fragment id; `None` while a fragment is being built.
    fragments: Vec<Option<Fragment>>,
    job_id: u64,
    next_state: u64,
    parallelism: usize,
    reads: Vec<u64>,
    /// Set by a filter `rn <= N` over a row_number() window, for that
    /// window to become a Top-N.
    rank_limit: Option<usize>,
    /// `EMIT ON WINDOW CLOSE`: windowed aggregations emit final rows only.
    emit_on_window_close: bool,
    /// Windowed aggregations planned so far.
    windowed_aggregates: usize,
    /// Sub-plans the plan reaches more than once ([`shared`]).
    shared: std::collections::HashSet<LogicalPlan>,
    /// Those of them planned so far.
    forks: std::collections::HashMap<LogicalPlan, shared::Fork>,
}

/// How a view's job is planned.
#[derive(Debug, Clone)]
pub struct ViewOptions {
    /// The id the view's rows are stored under (and its job's id).
    pub job_id: u64,
    pub view_name: String,
    /// Of stateful fragments.
    pub parallelism: usize,
    /// `EMIT ON WINDOW CLOSE`.
    pub emit_on_window_close: bool,
}

/// Plans a view as `plan`.
pub fn plan_view(
    plan: &LogicalPlan,
    catalog: &dyn StreamCatalog,
    options: &ViewOptions,
) -> PlanResult<PlannedView> {
    let (mut planner, mut node) = plan_to_single(
        plan,
        catalog,
        options.job_id,
        options.parallelism,
        options.emit_on_window_close,
    )?;
    let schema = Arc::clone(&node.schema);
    let key = node.key.clone();
    let state_id = planner.state_ids(1);
    let append_only_input = planner.node_append_only(&node);
    node.operators.push(OperatorSpec::Materialize {
        table_id: options.job_id,
        relation_name: options.view_name.clone(),
        key: key.clone(),
        schema: Arc::clone(&schema),
        state_id,
        append_only_input,
    });
    let reads = std::mem::take(&mut planner.reads);
    let graph = planner.finish(node, options.emit_on_window_close)?;
    Ok(PlannedView {
        graph,
        schema,
        visible_columns: plan.schema().fields().len(),
        key,
        reads,
    })
}

/// Plans `plan` into one node of parallelism 1 holding its rows in types
/// the store keeps, ready for the operator that ends the job.
fn plan_to_single<'a>(
    plan: &LogicalPlan,
    catalog: &'a dyn StreamCatalog,
    job_id: u64,
    parallelism: usize,
    emit_on_window_close: bool,
) -> PlanResult<(Planner<'a>, Node)> {
    let (mut planner, node) =
        plan_to_node(plan, catalog, job_id, parallelism, emit_on_window_close)?;
    let node = planner.storable(node, plan.schema().fields().len())?;
    let node = if node.parallelism == 1 {
        node
    } else {
        planner.exchange(node, Distribution::Single, 1)
    };
    Ok((planner, node))
}

/// Plans `plan` into the node holding its rows, at whatever parallelism
/// its last operator runs.
fn plan_to_node<'a>(
    plan: &LogicalPlan,
    catalog: &'a dyn StreamCatalog,
    job_id: u64,
    parallelism: usize,
    emit_on_window_close: bool,
) -> PlanResult<(Planner<'a>, Node)> {
    let plan = shared::align_group_orders(plan)?;
    let mut planner = Planner {
        shared: shared::shared_subplans(&plan)?,
        forks: Default::default(),
        catalog,
        props: ExecutionProps::new(),
        planning: PhysicalPlanningContext::default(),
        fragments: vec![],
        job_id,
        next_state: 0,
        parallelism: parallelism.max(1),
        reads: vec![],
        rank_limit: None,
        emit_on_window_close,
        windowed_aggregates: 0,
    };
    let node = planner.plan(&plan)?;
    Ok((planner, node))
}

impl Planner<'_> {
    /// Closes the last node and returns the job's graph.
    fn finish(mut self, node: Node, emit_on_window_close: bool) -> PlanResult<StreamGraph> {
        self.close(node, FragmentOutput::Sink);
        let windowed = self.windowed_aggregates;
        let fragments = self
            .fragments
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| PlanError::InvalidDefinition("a fragment was left unbuilt".into()))?;
        let graph = StreamGraph { fragments };
        if emit_on_window_close {
            check_emit_on_window_close(&graph, windowed)?;
        }
        Ok(graph)
    }
}

/// The stream key after an exchange. Across a hash exchange into several
/// subtasks the key also takes the hash columns: a row whose hash columns
/// change is retracted on one subtask and inserted on another, and the two
/// reach the view in no fixed order, so they must not share a key.
fn key_with_distribution(
    key: &[usize],
    distribution: &Distribution,
    parallelism: usize,
) -> Vec<usize> {
    let mut key = key.to_vec();
    if let Distribution::Hash(columns) = distribution
        && parallelism > 1
    {
        for column in columns {
            if !key.contains(column) {
                key.push(*column);
            }
        }
    }
    key
}

/// Refuses functions whose value is not fixed by their arguments (`now()`,
/// `random()`, …): the optimizer would fold them into the value they had
/// at CREATE, and the view would drift from its query.
pub fn check_deterministic(plan: &LogicalPlan) -> PlanResult<()> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::Volatility;
    let mut found = None;
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && f.func.signature().volatility != Volatility::Immutable
                {
                    found = Some(f.func.name().to_string());
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })
    .map_err(df)?;
    match found {
        Some(name) => Err(not_supported(format!(
            "{name}() in a materialized view (its result changes while its arguments do not)"
        ))),
        None => Ok(()),
    }
}

fn not_supported(what: impl Into<String>) -> PlanError {
    PlanError::NotSupported(what.into())
}

fn df(e: datafusion::error::DataFusionError) -> PlanError {
    PlanError::InvalidDefinition(e.to_string())
}

impl Planner<'_> {
    /// Ids for `count` state tables, stable for the same plan.
    fn state_ids(&mut self, count: u64) -> u64 {
        let first = (self.job_id << 12) + self.next_state;
        self.next_state += count;
        first
    }

    fn reserve(&mut self) -> usize {
        self.fragments.push(None);
        self.fragments.len() - 1
    }

    fn close(&mut self, node: Node, output: FragmentOutput) {
        self.fragments[node.id] = Some(Fragment {
            id: node.id,
            parallelism: node.parallelism,
            inputs: node.inputs,
            operators: node.operators,
            output,
        });
    }

    /// Ends `node`'s fragment with an exchange into a new fragment of
    /// `parallelism` subtasks, returned with no operators yet.
    fn exchange(&mut self, node: Node, distribution: Distribution, parallelism: usize) -> Node {
        let (schema, from) = (Arc::clone(&node.schema), node.id);
        let key = key_with_distribution(&node.key, &distribution, parallelism);
        let to = self.reserve();
        let watermarks = node.watermarks.clone();
        self.close(node, FragmentOutput::exchange(to, 0, distribution));
        Node {
            id: to,
            inputs: vec![FragmentInput::Exchange { fragment: from }],
            operators: vec![],
            parallelism,
            schema,
            key,
            watermarks,
        }
    }

    /// Plans one node of the plan (through [`Planner::plan`], which plans a
    /// shared sub-plan once).
    fn plan_node(&mut self, plan: &LogicalPlan) -> PlanResult<Node> {
        match plan {
            LogicalPlan::TableScan(scan) => self.scan(scan),
            LogicalPlan::Projection(projection) => self.projection(projection),
            LogicalPlan::Filter(filter) => {
                if let Some(limit) = rank_limit(filter) {
                    self.rank_limit = Some(limit);
                }
                let mut node = self.plan(&filter.input)?;
                let predicate = self.physical(&filter.predicate, filter.input.schema())?;
                node.operators.push(OperatorSpec::Filter { predicate });
                Ok(node)
            }
            LogicalPlan::SubqueryAlias(alias) => self.plan(&alias.input),
            LogicalPlan::Aggregate(aggregate) => self.aggregate(aggregate),
            LogicalPlan::Union(union) => self.union(union),
            // A view's rows have no order; ORDER BY without LIMIT only
            // matters to a query that reads them.
            LogicalPlan::Sort(sort) => match sort.fetch {
                None => self.plan(&sort.input),
                Some(fetch) => self.top_n(&sort.input, &sort.expr, 0, fetch),
            },
            LogicalPlan::Limit(limit) => {
                let skip = match limit.get_skip_type().map_err(df)? {
                    datafusion::logical_expr::SkipType::Literal(n) => n,
                    _ => return Err(not_supported("a computed OFFSET in a materialized view")),
                };
                let fetch = match limit.get_fetch_type().map_err(df)? {
                    datafusion::logical_expr::FetchType::Literal(n) => n,
                    _ => return Err(not_supported("a computed LIMIT in a materialized view")),
                };
                let LogicalPlan::Sort(sort) = limit.input.as_ref() else {
                    return Err(not_supported(
                        "LIMIT without ORDER BY in a materialized view (which rows it keeps is arbitrary)",
                    ));
                };
                let fetch = fetch.unwrap_or(usize::MAX - skip);
                self.top_n(&sort.input, &sort.expr, skip, fetch)
            }
            LogicalPlan::Join(join) => self.join(join),
            LogicalPlan::Window(window) => self.ranked_top_n(window),
            LogicalPlan::Unnest(unnest) => self.unnest(unnest),
            LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => Err(not_supported(
                "a materialized view that reads no table or materialized view",
            )),
            LogicalPlan::Distinct(_) => Err(not_supported("this form of DISTINCT")),
            other => Err(not_supported(format!(
                "{} in a materialized view",
                other
                    .display()
                    .to_string()
                    .split(':')
                    .next()
                    .unwrap_or("this query")
            ))),
        }
    }

    fn physical(&self, expr: &Expr, schema: &DFSchema) -> PlanResult<Arc<dyn PhysicalExpr>> {
        create_physical_expr(expr, schema, &self.props, &self.planning).map_err(df)
    }

    /// Keeps `columns` (as visible columns) and the key (hidden unless
    /// kept).
    fn project_columns(&mut self, node: Node, columns: &[usize]) -> Node {
        let exprs: Vec<Arc<dyn PhysicalExpr>> = columns
            .iter()
            .map(|&i| {
                Arc::new(Column::new(node.schema.field(i).name(), i)) as Arc<dyn PhysicalExpr>
            })
            .collect();
        let fields: Vec<Field> = columns
            .iter()
            .map(|&i| node.schema.field(i).clone())
            .collect();
        self.project_with_key(node, exprs, fields, columns)
    }

    /// A projection computing `exprs` into `fields`; `passthrough[i]` is the
    /// input column output `i` copies, if it is a bare column.
    fn project_with_key(
        &mut self,
        mut node: Node,
        mut exprs: Vec<Arc<dyn PhysicalExpr>>,
        mut fields: Vec<Field>,
        passthrough: &[usize],
    ) -> Node {
        let mut key = vec![];
        for (n, &k) in node.key.iter().enumerate() {
            match passthrough.iter().position(|&p| p == k) {
                Some(out) => key.push(out),
                None => {
                    key.push(exprs.len());
                    let field = node.schema.field(k);
                    exprs.push(Arc::new(Column::new(field.name(), k)));
                    fields.push(Field::new(
                        format!("_runnel_key_{n}"),
                        field.data_type().clone(),
                        true,
                    ));
                }
            }
        }
        let schema = Arc::new(Schema::new(fields));
        node.watermarks = projected_watermarks(&node.watermarks, &exprs);
        node.operators.push(OperatorSpec::Project {
            exprs,
            schema: Arc::clone(&schema),
        });
        node.schema = schema;
        node.key = key;
        node
    }

    fn projection(&mut self, projection: &Projection) -> PlanResult<Node> {
        let node = self.plan(&projection.input)?;
        let input_schema = projection.input.schema();
        let mut exprs = vec![];
        let mut passthrough = vec![];
        for expr in &projection.expr {
            let physical = self.physical(expr, input_schema)?;
            passthrough.push(match physical.downcast_ref::<Column>() {
                Some(column) => column.index(),
                None => usize::MAX,
            });
            exprs.push(physical);
        }
        let fields = projection
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        Ok(self.project_with_key(node, exprs, fields, &passthrough))
    }

    fn aggregate(&mut self, aggregate: &Aggregate) -> PlanResult<Node> {
        if aggregate
            .group_expr
            .iter()
            .any(|e| matches!(e, Expr::GroupingSet(_)))
        {
            return Err(not_supported(
                "GROUPING SETS, ROLLUP and CUBE in a materialized view",
            ));
        }
        if let Some(node) = self.session_aggregate(aggregate)? {
            return Ok(node);
        }
        if self.emit_on_window_close
            && let Some(sliced) = hop_slices::sliced(aggregate, |plan| self.inserts_only(plan))?
        {
            return self.plan_node(&sliced);
        }
        let mut node = self.plan(&aggregate.input)?;
        let logical_input = aggregate.input.schema();
        // Group values become columns, so the exchange can hash them.
        let group_exprs: Vec<&Expr> = aggregate.group_expr.iter().collect();
        let group_columns =
            self.append_columns(&mut node, &group_exprs, logical_input, "_runnel_group_")?;
        let widened = Arc::clone(&node.schema);
        // A group column with a watermark makes the aggregation windowed.
        let window = group_columns
            .iter()
            .position(|c| node.watermarks.contains(c))
            .map(|group_column| WindowedGroups {
                group_column,
                input_column: group_columns[group_column],
                emit_on_close: self.emit_on_window_close,
                // HOP slices are merged, late ones too (`hop_slices`).
                keep_late: matches!(
                    aggregate.group_expr.get(group_column),
                    Some(Expr::Alias(alias)) if alias.name == hop_slices::SLICE_COLUMN
                ),
            });
        let aggregates =
            self.lower_aggregates(&aggregate.aggr_expr, logical_input, &node.schema)?;
        let (distribution, parallelism) = if group_columns.is_empty() {
            (Distribution::Single, 1)
        } else {
            (Distribution::Hash(group_columns.clone()), self.parallelism)
        };
        let append_only_input = self.node_append_only(&node);
        let mut next = self.exchange(node, distribution, parallelism);
        let group_by = group_columns
            .iter()
            .map(|&i| Arc::new(Column::new(widened.field(i).name(), i)) as Arc<dyn PhysicalExpr>)
            .collect::<Vec<_>>();
        let schema = Arc::new(aggregate.schema.as_arrow().clone());
        let state_id = self.state_ids(if window.is_some() { 3 } else { 2 });
        next.watermarks = window.iter().map(|w| w.group_column).collect();
        if window.is_some() {
            self.windowed_aggregates += 1;
        }
        next.operators.push(OperatorSpec::HashAggregate {
            group_by: group_by.clone(),
            aggregates,
            schema: Arc::clone(&schema),
            state_id,
            window,
            append_only_input,
        });
        next.schema = schema;
        next.key = (0..group_by.len()).collect();
        Ok(next)
    }

    /// The aggregate calls `exprs` (over `logical`) as the engine runs them
    /// over rows of `schema`.
    fn lower_aggregates(
        &self,
        exprs: &[Expr],
        logical: &DFSchema,
        schema: &SchemaRef,
    ) -> PlanResult<Vec<AggregateCall>> {
        exprs
            .iter()
            .map(|expr| {
                let lowered = LoweredAggregateBuilder::new(
                    expr,
                    logical,
                    schema,
                    &self.props,
                    &self.planning,
                )
                .build()
                .map_err(df)?;
                if !lowered.order_bys.is_empty() {
                    return Err(not_supported(
                        "ORDER BY inside an aggregate call in a materialized view",
                    ));
                }
                Ok(AggregateCall {
                    function: lowered.aggregate,
                    filter: lowered.filter,
                })
            })
            .collect()
    }

    /// Appends `exprs` (over `logical`, the node's visible columns) as
    /// hidden columns; returns their indices.
    fn append_columns(
        &mut self,
        node: &mut Node,
        exprs: &[&Expr],
        logical: &DFSchema,
        prefix: &str,
    ) -> PlanResult<Vec<usize>> {
        if exprs.is_empty() {
            return Ok(vec![]);
        }
        let mut physical: Vec<Arc<dyn PhysicalExpr>> = (0..node.schema.fields().len())
            .map(|i| Arc::new(Column::new(node.schema.field(i).name(), i)) as Arc<dyn PhysicalExpr>)
            .collect();
        let mut fields: Vec<Field> = node
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut indices = vec![];
        for (i, expr) in exprs.iter().enumerate() {
            let e = self.physical(expr, logical)?;
            let data_type = e.data_type(&node.schema).map_err(df)?;
            indices.push(physical.len());
            physical.push(e);
            fields.push(Field::new(format!("{prefix}{i}"), data_type, true));
        }
        let schema = Arc::new(Schema::new(fields));
        node.watermarks = projected_watermarks(&node.watermarks, &physical);
        node.operators.push(OperatorSpec::Project {
            exprs: physical,
            schema: Arc::clone(&schema),
        });
        node.schema = schema;
        Ok(indices)
    }

    /// Casts columns to the type of the column that stores them.
    fn storable(&mut self, node: Node, visible: usize) -> PlanResult<Node> {
        let mut changed = false;
        let mut exprs: Vec<Arc<dyn PhysicalExpr>> = vec![];
        let mut fields = vec![];
        for (i, field) in node.schema.fields().iter().enumerate() {
            let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(field.name(), i));
            let Some(column_type) = ColumnType::from_arrow(field) else {
                let name = if i < visible {
                    field.name().as_str()
                } else {
                    "a hidden key"
                };
                return Err(not_supported(format!(
                    "column \"{name}\" of type {} in a materialized view",
                    field.data_type()
                )));
            };
            // Hidden columns get names of their own: inputs may have
            // given two of them the same one.
            let name = if i < visible {
                field.name().clone()
            } else {
                format!("_runnel_hidden_{}", i - visible)
            };
            let stored = column_type.field(&name, field.is_nullable());
            if stored.data_type() == field.data_type() {
                changed |= &name != field.name();
                exprs.push(column);
                fields.push(stored);
            } else {
                changed = true;
                exprs.push(Arc::new(CastExpr::new(
                    column,
                    stored.data_type().clone(),
                    None,
                )));
                fields.push(stored);
            }
        }
        if !changed {
            return Ok(node);
        }
        let mut node = node;
        let schema = Arc::new(Schema::new(fields));
        node.watermarks = projected_watermarks(&node.watermarks, &exprs);
        node.operators.push(OperatorSpec::Project {
            exprs,
            schema: Arc::clone(&schema),
        });
        node.schema = schema;
        Ok(node)
    }
}
