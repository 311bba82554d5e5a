//! `CHECK` constraints: planned over the table's columns when declared,
//! evaluated over every row an INSERT, UPDATE or COPY writes (a row
//! passes when the condition is true or NULL, as in Postgres), and over
//! the existing rows when `ALTER TABLE … ADD CONSTRAINT … CHECK` adds one.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::sql::sqlparser::ast::CheckConstraint;
use runnel_planner::catalog::{CheckDef, RelationName, TableDef};

use super::{Session, StatementResult};
use crate::error::{ServerError, ServerResult};

impl Session {
    /// The table's CHECK conditions, planned over its columns.
    fn plan_checks(&self, def: &TableDef) -> ServerResult<Vec<(String, Arc<dyn PhysicalExpr>)>> {
        let schema = crate::tables::all_nullable(&def.arrow_schema());
        let df_schema = DFSchema::try_from_qualified_schema(def.name.name.as_str(), &schema)?;
        let state = self.ctx.state();
        def.checks
            .iter()
            .map(|check| {
                let expr = state.create_logical_expr(&check.expr, &df_schema)?;
                let physical = state.create_physical_expr(expr, &df_schema)?;
                if physical.data_type(&schema)? != DataType::Boolean {
                    return Err(ServerError::NotBoolean(format!(
                        "CHECK constraint {} ({})",
                        check.name, check.expr
                    )));
                }
                Ok((check.name.clone(), physical))
            })
            .collect()
    }

    /// Refuses a table whose CHECK conditions do not plan (at CREATE, so a
    /// bad one never reaches the catalog).
    pub(super) fn validate_checks(&self, def: &TableDef) -> ServerResult<()> {
        self.plan_checks(def).map(|_| ())
    }

    /// Fails (23514) when a row of `batches` (the table's columns, in
    /// order) makes a CHECK condition false.
    pub(super) fn check_rows(&self, def: &TableDef, batches: &[RecordBatch]) -> ServerResult<()> {
        if def.checks.is_empty() {
            return Ok(());
        }
        let checks = self.plan_checks(def)?;
        let schema = crate::tables::all_nullable(&def.arrow_schema());
        for batch in batches {
            let mut columns = Vec::with_capacity(batch.num_columns());
            for (array, field) in batch.columns().iter().zip(schema.fields()) {
                match cast(array, field.data_type()) {
                    Ok(array) => columns.push(array),
                    // The write reports the value that does not fit.
                    Err(_) => return Ok(()),
                }
            }
            let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
            for (name, condition) in &checks {
                let result = condition.evaluate(&batch)?.into_array(batch.num_rows())?;
                let result = result.as_boolean();
                if (0..result.len()).any(|i| result.is_valid(i) && !result.value(i)) {
                    return Err(ServerError::CheckViolation {
                        table: def.name.name.clone(),
                        constraint: name.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// `ALTER TABLE t ADD [CONSTRAINT name] CHECK (condition)`: checked
    /// over the rows first.
    pub(super) async fn add_check_constraint(
        &mut self,
        table: &RelationName,
        check: &CheckConstraint,
    ) -> ServerResult<StatementResult> {
        if check.enforced == Some(false) {
            return Err(ServerError::NotSupported("NOT ENFORCED constraints".into()));
        }
        let db = Arc::clone(&self.db);
        let _write = db.write_lock.lock().await;
        let def = self
            .catalog()
            .table(table)
            .ok_or_else(|| ServerError::UndefinedTable(table.name.clone()))?;
        let name = match &check.name {
            Some(name) => runnel_planner::ddl::normalize_ident(name),
            None => {
                let first = runnel_planner::ddl::first_column(&check.expr, &def.columns);
                runnel_planner::ddl::check_name(&table.name, first.as_deref(), &def.checks)
            }
        };
        if def.checks.iter().any(|c| c.name == name) || def.indexes.iter().any(|i| i.name == name) {
            return Err(ServerError::DuplicateObject(format!(
                "constraint \"{name}\" for relation \"{}\" already exists",
                table.name
            )));
        }
        let mut new = def.as_ref().clone();
        new.checks.push(CheckDef {
            name,
            expr: check.expr.to_string(),
        });
        let (_, rows) = self.rows_as_seen(&def).await?;
        self.check_rows(&new, &rows)?;
        self.catalog()
            .replace_table(table, new, runnel_storage::WriteSet::new())?;
        self.retarget_pending_def(def.id, None);
        Ok(StatementResult::command("ALTER TABLE", None))
    }

    /// `ALTER TABLE t DROP CONSTRAINT name` of a CHECK constraint; false
    /// when the table has no CHECK of that name.
    pub(super) fn drop_check_constraint(
        &mut self,
        table: &RelationName,
        name: &str,
    ) -> ServerResult<bool> {
        let Some(def) = self.catalog().table(table) else {
            return Err(ServerError::UndefinedTable(table.name.clone()));
        };
        if !def.checks.iter().any(|c| c.name == name) {
            return Ok(false);
        }
        let mut new = def.as_ref().clone();
        new.checks.retain(|c| c.name != name);
        self.catalog()
            .replace_table(table, new, runnel_storage::WriteSet::new())?;
        self.retarget_pending_def(def.id, None);
        Ok(true)
    }
}
