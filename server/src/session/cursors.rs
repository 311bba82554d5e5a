//! SQL-level prepared statements (`PREPARE` / `EXECUTE` / `DEALLOCATE`)
//! and cursors (`DECLARE … CURSOR` / `FETCH` / `CLOSE`), which
//! psycopg's server-side ("named") cursors and its statement cache use.
//!
//! A cursor holds its query's running result stream and hands out rows as
//! FETCH asks; cursors read forward only (`SCROLL`, `BACKWARD`, `PRIOR`,
//! `ABSOLUTE` are refused). A cursor without `WITH HOLD` lives until its
//! block ends, as in Postgres.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ParamValues;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    CloseCursor, Declare, Expr, FetchDirection, Ident, Statement, Value,
};
use futures::StreamExt;

use super::{Outcome, Prepared, Session, StatementResult};
use crate::error::{ServerError, ServerResult};

/// An open cursor: its result's schema, rows read ahead and the rest.
pub(super) struct Cursor {
    schema: SchemaRef,
    /// In a mutex only so the session stays `Sync`; reached through
    /// `get_mut`, never locked.
    stream: std::sync::Mutex<SendableRecordBatchStream>,
    ahead: VecDeque<RecordBatch>,
    hold: bool,
}

/// A planned `DECLARE … CURSOR`.
#[derive(Debug)]
pub struct CursorDecl {
    name: String,
    hold: bool,
    pub(super) plan: datafusion::logical_expr::LogicalPlan,
}

/// The session's prepared statements and cursors.
#[derive(Default)]
pub(super) struct Named {
    statements: HashMap<String, Arc<Prepared>>,
    cursors: HashMap<String, Cursor>,
}

/// How many rows a FETCH direction asks for; None: all.
fn fetch_count(direction: &FetchDirection) -> ServerResult<Option<u64>> {
    let number = |value: &datafusion::sql::sqlparser::ast::ValueWithSpan| match &value.value {
        Value::Number(n, _) => n
            .parse::<u64>()
            .map_err(|_| ServerError::NotSupported(format!("FETCH {n} (a backward count)"))),
        other => Err(ServerError::InvalidParameter(format!(
            "FETCH count {other}"
        ))),
    };
    match direction {
        FetchDirection::Next | FetchDirection::Forward { limit: None } => Ok(Some(1)),
        FetchDirection::Count { limit } | FetchDirection::Forward { limit: Some(limit) } => {
            number(limit).map(Some)
        }
        FetchDirection::All | FetchDirection::ForwardAll => Ok(None),
        other => Err(ServerError::NotSupported(format!(
            "FETCH {other} (cursors read forward only)"
        ))),
    }
}

impl Session {
    /// The result columns of `EXECUTE name` or `FETCH … FROM name`, known
    /// once the statement or cursor exists.
    pub(super) fn named_result_schema(&self, statement: &Statement) -> Option<SchemaRef> {
        match statement {
            Statement::Execute {
                name: Some(name), ..
            } => {
                let name = runnel_planner::ddl::name_parts(name).ok()?.pop()?;
                self.named.statements.get(&name)?.result_schema()
            }
            Statement::Fetch { name, .. } => {
                let name = runnel_planner::ddl::normalize_ident(name);
                Some(Arc::clone(&self.named.cursors.get(&name)?.schema))
            }
            _ => None,
        }
    }

    /// The result columns of open cursor `name` (clients describe a SQL
    /// cursor as a protocol portal of that name).
    pub fn cursor_schema(&self, name: &str) -> Option<SchemaRef> {
        self.named.cursors.get(name).map(|c| Arc::clone(&c.schema))
    }

    /// `PREPARE name AS statement`.
    pub(super) async fn prepare_named(
        &mut self,
        name: &Ident,
        statement: &Statement,
    ) -> ServerResult<StatementResult> {
        let name = runnel_planner::ddl::normalize_ident(name);
        if self.named.statements.contains_key(&name) {
            return Err(ServerError::DuplicatePreparedStatement(name));
        }
        let prepared = Box::pin(self.prepare(statement.clone(), &statement.to_string())).await?;
        self.named.statements.insert(name, Arc::new(prepared));
        Ok(StatementResult::command("PREPARE", None))
    }

    /// `EXECUTE name (values…)`.
    pub(super) async fn execute_named(
        &mut self,
        name: &datafusion::sql::sqlparser::ast::ObjectName,
        parameters: &[Expr],
    ) -> ServerResult<StatementResult> {
        let name = runnel_planner::ddl::name_parts(name)?
            .pop()
            .unwrap_or_default();
        let prepared = self
            .named
            .statements
            .get(&name)
            .cloned()
            .ok_or_else(|| ServerError::UndefinedPreparedStatement(name.clone()))?;
        let types = prepared.param_types()?;
        let mut values = Vec::with_capacity(parameters.len());
        if !parameters.is_empty() {
            let list: Vec<String> = parameters.iter().map(Expr::to_string).collect();
            let batches = self
                .ctx
                .sql(&format!("SELECT {}", list.join(", ")))
                .await?
                .collect()
                .await?;
            let batch = batches
                .first()
                .ok_or_else(|| ServerError::Internal("EXECUTE parameters gave no row".into()))?;
            for (i, column) in batch.columns().iter().enumerate() {
                let value = ScalarValue::try_from_array(column, 0)?;
                let value = match types.get(i).cloned().flatten() {
                    Some(t) if value.data_type() != t && !value.is_null() => {
                        value.cast_to(&t).map_err(|e| {
                            ServerError::InvalidParameter(format!("parameter ${}: {e}", i + 1))
                        })?
                    }
                    _ => value,
                };
                values.push(value.into());
            }
        }
        if values.len() != types.len() {
            return Err(ServerError::InvalidParameter(format!(
                "wrong number of parameters for prepared statement \"{name}\": expected {}, got {}",
                types.len(),
                values.len()
            )));
        }
        Box::pin(self.execute(&prepared, &ParamValues::List(values))).await
    }

