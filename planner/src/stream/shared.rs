//! Sub-plans a query uses more than once, computed once.
//!
//! Nexmark q5 counts bids per auction and window twice: once to report
//! the counts, once to find each window's largest. Flink plans such a
//! repeated sub-plan once (`table.optimizer.reuse-sub-plan-enabled`); so
//! does Runnel. Before planning, aggregations that differ only in the order
//! of their GROUP BY take one order (a projection above restores the
//! columns' order). A sub-plan then reached twice while planning is planned
//! the first time, its fragment closed, and every place that reads it gets
//! a fragment of its own fed by a forward exchange (subtask i to subtask
//! i), so the shared fragment's rows reach each reader unchanged.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, Projection};
use runnel_engine::graph::{Distribution, Exchange, FragmentInput, FragmentOutput};

use super::{Node, Planner, df};
use crate::PlanResult;

/// A planned sub-plan whose fragment feeds every place that reads it.
#[derive(Debug, Clone)]
pub(super) struct Fork {
    fragment: usize,
    parallelism: usize,
    schema: SchemaRef,
    key: Vec<usize>,
    watermarks: Vec<usize>,
}

/// Gives aggregations that group the same input by the same expressions,
/// in different orders, the order of the first of them; a projection above
/// each reordered one keeps its output columns where they were.
pub(super) fn align_group_orders(plan: &LogicalPlan) -> PlanResult<LogicalPlan> {
    type GroupKey = (LogicalPlan, Vec<Expr>, Vec<String>);
    let mut orders: HashMap<GroupKey, Vec<Expr>> = HashMap::new();
    let aligned = plan
        .clone()
        .transform_up(|node| {
            let LogicalPlan::Aggregate(aggregate) = &node else {
                return Ok(Transformed::no(node));
            };
            if aggregate
                .group_expr
                .iter()
                .any(|e| matches!(e, Expr::GroupingSet(_)))
            {
                return Ok(Transformed::no(node));
            }
            let mut names: Vec<String> = aggregate
                .group_expr
                .iter()
                .map(|e| e.schema_name().to_string())
                .collect();
            names.sort();
            let key = (
                aggregate.input.as_ref().clone(),
                aggregate.aggr_expr.clone(),
                names,
            );
            let order = orders
                .entry(key)
                .or_insert_with(|| aggregate.group_expr.clone());
            if *order == aggregate.group_expr {
                return Ok(Transformed::no(node));
            }
            let reordered = Aggregate::try_new(
                Arc::clone(&aggregate.input),
                order.clone(),
                aggregate.aggr_expr.clone(),
            )?;
            let columns = aggregate
                .schema
                .columns()
                .into_iter()
                .map(Expr::Column)
                .collect();
            let restored =
                Projection::try_new(columns, Arc::new(LogicalPlan::Aggregate(reordered)))?;
            Ok(Transformed::yes(LogicalPlan::Projection(restored)))
        })
        .map_err(df)?;
    Ok(aligned.data)
}

/// The sub-plans that planning `plan` reaches more than once, outermost
/// only (what lies inside one is reached through it). A sub-plan holding a
/// window function is left out: how it plans depends on the filter above
/// it (`rn <= N` makes it a Top-N).
pub(super) fn shared_subplans(plan: &LogicalPlan) -> PlanResult<HashSet<LogicalPlan>> {
    fn visit<'a>(
        plan: &'a LogicalPlan,
        seen: &mut HashSet<&'a LogicalPlan>,
        shared: &mut HashSet<LogicalPlan>,
    ) -> PlanResult<()> {
        if !seen.insert(plan) {
            let has_window = plan
                .exists(|p| Ok(matches!(p, LogicalPlan::Window(_))))
                .map_err(df)?;
            if !has_window {
                shared.insert(plan.clone());
            }
            return Ok(());
        }
        for input in plan.inputs() {
            visit(input, seen, shared)?;
        }
        Ok(())
    }
    let mut shared = HashSet::new();
    visit(plan, &mut HashSet::new(), &mut shared)?;
    Ok(shared)
}

impl Planner<'_> {
    /// Plans `plan`, once if it is a shared sub-plan: every later call
    /// reads the fragment the first one closed.
    pub(super) fn plan(&mut self, plan: &LogicalPlan) -> PlanResult<Node> {
        if !self.shared.contains(plan) {
            return self.plan_node(plan);
        }
        let fork = match self.forks.get(plan) {
            Some(fork) => fork.clone(),
            None => {
                let node = self.plan_node(plan)?;
                let fork = self.fork(node);
                self.forks.insert(plan.clone(), fork.clone());
                fork
            }
        };
        Ok(self.read_fork(&fork))
    }

    /// Closes `node`'s fragment, its output to be given readers.
    fn fork(&mut self, node: Node) -> Fork {
        let fork = Fork {
            fragment: node.id,
            parallelism: node.parallelism,
            schema: Arc::clone(&node.schema),
            key: node.key.clone(),
            watermarks: node.watermarks.clone(),
        };
        self.close(node, FragmentOutput::Exchanges(vec![]));
        fork
    }

    /// A new fragment reading `fork`'s rows subtask by subtask.
    fn read_fork(&mut self, fork: &Fork) -> Node {
        let id = self.reserve();
        if let Some(Some(fragment)) = self.fragments.get_mut(fork.fragment)
            && let FragmentOutput::Exchanges(exchanges) = &mut fragment.output
        {
            exchanges.push(Exchange {
                fragment: id,
                port: 0,
                distribution: Distribution::Forward,
            });
        }
        Node {
            id,
            inputs: vec![FragmentInput::Exchange {
                fragment: fork.fragment,
            }],
            operators: vec![],
            parallelism: fork.parallelism,
            schema: Arc::clone(&fork.schema),
            key: fork.key.clone(),
            watermarks: fork.watermarks.clone(),
        }
    }
}
