//! Statements run from their syntax tree: SET, SHOW, RESET, DISCARD,
//! transaction control, and dispatch to DDL.
//!
//! Transaction blocks are in `transaction.rs`. After an error inside a
//! block, statements other than `COMMIT`/`ROLLBACK [TO SAVEPOINT]` are
//! refused (25P02), as in Postgres.

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::sql::sqlparser::ast::{
    DiscardObject, Expr, Ident, Reset, Set, Statement, Value, ValueWithSpan,
};

use super::{Outcome, Session, StatementResult};
use crate::error::{ServerError, ServerResult};

/// Refuses, at prepare time, statements Runnel does not run.
pub(super) fn check_supported(statement: &Statement) -> ServerResult<()> {
    match statement {
        Statement::CreateTable(_)
        | Statement::CreateView(_)
        | Statement::CreateSchema { .. }
        | Statement::Drop { .. }
        | Statement::AlterTable(_)
        | Statement::Truncate(_)
        | Statement::Set(_)
        | Statement::ShowVariable { .. }
        | Statement::Reset(_)
        | Statement::Discard { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::Prepare { .. }
        | Statement::Copy { .. }
        | Statement::CreateSequence { .. }
        | Statement::CreateIndex(_)
        | Statement::Deallocate { .. }
        | Statement::Close { .. }
        | Statement::ShowViews {
            materialized: true, ..
        } => Ok(()),
        other => Err(ServerError::NotSupported(statement_kind(other))),
    }
}

fn statement_kind(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    format!("the statement {}", words.join(" "))
}

fn show_name(variable: &[Ident]) -> String {
    let words: Vec<String> = variable
        .iter()
        .map(|i| i.value.to_ascii_lowercase())
        .collect();
    match words.join(" ").as_str() {
        "transaction isolation level" => "transaction_isolation".into(),
        "time zone" => "timezone".into(),
        other => other.replace(' ', "_"),
    }
}

/// The single text column SHOW answers with.
pub(super) fn result_schema(statement: &Statement) -> Option<SchemaRef> {
    match statement {
        Statement::ShowViews { .. } => Some(super::streaming::views_schema()),
        Statement::Explain { .. } => Some(super::streaming::explain_schema()),
        Statement::ShowVariable { variable } if show_name(variable) == "jobs" => {
            Some(super::streaming::jobs_schema())
        }
        Statement::ShowVariable { variable } if show_name(variable) == "checkpoints" => {
            Some(super::checkpoints::checkpoints_schema())
        }
        Statement::ShowVariable { variable } => {
            let name = show_name(variable);
            if name == "all" {
                Some(Arc::new(Schema::new(vec![
                    Field::new("name", DataType::Utf8, false),
                    Field::new("setting", DataType::Utf8, false),
                ])))
            } else {
                Some(Arc::new(Schema::new(vec![Field::new(
                    &name,
                    DataType::Utf8,
                    false,
                )])))
            }
        }
        _ => None,
    }
}

/// The text a SET value expression stands for.
fn value_text(expr: &Expr) -> String {
    match expr {
        Expr::Value(ValueWithSpan {
            value: Value::SingleQuotedString(s) | Value::DoubleQuotedString(s),
            ..
        }) => s.clone(),
        Expr::Value(v) => v.value.to_string(),
        Expr::Identifier(ident) => ident.value.clone(),
        other => other.to_string(),
    }
}

fn rows_result(schema: SchemaRef, columns: Vec<Vec<String>>) -> ServerResult<StatementResult> {
    rows_result_tagged(schema, columns, "SHOW")
}

/// A result of text columns, answered with command tag `tag`.
pub(super) fn rows_result_tagged(
    schema: SchemaRef,
    columns: Vec<Vec<String>>,
    tag: &str,
) -> ServerResult<StatementResult> {
    let arrays = columns
        .into_iter()
        .map(|c| Arc::new(StringArray::from(c)) as _)
        .collect();
    let batch = RecordBatch::try_new(Arc::clone(&schema), arrays)?;
    let stream = futures::stream::iter(vec![Ok(batch)]);
    Ok(Outcome::Rows {
        schema: Arc::clone(&schema),
        stream: Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
        tag: tag.into(),
    }
    .into())
}

impl Session {
    pub(super) async fn execute_utility(
        &mut self,
        statement: &Statement,
    ) -> ServerResult<StatementResult> {
        match statement {
            Statement::Set(set) => self.execute_set(set),
            Statement::Reset(reset) => {
                let changes = match &reset.reset {
                    Reset::ALL => self.settings.reset_all(),
                    Reset::ConfigurationParameter(name) => self
                        .settings
                        .set(&name.to_string(), None)?
                        .into_iter()
                        .collect(),
                };
                self.sync_context();
                let mut result = StatementResult::command("RESET", None);
                result.parameter_changes = changes;
                Ok(result)
            }
            Statement::ShowVariable { variable } if show_name(variable) == "jobs" => {
                self.show_jobs()
            }
            Statement::ShowVariable { variable } if show_name(variable) == "checkpoints" => {
                self.show_checkpoints()
            }
            Statement::ShowViews { .. } => self.show_materialized_views(),
            Statement::Explain { statement, .. } => match statement.as_ref() {
                Statement::CreateView(create) if create.materialized => {
                    self.explain_materialized_view(create, false).await
                }
                other => Err(ServerError::NotSupported(format!("EXPLAIN {other}"))),
            },
            Statement::ShowVariable { variable } => {
                let name = show_name(variable);
                let schema = result_schema(statement)
                    .ok_or_else(|| ServerError::Internal("SHOW without schema".into()))?;
                if name == "all" {
                    let (names, values) = self
                        .settings
                        .all()
                        .into_iter()
                        .map(|(n, v)| (n.to_string(), v))
                        .unzip();
                    rows_result(schema, vec![names, values])
                } else {
                    let (_, value) = self.settings.get(&name)?;
                    rows_result(schema, vec![vec![value]])
                }
            }
            Statement::Discard { object_type } => {
                if !matches!(object_type, DiscardObject::ALL) {
                    return Ok(StatementResult::command(
                        &format!("DISCARD {object_type}"),
                        None,
                    ));
                }
                let changes = self.settings.reset_all();
                self.sync_context();
                let mut result = StatementResult::command("DISCARD ALL", None);
                result.parameter_changes = changes;
                Ok(result)
            }
            Statement::StartTransaction { modes, .. } => self.begin(modes),
            Statement::Commit { .. } => self.commit().await,
            Statement::Rollback {
                savepoint: None, ..
            } => self.rollback(),
            Statement::Rollback {
                savepoint: Some(name),
                ..
            } => self.rollback_to_savepoint(name),
            Statement::Savepoint { name } => self.savepoint(name),
            Statement::Prepare {
                name, statement, ..
            } => self.prepare_named(name, statement).await,
            Statement::Deallocate { name, .. } => Ok(self.deallocate(name)),
            Statement::Copy { .. } => self.execute_copy(statement).await,
            Statement::Close { cursor } => self.close_cursor(cursor),
            Statement::ReleaseSavepoint { name } => self.release_savepoint(name),
            Statement::Truncate(truncate) if self.in_block() => {
                self.truncate_in_block(truncate).await
            }
            other => {
                self.before_ddl(&statement_kind(other))?;
                let result = self.execute_ddl(other).await;
                self.after_ddl();
                // A new or dropped schema can change what search_path means.
                self.sync_context();
                result
            }
        }
    }

    fn execute_set(&mut self, set: &Set) -> ServerResult<StatementResult> {
        let (name, value): (String, Option<String>) = match set {
            Set::SingleAssignment {
                variable, values, ..
            } => {
                let name = variable.to_string();
                let text: Vec<String> = values.iter().map(value_text).collect();
                let value = if text.len() == 1 && text[0].eq_ignore_ascii_case("default") {
                    None
                } else {
                    Some(text.join(", "))
                };
                (name, value)
            }
            Set::SetTimeZone { value, .. } => {
                let text = value_text(value);
                let value = (!text.eq_ignore_ascii_case("default")
                    && !text.eq_ignore_ascii_case("local"))
                .then_some(text);
                ("timezone".into(), value)
            }
            Set::SetNames { charset_name, .. } => {
                ("client_encoding".into(), Some(charset_name.value.clone()))
            }
            Set::SetTransaction { modes, .. } => return self.set_transaction(modes),
            other => return Err(ServerError::NotSupported(format!("{other}"))),
        };
        let change = self.settings.set(&name, value.as_deref())?;
        self.sync_context();
        let mut result = StatementResult::command("SET", None);
        result.parameter_changes.extend(change);
        Ok(result)
    }
}
