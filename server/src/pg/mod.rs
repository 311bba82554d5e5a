//! The PostgreSQL wire protocol, through `pgwire`. Every pgwire type stays
//! inside this module: a connection gets its own [`ConnectionHandler`],
//! which owns the connection's [`Session`] and answers the simple and the
//! extended query protocol with it.

mod copy_in;
mod copy_out;
mod encode;
mod params;
mod vectors;

use std::fmt::Debug;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use futures::{FutureExt, Sink, SinkExt};
use pgwire::api::auth::StartupHandler;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionManager, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::response::{NoticeResponse, TransactionStatus};
use pgwire::messages::startup::ParameterStatus;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::database::Database;
use crate::error::ServerError;
use crate::session::{Outcome, Prepared, Session, StatementResult};

/// The PostgreSQL error an error becomes on the wire.
pub fn sql_error_to_pgwire(error: &ServerError) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(error)))
}

fn error_info(error: &ServerError) -> ErrorInfo {
    let sql = error.to_sql_error();
    let mut info = ErrorInfo::new("ERROR".into(), sql.code.into(), sql.message);
    info.position = sql.position.map(|p| p.to_string());
    info
}

/// The text a panic carried.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// Serves one accepted connection until it closes.
pub async fn serve_connection(
    db: Arc<Database>,
    manager: Arc<ConnectionManager>,
    socket: TcpStream,
) {
    db.connections.fetch_add(1, Ordering::Relaxed);
    let handler = Arc::new(ConnectionHandler {
        db: Arc::clone(&db),
        session: Arc::new(Mutex::new(None)),
        manager: Arc::clone(&manager),
        copy_in: Arc::new(std::sync::Mutex::new(None)),
    });
    let handlers = Handlers {
        handler,
        cancel: Arc::new(DefaultCancelHandler::new(manager)),
    };
    if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
    db.connections.fetch_sub(1, Ordering::Relaxed);
}

struct Handlers {
    handler: Arc<ConnectionHandler>,
    cancel: Arc<DefaultCancelHandler>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.handler)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.handler)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.handler)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.cancel)
    }

    fn copy_handler(&self) -> Arc<impl pgwire::api::copy::CopyHandler> {
        Arc::clone(&self.handler)
    }
}

/// The handler of one connection.
pub struct ConnectionHandler {
    db: Arc<Database>,
    /// Created once the startup message names the user.
    session: Arc<Mutex<Option<Session>>>,
    manager: Arc<ConnectionManager>,
    /// The `COPY … FROM STDIN` receiving data, if one is.
    copy_in: Arc<std::sync::Mutex<Option<copy_in::CopyIn>>>,
}

#[async_trait]
impl NoopStartupHandler for ConnectionHandler {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(Arc::clone(&self.manager))
    }

    async fn post_startup<C>(
        &self,
        client: &mut C,
        _message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let user = client
            .metadata()
            .get("user")
            .cloned()
            .unwrap_or_else(|| "runnel".into());
        let session = Session::new(Arc::clone(&self.db), &user);
        // The values the default startup sent are replaced by ours: clients
        // keep the last ParameterStatus of each name.
        for (name, value) in session.settings.reported() {
            client
                .feed(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                    name, value,
                )))
                .await?;
        }
        tracing::debug!(user = %user, "session started");
        *self.session.lock().await = Some(session);
        Ok(())
    }
}

async fn send_side_messages<C>(client: &mut C, result: &mut StatementResult) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let notices = std::mem::take(&mut result.notices);
    let changes = std::mem::take(&mut result.parameter_changes);
    for (severity, message) in notices {
        let info = ErrorInfo::new(severity.to_string(), "01000".into(), message);
        client
            .feed(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(
                info,
            )))
            .await?;
    }
    for (name, value) in changes {
        client
            .feed(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                name, value,
            )))
            .await?;
    }
    Ok(())
}

/// Forgets the protocol-level statement a `DEALLOCATE` named, failing as
/// Postgres does when there is none. `DEALLOCATE ALL` needs nothing here:
/// pgwire replaces a statement whose name a client parses again.
fn forget_statement<C>(client: &C, result: &StatementResult) -> Result<(), ServerError>
where
    C: ClientPortalStore,
    C::PortalStore: PortalStore,
{
    if let Some(Some(name)) = &result.forget_statement {
        if client.portal_store().get_statement(name).is_none() {
            return Err(ServerError::UndefinedPreparedStatement(name.clone()));
        }
        client.portal_store().rm_statement(name);
    }
    Ok(())
}

