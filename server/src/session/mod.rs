//! One client session: its settings, its DataFusion context, and the
//! preparing and running of statements. Protocol-free: the pgwire layer
//! turns [`StatementResult`]s into messages.

mod alter_columns;
mod alter_table;
mod checkpoints;
mod checks;
mod copy;
mod create_table_as;
mod cursors;
mod ddl;
mod dml;
mod index_ddl;
mod insert_select;
mod sequence_ddl;
mod settings;
mod sinks;
mod streaming;
mod transaction;
mod upsert;
mod utility;

pub use checkpoints::started_at as checkpoint_started_at;
pub use copy::{CopyFormat, CopyInto, CopyKind};
pub use dml::DmlPlan;
pub use settings::Settings;

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, FieldRef, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{ObjectName, Statement};
use runnel_planner::catalog::{DEFAULT_SCHEMA, RelationName};
use runnel_planner::ddl::name_parts;
use runnel_planner::parser::Command;

use crate::database::{Database, constant_text_udf};
use crate::error::{ServerError, ServerResult};

/// A statement ready to run, possibly with `$n` parameters.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub sql: String,
    pub kind: PreparedKind,
}

/// What kind of work a prepared statement is.
#[derive(Debug, Clone)]
pub enum PreparedKind {
    /// A query DataFusion runs (SELECT, VALUES, EXPLAIN, SHOW as a query).
    Query(LogicalPlan),
    /// INSERT, UPDATE or DELETE.
    Dml(Arc<DmlPlan>),
    /// Everything run from its syntax tree: DDL, SET, SHOW, transactions.
    Utility(Box<Statement>),
    /// Runnel's own commands.
    Streaming(StreamingCommand),
    /// `EXECUTE name` or `FETCH … FROM cursor`, with the result columns
    /// of the statement or cursor named, as they were when prepared.
    Named {
        statement: Box<Statement>,
        schema: Option<SchemaRef>,
    },
    /// `DECLARE … CURSOR FOR query`, its query planned.
    DeclareCursor(Arc<cursors::CursorDecl>),
}

/// A Runnel command about materialized views.
#[derive(Debug, Clone)]
pub enum StreamingCommand {
    Flush,
    Check(RelationName),
    /// `REFRESH MATERIALIZED VIEW name`.
    Refresh(RelationName),
    CreateSource {
        create: Box<Statement>,
        options: std::collections::BTreeMap<String, String>,
        watermark: Option<runnel_planner::parser::WatermarkClause>,
    },
    /// `CREATE MATERIALIZED VIEW … EMIT ON WINDOW CLOSE`, or its EXPLAIN.
    EmitOnWindowClose(Box<Statement>),
    /// `CREATE SINK name FROM relation | AS query WITH (…)`.
    CreateSink {
        name: datafusion::sql::sqlparser::ast::ObjectName,
        if_not_exists: bool,
        query: Box<datafusion::sql::sqlparser::ast::Query>,
        options: std::collections::BTreeMap<String, String>,
        emit_on_window_close: bool,
    },
    /// `DROP SINK [IF EXISTS] name`.
    DropSink {
        name: datafusion::sql::sqlparser::ast::ObjectName,
        if_exists: bool,
    },
    /// `CREATE TABLE … (…, WATERMARK FOR col AS expr)`.
    CreateTable {
        create: Box<Statement>,
        watermark: runnel_planner::parser::WatermarkClause,
    },
}

impl Prepared {
    /// The types of `$1..$n` (fields, so json keeps its extension
    /// metadata), None where nothing decides one.
    pub fn param_fields(&self) -> ServerResult<Vec<Option<FieldRef>>> {
        let plan = match &self.kind {
            PreparedKind::Query(plan) => plan,
            PreparedKind::Dml(dml) => &dml.source,
            PreparedKind::DeclareCursor(declared) => &declared.plan,
            PreparedKind::Utility(_) | PreparedKind::Streaming(_) | PreparedKind::Named { .. } => {
                return Ok(vec![]);
            }
        };
        let fields = plan.get_parameter_fields()?;
        let mut numbered: Vec<(usize, Option<FieldRef>)> = fields
            .into_iter()
            .filter_map(|(name, t)| name.trim_start_matches('$').parse().ok().map(|n| (n, t)))
            .collect();
        numbered.sort_by_key(|(n, _)| *n);
        let count = numbered.last().map(|(n, _)| *n).unwrap_or(0);
        let mut out = vec![None; count];
        for (n, t) in numbered {
            if n >= 1 {
                out[n - 1] = t;
            }
        }
        Ok(out)
    }

