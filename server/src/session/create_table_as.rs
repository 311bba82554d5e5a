//! `CREATE TABLE t [(columns)] AS query`: a table with
//! the query's columns (and types), filled with its rows. The rows are
//! computed before the table exists, so a failing query leaves nothing.

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{CreateTable, Statement};
use runnel_planner::catalog::{ColumnDef, TableDef};
use runnel_planner::ddl::normalize_ident;
use runnel_planner::types::ColumnType;

use super::{Session, StatementResult};
use crate::error::{ServerError, ServerResult};
use crate::tables::insert_rows;

impl Session {
    pub(super) async fn create_table_as(
        &mut self,
        create: &CreateTable,
    ) -> ServerResult<StatementResult> {
        let Some(query) = &create.query else {
            return Err(ServerError::Internal(
                "CREATE TABLE AS without a query".into(),
            ));
        };
        if create.temporary {
            return Err(ServerError::NotSupported("CREATE TEMPORARY TABLE".into()));
        }
        let name = self.resolve(&create.name)?;
        if self.catalog().relation(&name).is_some() {
            if create.if_not_exists {
                let mut result = StatementResult::command("CREATE TABLE AS", None);
                result.notices.push((
                    "NOTICE",
                    format!("relation \"{}\" already exists, skipping", name.name),
                ));
                return Ok(result);
            }
            return Err(ServerError::DuplicateTable(name.name));
        }
        let plan = self.plan(Statement::Query(query.clone())).await?;
        let fields = plan.schema().fields().clone();
        let names: Vec<String> = if create.columns.is_empty() {
            fields.iter().map(|f| f.name().clone()).collect()
        } else {
            if create.columns.len() > fields.len() {
                return Err(ServerError::Plan(runnel_planner::PlanError::Syntax {
                    message: "CREATE TABLE AS specifies too many column names".into(),
                    position: None,
                }));
            }
            create
                .columns
                .iter()
                .map(|c| normalize_ident(&c.name))
                .chain(
                    fields
                        .iter()
                        .skip(create.columns.len())
                        .map(|f| f.name().clone()),
                )
                .collect()
        };
        let mut columns: Vec<ColumnDef> = Vec::with_capacity(fields.len());
        for (field, name) in fields.iter().zip(names) {
            let column_type = ColumnType::from_arrow(field).ok_or_else(|| {
                ServerError::NotSupported(format!(
                    "a column \"{name}\" of type {} in CREATE TABLE AS",
                    field.data_type()
                ))
            })?;
            if columns.iter().any(|c| c.name == name) {
                return Err(ServerError::DuplicateColumn(name, create.name.to_string()));
            }
            columns.push(ColumnDef {
                name,
                column_type,
                not_null: false,
                default: None,
            });
        }
        let batches = self.ctx.execute_logical_plan(plan).await?.collect().await?;
        let def = TableDef {
            id: 0,
            name: name.clone(),
            columns,
            primary_key: vec![],
            connector: None,
            watermark: None,
            indexes: vec![],
            checks: vec![],
        };
        let def = self
            .catalog()
            .create_table(&name, vec![], |id| Ok(TableDef { id, ..def }))?;
        let db = Arc::clone(&self.db);
        let _write = db.write_lock.lock().await;
        let count = self
            .write_table(def, move |def, db, target| {
                insert_rows(def, &db.store, &db.row_ids, &batches, target)
            })
            .await?;
        Ok(StatementResult::command("SELECT", Some(count)))
    }
}