    /// `DEALLOCATE [PREPARE] name | ALL`. A name the session's SQL
    /// statements lack may be a protocol-level statement: the result says
    /// so for the wire layer to forget.
    pub(super) fn deallocate(&mut self, name: &Ident) -> StatementResult {
        if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all") {
            self.named.statements.clear();
            let mut result = StatementResult::command("DEALLOCATE ALL", None);
            result.forget_statement = Some(None);
            return result;
        }
        let name = runnel_planner::ddl::normalize_ident(name);
        let mut result = StatementResult::command("DEALLOCATE", None);
        if self.named.statements.remove(&name).is_none() {
            result.forget_statement = Some(Some(name));
        }
        result
    }

    /// Plans `DECLARE name [NO SCROLL] CURSOR [WITH | WITHOUT HOLD] FOR
    /// query` (its query may take parameters).
    pub(super) async fn prepare_cursor(&self, declares: &[Declare]) -> ServerResult<CursorDecl> {
        let [declare] = declares else {
            return Err(ServerError::NotSupported(
                "more than one declaration in one DECLARE".into(),
            ));
        };
        let query = declare
            .for_query
            .as_ref()
            .ok_or_else(|| ServerError::NotSupported("DECLARE without a cursor query".into()))?;
        if declare.scroll == Some(true) {
            return Err(ServerError::NotSupported(
                "SCROLL cursors (cursors read forward only)".into(),
            ));
        }
        if declare.binary == Some(true) {
            return Err(ServerError::NotSupported("BINARY cursors".into()));
        }
        let [name] = declare.names.as_slice() else {
            return Err(ServerError::NotSupported("DECLARE of several names".into()));
        };
        Ok(CursorDecl {
            name: runnel_planner::ddl::normalize_ident(name),
            hold: declare.hold == Some(true),
            plan: self.plan(Statement::Query(query.clone())).await?,
        })
    }

    /// Opens a declared cursor with `params`.
    pub(super) async fn declare_cursor(
        &mut self,
        declared: &CursorDecl,
        params: &ParamValues,
    ) -> ServerResult<StatementResult> {
        if !declared.hold && !self.in_block() {
            return Err(ServerError::NoActiveTransaction("DECLARE CURSOR".into()));
        }
        if self.named.cursors.contains_key(&declared.name) {
            return Err(ServerError::DuplicateCursor(declared.name.clone()));
        }
        let plan = declared.plan.clone().replace_params_with_values(params)?;
        let frame = self.ctx.execute_logical_plan(plan).await?;
        let schema = Arc::clone(frame.schema().inner());
        let stream = frame.execute_stream().await?;
        self.named.cursors.insert(
            declared.name.clone(),
            Cursor {
                schema,
                stream: std::sync::Mutex::new(stream),
                ahead: VecDeque::new(),
                hold: declared.hold,
            },
        );
        Ok(StatementResult::command("DECLARE CURSOR", None))
    }

    /// `FETCH direction FROM name`: the next rows of the cursor.
    pub(super) async fn fetch(
        &mut self,
        name: &Ident,
        direction: &FetchDirection,
    ) -> ServerResult<StatementResult> {
        let name = runnel_planner::ddl::normalize_ident(name);
        let mut wanted = fetch_count(direction)?.unwrap_or(u64::MAX);
        let cursor = self
            .named
            .cursors
            .get_mut(&name)
            .ok_or_else(|| ServerError::UndefinedCursor(name.clone()))?;
        let mut rows = vec![];
        while wanted > 0 {
            let batch = match cursor.ahead.pop_front() {
                Some(batch) => batch,
                None => match cursor
                    .stream
                    .get_mut()
                    .unwrap_or_else(|p| p.into_inner())
                    .next()
                    .await
                {
                    Some(batch) => batch?,
                    None => break,
                },
            };
            let take = (batch.num_rows() as u64).min(wanted) as usize;
            if take < batch.num_rows() {
                cursor
                    .ahead
                    .push_front(batch.slice(take, batch.num_rows() - take));
            }
            rows.push(batch.slice(0, take));
            wanted -= take as u64;
        }
        let schema = Arc::clone(&cursor.schema);
        let stream = futures::stream::iter(rows.into_iter().map(Ok));
        Ok(Outcome::Rows {
            schema: Arc::clone(&schema),
            stream: Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
            tag: "FETCH".into(),
        }
        .into())
    }

    /// `CLOSE name | ALL`.
    pub(super) fn close_cursor(&mut self, cursor: &CloseCursor) -> ServerResult<StatementResult> {
        match cursor {
            CloseCursor::All => self.named.cursors.clear(),
            CloseCursor::Specific { name } => {
                let name = runnel_planner::ddl::normalize_ident(name);
                if self.named.cursors.remove(&name).is_none() {
                    return Err(ServerError::UndefinedCursor(name));
                }
            }
        }
        Ok(StatementResult::command("CLOSE CURSOR", None))
    }

    /// Closes the cursors that end with their block.
    pub(super) fn close_block_cursors(&mut self) {
        self.named.cursors.retain(|_, cursor| cursor.hold);
    }
}