    /// The Arrow types of `$1..$n`.
    pub fn param_types(&self) -> ServerResult<Vec<Option<DataType>>> {
        Ok(self
            .param_fields()?
            .into_iter()
            .map(|f| f.map(|f| f.data_type().clone()))
            .collect())
    }

    /// The columns the statement returns, None for commands without rows.
    pub fn result_schema(&self) -> Option<SchemaRef> {
        match &self.kind {
            PreparedKind::Query(plan) => Some(Arc::clone(plan.schema().inner())),
            PreparedKind::Dml(dml) => dml.returning.as_ref().map(|r| Arc::clone(&r.schema)),
            PreparedKind::Utility(statement) => utility::result_schema(statement),
            PreparedKind::Named { schema, .. } => schema.clone(),
            PreparedKind::DeclareCursor(_) => None,
            PreparedKind::Streaming(StreamingCommand::EmitOnWindowClose(statement)) => {
                utility::result_schema(statement)
            }
            PreparedKind::Streaming(
                StreamingCommand::Flush
                | StreamingCommand::Refresh(_)
                | StreamingCommand::CreateSource { .. }
                | StreamingCommand::CreateSink { .. }
                | StreamingCommand::DropSink { .. }
                | StreamingCommand::CreateTable { .. },
            ) => None,
            PreparedKind::Streaming(StreamingCommand::Check(_)) => Some(streaming::check_schema()),
        }
    }

    /// True for COMMIT, ROLLBACK and ROLLBACK TO SAVEPOINT, the statements
    /// a failed transaction block still accepts.
    pub fn ends_transaction(&self) -> bool {
        matches!(
            &self.kind,
            PreparedKind::Utility(s) if matches!(s.as_ref(), Statement::Commit { .. } | Statement::Rollback { .. })
        )
    }

    /// True for ROLLBACK TO SAVEPOINT, which brings a failed block back.
    pub fn rolls_back_to_savepoint(&self) -> bool {
        matches!(
            &self.kind,
            PreparedKind::Utility(s) if matches!(s.as_ref(), Statement::Rollback { savepoint: Some(_), .. })
        )
    }
}

/// What running a statement produced.
pub enum Outcome {
    /// Rows, streamed; `tag` is the command tag without the row count.
    Rows {
        schema: SchemaRef,
        stream: SendableRecordBatchStream,
        tag: String,
    },
    /// A command; `rows` is appended to the tag when present.
    Command { tag: String, rows: Option<u64> },
    /// BEGIN or START TRANSACTION.
    TransactionStart,
    /// COMMIT or ROLLBACK, with the tag to send.
    TransactionEnd(String),
    /// `COPY … FROM STDIN`: the client sends rows for `into` next.
    CopyIn { into: CopyInto, format: CopyFormat },
    /// `COPY … TO STDOUT`: rows to send in the copy format.
    CopyOut {
        schema: SchemaRef,
        stream: SendableRecordBatchStream,
        format: CopyFormat,
    },
}

