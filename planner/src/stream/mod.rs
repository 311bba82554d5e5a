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

mod session;
mod watermarks;

use crate::types::ColumnType;
use crate::{PlanError, PlanResult};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DFSchema, TableReference};
use datafusion::common::{JoinType, NullEquality};
use datafusion::logical_expr::execution_props::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Aggregate, Expr, Join, LogicalPlan, Projection, TableScan, Union};
use datafusion::physical_expr::aggregate::LoweredAggregateBuilder;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_expr::{PhysicalExpr, create_physical_expr};
use runnel_engine::graph::{
    AggregateCall, Distribution, Fragment, FragmentInput, FragmentOutput, JoinCleanup, JoinKind,
    JoinOffset, JoinSide, OperatorSpec, SourceSpec, StreamGraph, WindowedGroups,
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
    let (job_id, view_name, parallelism) = (
        options.job_id,
        options.view_name.as_str(),
        options.parallelism,
    );
    let mut planner = Planner {
        catalog,
        props: ExecutionProps::new(),
        planning: PhysicalPlanningContext::default(),
        fragments: vec![],
        job_id,
        next_state: 0,
        parallelism: parallelism.max(1),
        reads: vec![],
        rank_limit: None,
        emit_on_window_close: options.emit_on_window_close,
        windowed_aggregates: 0,
    };
    let node = planner.plan(plan)?;
    let node = planner.storable(node, plan.schema().fields().len())?;
    let mut node = if node.parallelism == 1 {
        node
    } else {
        planner.exchange(node, Distribution::Single, 1)
    };
    let schema = Arc::clone(&node.schema);
    let key = node.key.clone();
    let state_id = planner.state_ids(1);
    node.operators.push(OperatorSpec::Materialize {
        table_id: job_id,
        relation_name: view_name.to_string(),
        key: key.clone(),
        schema: Arc::clone(&schema),
        state_id,
    });
    planner.close(node, FragmentOutput::Sink);
    let windowed = planner.windowed_aggregates;
    let fragments = planner
        .fragments
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| PlanError::InvalidDefinition("a fragment was left unbuilt".into()))?;
    let graph = StreamGraph { fragments };
    if options.emit_on_window_close {
        check_emit_on_window_close(&graph, windowed)?;
    }
    Ok(PlannedView {
        graph,
        schema,
        visible_columns: plan.schema().fields().len(),
        key,
        reads: planner.reads,
    })
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