impl ConnectionHandler {
    /// Runs one prepared statement: the failed-block rule, the timeout, and
    /// a panic caught so only this statement fails.
    async fn run(
        &self,
        prepared: &Prepared,
        params: &ParamValues,
        failed_block: bool,
    ) -> Result<(StatementResult, Arc<pgwire::types::format::FormatOptions>), ServerError> {
        let mut guard = self.session.lock().await;
        let session = guard
            .as_mut()
            .ok_or_else(|| ServerError::Internal("query before startup finished".into()))?;
        if failed_block && !prepared.rolls_back_to_savepoint() {
            if !prepared.ends_transaction() {
                return Err(ServerError::InFailedTransaction);
            }
            session.end_failed_block()?;
            let options = encode::format_options(&session.settings);
            return Ok((
                StatementResult::from(Outcome::TransactionEnd("ROLLBACK".into())),
                options,
            ));
        }
        let timeout = session.settings.statement_timeout();
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let work = AssertUnwindSafe(async {
            let mut result = session.execute(prepared, params).await?;
            result.outcome = prefetch(result.outcome, deadline).await?;
            Ok::<_, ServerError>(result)
        })
        .catch_unwind();
        let outcome = match timeout {
            Some(limit) => tokio::time::timeout(limit, work)
                .await
                .map_err(|_| ServerError::StatementTimeout)?,
            None => work.await,
        };
        let result = match outcome {
            Ok(result) => result?,
            Err(panic) => {
                let what = panic_message(panic.as_ref());
                tracing::error!(sql = %prepared.sql, panic = %what, "statement panicked");
                return Err(ServerError::Internal(format!(
                    "statement failed unexpectedly: {what}"
                )));
            }
        };
        Ok((result, encode::format_options(&session.settings)))
    }

    /// Plans one parsed statement.
    async fn prepare_one(
        &self,
        statement: runnel_planner::parser::Command,
    ) -> Result<Prepared, ServerError> {
        let mut guard = self.session.lock().await;
        let session = guard
            .as_mut()
            .ok_or_else(|| ServerError::Internal("query before startup finished".into()))?;
        let text = statement.to_string();
        match AssertUnwindSafe(session.prepare_command(statement, &text))
            .catch_unwind()
            .await
        {
            Ok(prepared) => prepared,
            Err(_) => {
                tracing::error!(sql = %text, "planning panicked");
                Err(ServerError::Internal(
                    "planning the statement failed unexpectedly".into(),
                ))
            }
        }
    }
}

/// Result memory read ahead while the statement can still be cancelled or
/// time out; rows past it stream afterwards, under the timeout only.
const PREFETCH_BYTES: usize = 64 << 20;

/// Runs a query far enough that its errors, its cancellation and its
/// timeout all happen while the statement is still running: pgwire listens
/// for CancelRequest only until the handler returns, and execution is lazy.
async fn prefetch(
    outcome: Outcome,
    deadline: Option<tokio::time::Instant>,
) -> Result<Outcome, ServerError> {
    use futures::StreamExt;
    let Outcome::Rows {
        schema,
        mut stream,
        tag,
    } = outcome
    else {
        return Ok(outcome);
    };
    let mut buffered = vec![];
    let mut bytes = 0;
    let mut finished = true;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        bytes += batch.get_array_memory_size();
        buffered.push(Ok(batch));
        if bytes > PREFETCH_BYTES {
            finished = false;
            break;
        }
    }
    let head = futures::stream::iter(buffered);
    let stream: datafusion::execution::SendableRecordBatchStream = if finished {
        Box::pin(
            datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                std::sync::Arc::clone(&schema),
                head,
            ),
        )
    } else {
        let tail = stream.take_until(async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => futures::future::pending().await,
            }
        });
        Box::pin(
            datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                std::sync::Arc::clone(&schema),
                head.chain(tail),
            ),
        )
    };
    Ok(Outcome::Rows {
        schema,
        stream,
        tag,
    })
}

