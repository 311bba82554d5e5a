//! `INSERT … SELECT`: the source planned as a query of its own and brought
//! to the table's columns here. DataFusion plans every `VALUES` inside an
//! INSERT's source with the table's columns, so SQLAlchemy's batched
//! `INSERT … SELECT p0, p1 FROM (VALUES (…, 0), (…, 1)) AS t(p0, p1, n)
//! ORDER BY n` fails there ("Inconsistent data length").

use datafusion::common::Column;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan, LogicalPlanBuilder, cast, lit};
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{ObjectName, Query, Statement};
use runnel_planner::catalog::TableDef;

use super::Session;
use crate::error::{ServerError, ServerResult};

impl Session {
    /// The rows `INSERT INTO table (columns) <source>` inserts, one column
    /// per table column: the named ones from the source, the others their
    /// DEFAULT or null.
    pub(super) async fn insert_source(
        &self,
        table: &TableDef,
        columns: &[ObjectName],
        source: Query,
    ) -> ServerResult<LogicalPlan> {
        let source = self.plan(Statement::Query(Box::new(source))).await?;
        let names: Vec<String> = if columns.is_empty() {
            table
                .columns
                .iter()
                .take(source.schema().fields().len())
                .map(|c| c.name.clone())
                .collect()
        } else {
            columns
                .iter()
                .map(|c| {
                    let parts = runnel_planner::ddl::name_parts(c)?;
                    parts
                        .last()
                        .cloned()
                        .ok_or_else(|| ServerError::Internal(format!("empty column name {c}")))
                })
                .collect::<ServerResult<_>>()?
        };
        if names.len() != source.schema().fields().len() {
            return Err(ServerError::Plan(runnel_planner::PlanError::Syntax {
                message: format!(
                    "INSERT has {} target columns but its query gives {}",
                    names.len(),
                    source.schema().fields().len()
                ),
                position: None,
            }));
        }
        for (i, name) in names.iter().enumerate() {
            if table.column_index(name).is_none() {
                return Err(ServerError::UndefinedColumn(name.clone()));
            }
            if names[..i].contains(name) {
                return Err(ServerError::DuplicateColumn(
                    name.clone(),
                    table.name.name.clone(),
                ));
            }
        }
        let defaults = crate::catalog::plan_defaults(table, &self.ctx.state())?;
        let empty = datafusion::common::DFSchema::empty();
        let mut exprs = Vec::with_capacity(table.columns.len());
        for column in &table.columns {
            let wanted = column.column_type.arrow_type();
            let value = match names.iter().position(|n| *n == column.name) {
                Some(at) => {
                    let (qualifier, field) = source.schema().qualified_field(at);
                    cast(
                        Expr::Column(Column::new(qualifier.cloned(), field.name())),
                        wanted,
                    )
                }
                None => match defaults.get(&column.name) {
                    Some(default) => default.clone(),
                    None => lit(ScalarValue::Null).cast_to(&wanted, &empty)?,
                },
            };
            exprs.push(value.alias(&column.name));
        }
        Ok(LogicalPlanBuilder::from(source).project(exprs)?.build()?)
    }
}