/// The outcome plus what the client should also hear.
pub struct StatementResult {
    pub outcome: Outcome,
    /// NOTICE or WARNING texts: (severity, message).
    pub notices: Vec<(&'static str, String)>,
    /// Settings whose new value must be sent as ParameterStatus.
    pub parameter_changes: Vec<(String, String)>,
    /// `DEALLOCATE` of a statement the session's SQL `PREPARE` did not
    /// make: the protocol-level statement to forget (None: all of them).
    pub forget_statement: Option<Option<String>>,
}

impl StatementResult {
    fn command(tag: &str, rows: Option<u64>) -> Self {
        Self::from(Outcome::Command {
            tag: tag.to_string(),
            rows,
        })
    }
}

impl From<Outcome> for StatementResult {
    fn from(outcome: Outcome) -> Self {
        Self {
            outcome,
            notices: vec![],
            parameter_changes: vec![],
            forget_statement: None,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.db.advisory_locks.release_all(self.id, None);
    }
}

/// A client session.
pub struct Session {
    /// The session's number (its `pg_backend_pid`), unique in the process.
    id: u64,
    db: Arc<Database>,
    ctx: SessionContext,
    pub settings: Settings,
    user: String,
    /// The open BEGIN … COMMIT block, if any.
    block: Option<transaction::Block>,
    /// The open block's pending rows, shared with the session's table
    /// scans through the DataFusion session config.
    block_writes: Arc<crate::tables::BlockWrites>,
    /// `PREPARE`d statements and open cursors.
    named: cursors::Named,
    /// The last value this session's `nextval` got per sequence (`currval`).
    sequence_values: Arc<std::sync::Mutex<std::collections::HashMap<RelationName, i64>>>,
}

impl Session {
    /// A new session of `user`.
    pub fn new(db: Arc<Database>, user: &str) -> Self {
        let ctx = db.new_context();
        let block_writes = Arc::new(crate::tables::BlockWrites::default());
        ctx.state_ref()
            .write()
            .config_mut()
            .set_extension(Arc::clone(&block_writes));
        let settings = Settings::new(db.config.parallelism_default);
        let id = db
            .next_session_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut session = Self {
            id,
            db,
            ctx,
            settings,
            user: user.to_string(),
            block: None,
            block_writes,
            named: cursors::Named::default(),
            sequence_values: Arc::default(),
        };
        session.sync_context();
        session
    }

    /// The session's number, which `pg_backend_pid()` tells.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The database the session belongs to.
    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    /// The catalog as this session sees it: the open block's draft when
    /// the block ran DDL, else the live catalog.
    pub fn catalog(&self) -> &Arc<crate::catalog::Catalog> {
        self.block
            .as_ref()
            .and_then(|b| b.draft.as_ref())
            .unwrap_or(&self.db.catalog)
    }

    /// Points the session's name resolution at `catalog()` (after a block's
    /// draft began or ended).
    fn resolve_in_current_catalog(&mut self) -> ServerResult<()> {
        let catalog = Arc::clone(self.catalog());
        let state = self.db.state_over(self.ctx.state(), &catalog)?;
        self.ctx = SessionContext::new_with_state(state);
        self.sync_context();
        Ok(())
    }

    /// The schema new objects go to: the first schema of `search_path` that
    /// exists.
    pub fn current_schema(&self) -> String {
        self.settings
            .search_path()
            .into_iter()
            .find(|s| self.catalog().has_schema(s))
            .unwrap_or_else(|| DEFAULT_SCHEMA.to_string())
    }

    /// Brings the DataFusion context in line with the settings.
    fn sync_context(&mut self) {
        let schema = self.current_schema();
        let time_zone = match self.settings.value("timezone").as_str() {
            "UTC" => "+00:00".to_string(),
            other => other.to_string(),
        };
        {
            let state = self.ctx.state_ref();
            let mut state = state.write();
            let options = state.config_mut().options_mut();
            options.catalog.default_schema = schema.clone();
            options.execution.time_zone = Some(time_zone);
            options
                .extensions
                .insert(crate::catalog::SessionSettings(self.settings.listed()));
        }
        self.ctx
            .register_udf(constant_text_udf("current_schema", &schema));
        self.ctx
            .register_udf(constant_text_udf("session_user", &self.user));
        self.ctx
            .register_udf(constant_text_udf("current_user", &self.user));
        let settings = self
            .settings
            .all()
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .collect();
        self.ctx
            .register_udf(crate::catalog::current_setting(settings));
        for function in
            crate::sequences::sequence_functions(self.catalog(), &schema, &self.sequence_values)
        {
            self.ctx.register_udf(function);
        }
        let search_path = self.settings.search_path();
        for function in crate::catalog::definition_functions(self.catalog(), &search_path)
            .into_iter()
            .chain(crate::catalog::regclass_functions(
                self.catalog(),
                &search_path,
            ))
        {
            self.ctx.register_udf(function);
        }
        for function in
            crate::advisory_locks::advisory_lock_functions(&self.db.advisory_locks, self.id)
        {
            self.ctx.register_udf(function);
        }
        self.ctx.register_udf(crate::database::constant_int_udf(
            "pg_backend_pid",
            i32::try_from(self.id).unwrap_or(i32::MAX),
        ));
        self.ctx
            .register_udf(crate::sequences::serial_sequence_function(
                self.catalog(),
                &schema,
            ));
    }