fn to_response(
    result: StatementResult,
    format: &Format,
    options: &Arc<pgwire::types::format::FormatOptions>,
    copy_in: &std::sync::Mutex<Option<copy_in::CopyIn>>,
) -> PgWireResult<Response> {
    Ok(match result.outcome {
        Outcome::Rows {
            schema,
            stream,
            tag,
        } => {
            let fields = Arc::new(encode::fields(&schema, format, options)?);
            let rows = encode::row_stream(Arc::clone(&fields), stream);
            let mut response = QueryResponse::new(fields, rows);
            response.set_command_tag(&tag);
            Response::Query(response)
        }
        Outcome::Command { tag, rows } => {
            let mut t = Tag::new(&tag);
            if let Some(rows) = rows {
                t = t.with_rows(rows as usize);
            }
            Response::Execution(t)
        }
        Outcome::TransactionStart => Response::TransactionStart(Tag::new("BEGIN")),
        Outcome::TransactionEnd(tag) => Response::TransactionEnd(Tag::new(&tag)),
        Outcome::CopyIn { into, format } => {
            let state = copy_in::CopyIn::new(into, format).map_err(|e| sql_error_to_pgwire(&e))?;
            let response = state.response();
            *copy_in.lock().unwrap_or_else(|p| p.into_inner()) = Some(state);
            Response::CopyIn(response)
        }
        Outcome::CopyOut {
            schema,
            stream,
            format,
        } => Response::CopyOut(copy_out::copy_out(schema, stream, format, options)?),
    })
}

/// Whether `sql` starts with ROLLBACK TO SAVEPOINT.
fn is_rollback_to_savepoint(sql: &str) -> bool {
    use datafusion::sql::sqlparser::ast::Statement;
    matches!(
        runnel_planner::parser::parse_commands(sql).ok().and_then(|c| c.into_iter().next()),
        Some(runnel_planner::parser::Command::Sql(s))
            if matches!(s.as_ref(), Statement::Rollback { savepoint: Some(_), .. })
    )
}

/// ROLLBACK TO SAVEPOINT brings a failed block back: pgwire keeps a failed
/// block failed whatever a statement answers, so the status is set back
/// to "in a block" before the statement runs (it fails the block again if
/// the savepoint is not there).
fn reopen_failed_block<C: ClientInfo>(client: &mut C) {
    if client.transaction_status() == TransactionStatus::Error {
        client.set_transaction_status(TransactionStatus::Transaction);
    }
}

#[async_trait]
impl SimpleQueryHandler for ConnectionHandler {
    async fn on_query<C>(
        &self,
        client: &mut C,
        query: pgwire::messages::simplequery::Query,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if client.transaction_status() == TransactionStatus::Error
            && is_rollback_to_savepoint(&query.query)
        {
            reopen_failed_block(client);
        }
        self._on_query(client, query).await
    }

    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        tracing::debug!(sql = %query, "simple query");
        let statements = match runnel_planner::parser::parse_commands(query) {
            Ok(s) => s,
            Err(e) => return Ok(vec![Response::Error(Box::new(error_info(&e.into())))]),
        };
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::with_capacity(statements.len());
        let mut failed = client.transaction_status() == TransactionStatus::Error;
        // Each statement is planned after the previous one ran, so a script
        // can create a table and use it in one query string.
        for statement in statements {
            let outcome = match self.prepare_one(statement).await {
                Ok(prepared) => {
                    self.run(&prepared, &ParamValues::List(vec![]), failed)
                        .await
                }
                Err(e) => Err(e),
            };
            let outcome = outcome.and_then(|(result, options)| {
                forget_statement(client, &result).map(|()| (result, options))
            });
            match outcome {
                Ok((mut result, options)) => {
                    send_side_messages(client, &mut result).await?;
                    let response =
                        to_response(result, &Format::UnifiedText, &options, &self.copy_in)?;
                    if matches!(response, Response::TransactionEnd(_)) {
                        failed = false;
                    }
                    responses.push(response);
                }
                Err(e) => {
                    responses.push(Response::Error(Box::new(error_info(&e))));
                    // Postgres stops a multi-statement query at its first error.
                    break;
                }
            }
        }
        Ok(responses)
    }
}

