//! Planning joins: keys and conditions of both sides, outer and semi/anti
//! kinds, and the watermark cleanup of window and interval joins.

use std::sync::Arc;

use super::*;

impl Planner<'_> {
    pub(super) fn join(&mut self, join: &Join) -> PlanResult<Node> {
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
            self.close(node, FragmentOutput::exchange(id, port, distribution));
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
}