    /// The relation `name` denotes, qualified with the current schema when
    /// it has none.
    pub fn resolve(&self, name: &ObjectName) -> ServerResult<RelationName> {
        let parts = name_parts(name)?;
        match parts.as_slice() {
            [table] => Ok(RelationName::new(self.current_schema(), table.clone())),
            [schema, table] => Ok(RelationName::new(schema.clone(), table.clone())),
            [database, schema, table] if database == runnel_planner::catalog::DATABASE => {
                Ok(RelationName::new(schema.clone(), table.clone()))
            }
            _ => Err(ServerError::NotSupported(format!("the name {name}"))),
        }
    }

    /// Plans `command` (parsed from `sql`) without running it.
    pub async fn prepare_command(&mut self, command: Command, sql: &str) -> ServerResult<Prepared> {
        let kind = match command {
            Command::Sql(statement) => return self.prepare(*statement, sql).await,
            Command::Flush => StreamingCommand::Flush,
            Command::CheckMaterializedView(name) => StreamingCommand::Check(self.resolve(&name)?),
            Command::RefreshMaterializedView(name) => {
                StreamingCommand::Refresh(self.resolve(&name)?)
            }
            Command::CreateSource {
                create,
                options,
                watermark,
            } => StreamingCommand::CreateSource {
                create,
                options,
                watermark,
            },
            Command::EmitOnWindowClose(statement) => StreamingCommand::EmitOnWindowClose(statement),
            Command::CreateSink {
                name,
                if_not_exists,
                query,
                options,
                emit_on_window_close,
            } => StreamingCommand::CreateSink {
                name,
                if_not_exists,
                query,
                options,
                emit_on_window_close,
            },
            Command::DropSink { name, if_exists } => StreamingCommand::DropSink { name, if_exists },
            Command::CreateTableWithWatermark { create, watermark } => {
                StreamingCommand::CreateTable { create, watermark }
            }
        };
        Ok(Prepared {
            sql: sql.to_string(),
            kind: PreparedKind::Streaming(kind),
        })
    }

    /// Plans `statement` (parsed from `sql`) without running it.
    pub async fn prepare(&mut self, statement: Statement, sql: &str) -> ServerResult<Prepared> {
        let kind = match statement {
            Statement::Explain {
                statement: ref inner,
                ..
            } if matches!(inner.as_ref(), Statement::CreateView(c) if c.materialized) => {
                PreparedKind::Utility(Box::new(statement))
            }
            Statement::Query(_) | Statement::Explain { .. } => {
                let plan = self.plan(statement).await?;
                PreparedKind::Query(plan)
            }
            Statement::Insert(insert) => {
                PreparedKind::Dml(Arc::new(self.prepare_insert(insert).await?))
            }
            Statement::Update(update) => {
                PreparedKind::Dml(Arc::new(self.prepare_update(update).await?))
            }
            Statement::Delete(delete) => {
                PreparedKind::Dml(Arc::new(self.prepare_delete(delete).await?))
            }
            Statement::Declare { stmts } => {
                PreparedKind::DeclareCursor(Arc::new(self.prepare_cursor(&stmts).await?))
            }
            Statement::Execute { .. } | Statement::Fetch { .. } => PreparedKind::Named {
                schema: self.named_result_schema(&statement),
                statement: Box::new(statement),
            },
            other => {
                utility::check_supported(&other)?;
                PreparedKind::Utility(Box::new(other))
            }
        };
        Ok(Prepared {
            sql: sql.to_string(),
            kind,
        })
    }