#[async_trait]
impl QueryParser for ConnectionHandler {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        tracing::debug!(sql = %sql, "parse");
        let mut statements = runnel_planner::parser::parse_commands(sql)
            .map_err(|e| sql_error_to_pgwire(&ServerError::from(e)))?;
        match statements.len() {
            0 => Ok(None),
            1 => {
                let statement = statements.remove(0);
                self.prepare_one(statement)
                    .await
                    .map(Some)
                    .map_err(|e| sql_error_to_pgwire(&e))
            }
            _ => Err(sql_error_to_pgwire(&ServerError::Plan(
                runnel_planner::PlanError::Syntax {
                    message: "cannot insert multiple commands into a prepared statement".into(),
                    position: None,
                },
            ))),
        }
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        encode::parameter_types(stmt)
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match stmt.result_schema() {
            Some(schema) => {
                let options = Arc::new(pgwire::types::format::FormatOptions::default());
                encode::fields(
                    &schema,
                    column_format.unwrap_or(&Format::UnifiedText),
                    &options,
                )
            }
            None => Ok(vec![]),
        }
    }
}

#[async_trait]
impl ExtendedQueryHandler for ConnectionHandler {
    type Statement = Prepared;
    type QueryParser = ConnectionHandler;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::new(ConnectionHandler {
            db: Arc::clone(&self.db),
            session: Arc::clone(&self.session),
            manager: Arc::clone(&self.manager),
            copy_in: Arc::clone(&self.copy_in),
        })
    }

    async fn on_execute<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::extendedquery::Execute,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if client.transaction_status() == TransactionStatus::Error {
            let name = message.name.as_deref().unwrap_or(pgwire::api::DEFAULT_NAME);
            if let Some(pgwire::api::store::Entry::Value(portal)) =
                client.portal_store().get_portal(name)
                && portal.statement.statement.rolls_back_to_savepoint()
            {
                reopen_failed_block(client);
            }
        }
        self._on_execute(client, message).await
    }

    /// As pgwire's, except that a statement returning no rows is described
    /// with NoData even when it takes parameters (pgwire answers an empty
    /// RowDescription then, and pgjdbc takes that for a query).
    async fn on_describe<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::extendedquery::Describe,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use pgwire::messages::data::{NoData, ParameterDescription};
        use pgwire::messages::extendedquery::TARGET_TYPE_BYTE_STATEMENT;
        if message.target_type == TARGET_TYPE_BYTE_STATEMENT {
            let name = message.name.as_deref().unwrap_or(pgwire::api::DEFAULT_NAME);
            if let Some(pgwire::api::store::Entry::Value(stored)) =
                client.portal_store().get_statement(name)
                && stored.statement.result_schema().is_none()
            {
                let described = self.do_describe_statement(client, &stored).await?;
                let oids = described.parameters.iter().map(|t| t.oid()).collect();
                client
                    .send(PgWireBackendMessage::ParameterDescription(
                        ParameterDescription::new(oids),
                    ))
                    .await?;
                client
                    .send(PgWireBackendMessage::NoData(NoData::new()))
                    .await?;
                return Ok(());
            }
        }
        if message.target_type == pgwire::messages::extendedquery::TARGET_TYPE_BYTE_PORTAL
            && let Some(name) = message.name.as_deref()
            && client.portal_store().get_portal(name).is_none()
        {
            // A SQL cursor (DECLARE) is a portal too, as in Postgres.
            let schema = self
                .session
                .lock()
                .await
                .as_ref()
                .and_then(|session| session.cursor_schema(name));
            if let Some(schema) = schema {
                let options = Arc::new(pgwire::types::format::FormatOptions::default());
                let fields = encode::fields(&schema, &Format::UnifiedText, &options)?;
                let described = pgwire::api::results::DescribePortalResponse::new(fields);
                return pgwire::api::query::send_describe_response(client, &described).await;
            }
        }
        self._on_describe(client, message).await
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        tracing::debug!(sql = %prepared.sql, "execute");
        let params = params::parameter_values(portal)?;
        let failed = client.transaction_status() == TransactionStatus::Error;
        let outcome = self
            .run(prepared, &params, failed)
            .await
            .and_then(|(result, options)| {
                forget_statement(client, &result).map(|()| (result, options))
            });
        match outcome {
            Ok((mut result, options)) => {
                send_side_messages(client, &mut result).await?;
                to_response(
                    result,
                    &portal.result_column_format,
                    &options,
                    &self.copy_in,
                )
            }
            Err(e) => Err(sql_error_to_pgwire(&e)),
        }
    }
}