/// The N of a filter `rn <= N` (or `rn < N + 1`, `rn = 1`), when `rn` is
/// the row_number() of a window right below it (through projections).
fn rank_limit(filter: &datafusion::logical_expr::Filter) -> Option<usize> {
    use datafusion::logical_expr::{BinaryExpr, Operator};
    use datafusion::scalar::ScalarValue;
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &filter.predicate else {
        return None;
    };
    let (Expr::Column(column), Expr::Literal(value, _)) = (left.as_ref(), right.as_ref()) else {
        return None;
    };
    let n = match value {
        ScalarValue::Int64(Some(n)) => *n,
        ScalarValue::UInt64(Some(n)) => i64::try_from(*n).ok()?,
        ScalarValue::Int32(Some(n)) => i64::from(*n),
        _ => return None,
    };
    let limit = match op {
        Operator::LtEq => n,
        Operator::Lt => n - 1,
        Operator::Eq if n == 1 => 1,
        _ => return None,
    };
    // Follow the column down to the window that computes it.
    let mut name = column.name.clone();
    let mut plan = filter.input.as_ref();
    loop {
        match plan {
            LogicalPlan::SubqueryAlias(alias) => plan = alias.input.as_ref(),
            LogicalPlan::Projection(projection) => {
                let index = projection
                    .schema
                    .fields()
                    .iter()
                    .position(|f| f.name() == &name)?;
                match projection.expr[index].clone().unalias() {
                    Expr::Column(c) => name = c.name,
                    _ => return None,
                }
                plan = projection.input.as_ref();
            }
            LogicalPlan::Window(window) => {
                let is_rank = window
                    .schema
                    .fields()
                    .last()
                    .is_some_and(|f| f.name() == &name);
                return (is_rank && limit >= 0).then_some(limit as usize);
            }
            _ => return None,
        }
    }
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
        self.close(
            node,
            FragmentOutput::Exchange {
                fragment: to,
                port: 0,
                distribution,
            },
        );
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

    fn plan(&mut self, plan: &LogicalPlan) -> PlanResult<Node> {
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

    fn scan(&mut self, scan: &TableScan) -> PlanResult<Node> {
        let input = self.catalog.stream_input(&scan.table_name)?.ok_or_else(|| {
            not_supported(format!(
                "reading {} in a materialized view (only tables and materialized views can be read)",
                scan.table_name
            ))
        })?;
        if scan.fetch.is_some() {
            return Err(not_supported("LIMIT in a materialized view"));
        }
        if !self.reads.contains(&input.id) {
            self.reads.push(input.id);
        }
        let state_id = self.state_ids(1);
        let stored = Arc::clone(&input.schema);
        let mut node = Node {
            id: self.reserve(),
            inputs: vec![FragmentInput::Source(SourceSpec {
                relation_id: input.id,
                relation_name: input.name.clone(),
                schema: Arc::clone(&stored),
                state_id,
                is_table: input.is_table,
                connector: input.connector.clone(),
                insert_only: input.connector.is_some()
                    || (input.is_table && input.watermark.is_some()),
            })],
            operators: vec![],
            parallelism: 1,
            schema: Arc::clone(&stored),
            key: input.key.clone(),
            watermarks: vec![],
        };
        // The watermark sees every row the source emits, before filters.
        if let Some(watermark) = &input.watermark {
            let state_id = self.state_ids(1);
            node.operators.push(OperatorSpec::Watermark {
                column: watermark.column,
                expr: Arc::clone(&watermark.expr),
                state_id,
            });
            node.watermarks = vec![watermark.column];
        }
        // Filters pushed into the scan are over the visible columns.
        if !scan.filters.is_empty() {
            let visible = input.visible;
            let visible_schema = stored
                .project(&(0..visible).collect::<Vec<_>>())
                .map_err(|e| df(e.into()))?;
            let dfschema =
                DFSchema::try_from_qualified_schema(scan.table_name.clone(), &visible_schema)
                    .map_err(df)?;
            for filter in &scan.filters {
                let predicate = self.physical(filter, &dfschema)?;
                node.operators.push(OperatorSpec::Filter { predicate });
            }
        }
        // The scan's columns, then the key.
        let projection: Vec<usize> = match &scan.projection {
            Some(p) => p.clone(),
            None => (0..scan.projected_schema.fields().len()).collect(),
        };
        Ok(self.project_columns(node, &projection))
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
        let mut node = self.plan(&aggregate.input)?;
        let logical_input = aggregate.input.schema();
        // Group values become columns, so the exchange can hash them.
        let mut exprs: Vec<Arc<dyn PhysicalExpr>> = (0..node.schema.fields().len())
            .map(|i| Arc::new(Column::new(node.schema.field(i).name(), i)) as Arc<dyn PhysicalExpr>)
            .collect();
        let mut fields: Vec<Field> = node
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut group_columns = vec![];
        for (i, expr) in aggregate.group_expr.iter().enumerate() {
            let physical = self.physical(expr, logical_input)?;
            let data_type = physical.data_type(&node.schema).map_err(df)?;
            group_columns.push(exprs.len());
            exprs.push(physical);
            fields.push(Field::new(format!("_runnel_group_{i}"), data_type, true));
        }
        let widened = Arc::new(Schema::new(fields));
        if !aggregate.group_expr.is_empty() {
            node.watermarks = projected_watermarks(&node.watermarks, &exprs);
            node.operators.push(OperatorSpec::Project {
                exprs,
                schema: Arc::clone(&widened),
            });
            node.schema = Arc::clone(&widened);
        }
        // A group column with a watermark makes the aggregation windowed.
        let window = group_columns
            .iter()
            .position(|c| node.watermarks.contains(c))
            .map(|group_column| WindowedGroups {
                group_column,
                input_column: group_columns[group_column],
                emit_on_close: self.emit_on_window_close,
            });
        let mut aggregates = vec![];
        for expr in &aggregate.aggr_expr {
            let lowered = LoweredAggregateBuilder::new(
                expr,
                logical_input,
                &node.schema,
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
            aggregates.push(AggregateCall {
                function: lowered.aggregate,
                filter: lowered.filter,
            });
        }
        let (distribution, parallelism) = if group_columns.is_empty() {
            (Distribution::Single, 1)
        } else {
            (Distribution::Hash(group_columns.clone()), self.parallelism)
        };
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
        });
        next.schema = schema;
        next.key = (0..group_by.len()).collect();
        Ok(next)
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

    fn join(&mut self, join: &Join) -> PlanResult<Node> {
        let kind = match join.join_type {
            JoinType::Inner => JoinKind::Inner,
            JoinType::Left => JoinKind::Left,
            JoinType::Right => JoinKind::Right,
            JoinType::Full => JoinKind::Full,
            JoinType::LeftSemi => JoinKind::LeftSemi,
            JoinType::LeftAnti => JoinKind::LeftAnti,
            JoinType::RightSemi => JoinKind::RightSemi,
            JoinType::RightAnti => JoinKind::RightAnti,
            other => {
                return Err(not_supported(format!(
                    "a {other} join in a materialized view"
                )));
            }
        };
        if join.null_aware {
            return Err(not_supported(
                "NOT IN (subquery) in a materialized view (use NOT EXISTS)",
            ));
        }
        let mut left = self.plan(&join.left)?;
        let mut right = self.plan(&join.right)?;
        let left_visible = join.left.schema().fields().len();
        let right_visible = join.right.schema().fields().len();
        let left_exprs: Vec<&Expr> = join.on.iter().map(|(l, _)| l).collect();
        let right_exprs: Vec<&Expr> = join.on.iter().map(|(_, r)| r).collect();
        let left_keys =
            self.append_columns(&mut left, &left_exprs, join.left.schema(), "_runnel_join_")?;
        let right_keys = self.append_columns(
            &mut right,
            &right_exprs,
            join.right.schema(),
            "_runnel_join_",
        )?;
        if !join.on.is_empty() {
            left.key = key_with_distribution(
                &left.key,
                &Distribution::Hash(left_keys.clone()),
                self.parallelism,
            );
            right.key = key_with_distribution(
                &right.key,
                &Distribution::Hash(right_keys.clone()),
                self.parallelism,
            );
        }
        let left_side = JoinSide {
            schema: Arc::clone(&left.schema),
            visible: left_visible,
            keys: left_keys.clone(),
            stream_key: left.key.clone(),
        };
        let right_side = JoinSide {
            schema: Arc::clone(&right.schema),
            visible: right_visible,
            keys: right_keys.clone(),
            stream_key: right.key.clone(),
        };
        let filter = match &join.filter {
            Some(filter) => {
                let both = join.left.schema().join(join.right.schema()).map_err(df)?;
                Some(self.physical(filter, &both)?)
            }
            None => None,
        };
        let (distribution, parallelism) = if join.on.is_empty() {
            (None, 1)
        } else {
            (Some(()), self.parallelism)
        };
        // A key pair watermarked on both sides is a window bound; else the
        // condition may bound one watermarked column by the other.
        let bounded = match left_keys
            .iter()
            .zip(&right_keys)
            .find(|(l, r)| left.watermarks.contains(l) && right.watermarks.contains(r))
        {
            Some((&l, &r)) => Some(([l, r], Some(JoinOffset::Zero), Some(JoinOffset::Zero))),
            None => join.filter.as_ref().and_then(|filter| {
                let both = join.left.schema().join(join.right.schema()).ok()?;
                interval_bounds(
                    filter,
                    &both,
                    left_visible,
                    &left.watermarks,
                    &right.watermarks,
                )
            }),
        };
        let id = self.reserve();
        let inputs = vec![
            FragmentInput::Exchange { fragment: left.id },
            FragmentInput::Exchange { fragment: right.id },
        ];
        for (port, (node, keys)) in [(left, left_keys), (right, right_keys)]
            .into_iter()
            .enumerate()
        {
            let distribution = match distribution {
                Some(()) => Distribution::Hash(keys),
                None => Distribution::Single,
            };
            self.close(
                node,
                FragmentOutput::Exchange {
                    fragment: id,
                    port,
                    distribution,
                },
            );
        }
        let nullable = |f: &Field| Field::new(f.name(), f.data_type().clone(), true);
        let (left_key, right_key) = match &bounded {
            Some((columns, _, _)) => (Some(columns[0]), Some(columns[1])),
            None => (None, None),
        };
        let (schema, key, outputs) = match kind {
            JoinKind::LeftSemi | JoinKind::LeftAnti => (
                Arc::clone(&left_side.schema),
                left_side.stream_key.clone(),
                [left_key.into_iter().collect(), vec![]],
            ),
            JoinKind::RightSemi | JoinKind::RightAnti => (
                Arc::clone(&right_side.schema),
                right_side.stream_key.clone(),
                [vec![], right_key.into_iter().collect()],
            ),
            _ => {
                let lf = left_side.schema.fields();
                let rf = right_side.schema.fields();
                let mut fields: Vec<Field> = join
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone())
                    .collect();
                fields.extend(lf[left_visible..].iter().map(|f| nullable(f)));
                fields.extend(rf[right_visible..].iter().map(|f| nullable(f)));
                // Where each side's column lands in the output.
                let left_at = |i: usize| {
                    if i < left_visible {
                        i
                    } else {
                        right_visible + i
                    }
                };
                let right_at = |i: usize| {
                    if i < right_visible {
                        left_visible + i
                    } else {
                        lf.len() + i
                    }
                };
                let mut key: Vec<usize> =
                    left_side.stream_key.iter().map(|&i| left_at(i)).collect();
                key.extend(right_side.stream_key.iter().map(|&i| right_at(i)));
                let outputs: [Vec<usize>; 2] = [
                    left_key.map(left_at).into_iter().collect(),
                    right_key.map(right_at).into_iter().collect(),
                ];
                (Arc::new(Schema::new(fields)), key, outputs)
            }
        };
        // An output column carries a watermark when its side's rows are
        // freed by one.
        let watermarks: Vec<usize> = match &bounded {
            Some((_, lower, upper)) => [lower.is_some(), upper.is_some()]
                .iter()
                .zip(&outputs)
                .filter(|(freed, _)| **freed)
                .flat_map(|(_, columns)| columns.iter().copied())
                .collect(),
            None => vec![],
        };
        let cleanup = bounded.map(|(columns, lower, upper)| {
            Box::new(JoinCleanup {
                columns,
                lower,
                upper,
                outputs,
            })
        });
        let state_id = self.state_ids(2);
        Ok(Node {
            id,
            inputs,
            operators: vec![OperatorSpec::HashJoin {
                kind,
                left: left_side,
                right: right_side,
                filter,
                nulls_equal: join.null_equality == NullEquality::NullEqualsNull,
                schema: Arc::clone(&schema),
                state_id,
                cleanup,
            }],
            parallelism,
            schema,
            key,
            // Only a join on a window bound passes watermarks on.
            watermarks,
        })
    }

    /// The first `fetch` rows after `skip` of `input` in `order`, over all
    /// rows (one partition).
    fn top_n(
        &mut self,
        input: &LogicalPlan,
        order: &[datafusion::logical_expr::SortExpr],
        skip: usize,
        fetch: usize,
    ) -> PlanResult<Node> {
        let node = self.plan(input)?;
        self.finish_top_n(node, input.schema(), vec![], order, skip, fetch, None)
    }

    /// `row_number() OVER (PARTITION BY … ORDER BY …)` under a filter that
    /// keeps the first rows of each partition.
    fn ranked_top_n(&mut self, window: &datafusion::logical_expr::Window) -> PlanResult<Node> {
        if window
            .window_expr
            .iter()
            .any(|e| session::session_function(e).is_some())
        {
            return Err(not_supported(
                "a SESSION window in a materialized view outside an aggregation: group it by its partition columns and window_start or window_end",
            ));
        }
        let Some(limit) = self.rank_limit.take() else {
            return Err(not_supported(
                "a window function in a materialized view (only row_number() <= N, a Top-N, is)",
            ));
        };
        let [Expr::WindowFunction(function)] = window.window_expr.as_slice() else {
            return Err(not_supported(
                "several window functions in one materialized view",
            ));
        };
        if function.fun.name() != "row_number" {
            return Err(not_supported(format!(
                "window function {} in a materialized view (only row_number() <= N is)",
                function.fun.name()
            )));
        }
        let mut node = self.plan(&window.input)?;
        let logical = window.input.schema();
        let partition_exprs: Vec<&Expr> = function.params.partition_by.iter().collect();
        let partition =
            self.append_columns(&mut node, &partition_exprs, logical, "_runnel_partition_")?;
        // Top-N per window: a partition column with a watermark.
        let windowed = partition
            .iter()
            .zip(&partition_exprs)
            .find(|(c, _)| node.watermarks.contains(c))
            .map(|(&c, e)| {
                let visible_copy = match e {
                    Expr::Column(column) => logical.index_of_column(column).ok(),
                    _ => None,
                };
                (c, visible_copy)
            });
        let order = &function.params.order_by;
        let mut node =
            self.finish_top_n(node, logical, partition, order, 0, limit, Some(window))?;
        if let Some((input_column, visible_copy)) = windowed {
            // The watermark's table, right after the Top-N's two.
            self.state_ids(1);
            let Some(OperatorSpec::TopN {
                window: top_n_window,
                ..
            }) = node.operators.last_mut()
            else {
                return Err(PlanError::Internal(
                    "a Top-N was planned without its operator".into(),
                ));
            };
            // The row number sits after the visible columns, pushing the
            // hidden ones (the partition copy among them) one further.
            let mut outputs = vec![input_column + 1];
            outputs.extend(visible_copy);
            *top_n_window = Some(runnel_engine::graph::TopNWindow {
                input_column,
                outputs: outputs.clone(),
            });
            node.watermarks = outputs;
        }
        Ok(node)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_top_n(
        &mut self,
        mut node: Node,
        logical: &DFSchema,
        partition: Vec<usize>,
        order: &[datafusion::logical_expr::SortExpr],
        offset: usize,
        limit: usize,
        window: Option<&datafusion::logical_expr::Window>,
    ) -> PlanResult<Node> {
        let order_exprs: Vec<&Expr> = order.iter().map(|o| &o.expr).collect();
        let order_columns =
            self.append_columns(&mut node, &order_exprs, logical, "_runnel_order_")?;
        let order = order
            .iter()
            .zip(order_columns)
            .map(|(o, column)| runnel_engine::graph::SortOrder {
                column,
                descending: !o.asc,
                nulls_first: o.nulls_first,
            })
            .collect();
        let (distribution, parallelism) = if partition.is_empty() {
            (Distribution::Single, 1)
        } else {
            (Distribution::Hash(partition.clone()), self.parallelism)
        };
        let mut next = self.exchange(node, distribution, parallelism);
        let input_schema = Arc::clone(&next.schema);
        let visible = logical.fields().len();
        let (schema, rank_column, key) = match window {
            Some(window) => {
                // Output: the input's visible columns, the row number, then
                // the input's hidden columns.
                let mut fields: Vec<Field> = window
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone())
                    .collect();
                fields.extend(
                    input_schema.fields()[visible..]
                        .iter()
                        .map(|f| f.as_ref().clone()),
                );
                let key = next
                    .key
                    .iter()
                    .map(|&k| if k < visible { k } else { k + 1 })
                    .collect();
                (Arc::new(Schema::new(fields)), Some(visible), key)
            }
            None => (Arc::clone(&input_schema), None, next.key.clone()),
        };
        let state_id = self.state_ids(2);
        next.operators.push(OperatorSpec::TopN {
            partition,
            order,
            offset,
            limit,
            rank_column,
            input_schema,
            stream_key: next.key.clone(),
            schema: Arc::clone(&schema),
            state_id,
            window: None,
        });
        next.schema = schema;
        next.key = key;
        // A Top-N holds watermarks back (see the operator), unless it is
        // per window (set by the caller).
        next.watermarks = vec![];
        Ok(next)
    }

    fn unnest(&mut self, unnest: &datafusion::logical_expr::Unnest) -> PlanResult<Node> {
        if !unnest.struct_type_columns.is_empty()
            || unnest.list_type_columns.iter().any(|(_, l)| l.depth != 1)
            || unnest.options.recursions.iter().any(|r| r.depth != 1)
        {
            return Err(not_supported(
                "unnest of a struct or of nested levels in a materialized view (only unnest of a list, one level)",
            ));
        }
        let mut node = self.plan(&unnest.input)?;
        let lists: Vec<usize> = unnest.list_type_columns.iter().map(|(i, _)| *i).collect();
        let visible = unnest.schema.fields().len();
        if visible != unnest.input.schema().fields().len() {
            return Err(not_supported("this form of unnest in a materialized view"));
        }
        // The unnested columns, the input's hidden ones, then the ordinal.
        let mut fields: Vec<Field> = unnest
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.extend(
            node.schema.fields()[visible..]
                .iter()
                .map(|f| f.as_ref().clone()),
        );
        let ordinal = fields.len();
        fields.push(Field::new("_runnel_unnest_ordinal", DataType::Int64, false));
        let schema = Arc::new(Schema::new(fields));
        if node.key.iter().any(|k| lists.contains(k)) {
            return Err(not_supported(
                "unnest of a list column that identifies its rows in a materialized view",
            ));
        }
        node.key.push(ordinal);
        node.watermarks.retain(|c| !lists.contains(c));
        node.operators.push(OperatorSpec::Unnest {
            lists,
            options: unnest.options.clone(),
            schema: Arc::clone(&schema),
        });
        node.schema = schema;
        Ok(node)
    }

    fn union(&mut self, union: &Union) -> PlanResult<Node> {
        let visible = union.schema.fields().len();
        let branches = union
            .inputs
            .iter()
            .map(|input| self.plan(input))
            .collect::<PlanResult<Vec<_>>>()?;
        let id = self.reserve();
        let mut keys = vec![];
        let mut inputs = vec![];
        // A column carries a watermark when it does in every branch.
        let watermarks: Vec<usize> = (0..visible)
            .filter(|c| branches.iter().all(|b| b.watermarks.contains(c)))
            .collect();
        for (port, node) in branches.into_iter().enumerate() {
            keys.push(node.key.clone());
            inputs.push(FragmentInput::Exchange { fragment: node.id });
            self.close(
                node,
                FragmentOutput::Exchange {
                    fragment: id,
                    port,
                    distribution: Distribution::Single,
                },
            );
        }
        let mut fields: Vec<Field> = union
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new("_runnel_union_key", DataType::Binary, false));
        let schema = Arc::new(Schema::new(fields));
        Ok(Node {
            id,
            inputs,
            operators: vec![OperatorSpec::Union {
                keys,
                schema: Arc::clone(&schema),
            }],
            parallelism: 1,
            schema,
            key: vec![visible],
            watermarks,
        })
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