    /// DataFusion's logical plan of a statement.
    async fn plan(&self, statement: Statement) -> ServerResult<LogicalPlan> {
        let state = self.ctx.state();
        Ok(state
            .statement_to_plan(DfStatement::Statement(Box::new(statement)))
            .await?)
    }

    /// Runs a prepared statement with `params`.
    pub async fn execute(
        &mut self,
        prepared: &Prepared,
        params: &ParamValues,
    ) -> ServerResult<StatementResult> {
        if !self.in_block() {
            // The last statement's transaction ended: its xact locks go.
            self.release_transaction_locks();
        }
        match &prepared.kind {
            PreparedKind::Query(plan) => {
                let plan = plan.clone().replace_params_with_values(params)?;
                let frame = self.ctx.execute_logical_plan(plan).await?;
                let schema = Arc::clone(frame.schema().inner());
                let stream = frame.execute_stream().await?;
                Ok(Outcome::Rows {
                    schema,
                    stream,
                    tag: "SELECT".into(),
                }
                .into())
            }
            PreparedKind::Dml(dml) => self.execute_dml(dml, params).await,
            PreparedKind::Utility(statement) => self.execute_utility(statement).await,
            PreparedKind::DeclareCursor(declared) => self.declare_cursor(declared, params).await,
            PreparedKind::Named { statement, .. } => match statement.as_ref() {
                Statement::Execute {
                    name: Some(name),
                    parameters,
                    ..
                } => self.execute_named(name, parameters).await,
                Statement::Fetch {
                    name, direction, ..
                } => self.fetch(name, direction).await,
                other => Err(ServerError::NotSupported(format!("{other}"))),
            },
            PreparedKind::Streaming(StreamingCommand::Flush) => self.flush().await,
            PreparedKind::Streaming(StreamingCommand::Refresh(name)) => self.refresh(name).await,
            PreparedKind::Streaming(StreamingCommand::CreateSource {
                create,
                options,
                watermark,
            }) => self.create_source(create, options, watermark.as_ref()),
            PreparedKind::Streaming(StreamingCommand::CreateSink {
                name,
                if_not_exists,
                query,
                options,
                emit_on_window_close,
            }) => {
                self.create_sink(name, *if_not_exists, query, options, *emit_on_window_close)
                    .await
            }
            PreparedKind::Streaming(StreamingCommand::DropSink { name, if_exists }) => {
                self.drop_sink(name, *if_exists).await
            }
            PreparedKind::Streaming(StreamingCommand::CreateTable { create, watermark }) => {
                match create.as_ref() {
                    Statement::CreateTable(create) => {
                        self.before_ddl("CREATE TABLE")?;
                        self.create_table(create, Some(watermark))
                    }
                    other => Err(ServerError::Internal(format!("WATERMARK FOR in {other}"))),
                }
            }
            PreparedKind::Streaming(StreamingCommand::EmitOnWindowClose(statement)) => {
                match statement.as_ref() {
                    Statement::CreateView(create) => {
                        self.create_materialized_view(create, true).await
                    }
                    Statement::Explain { statement, .. } => match statement.as_ref() {
                        Statement::CreateView(create) => {
                            self.explain_materialized_view(create, true).await
                        }
                        other => Err(ServerError::Internal(format!(
                            "EMIT ON WINDOW CLOSE after {other}"
                        ))),
                    },
                    other => Err(ServerError::Internal(format!(
                        "EMIT ON WINDOW CLOSE after {other}"
                    ))),
                }
            }
            PreparedKind::Streaming(StreamingCommand::Check(name)) => {
                self.check_materialized_view(name).await
            }
        }
    }
}
