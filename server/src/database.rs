//! The process-wide database: store, catalog, the template DataFusion state
//! every session starts from, and the lock that serialises writes.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::CatalogProvider;
use datafusion::catalog::{CatalogProviderList, MemoryCatalogProviderList};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::{PgCatalogSchemaProvider, PgCatalogStaticTables};
use runnel_engine::runtime::Runtime;
use runnel_planner::catalog::{DATABASE, DEFAULT_SCHEMA};
use runnel_planner::pg_compat::ByteaInputRule;
use runnel_planner::time_shift::TimeShiftRule;
use runnel_planner::types::RunnelTypePlanner;
use runnel_storage::Store;
use runnel_storage::checkpoint::Checkpointer;

use crate::catalog::{Catalog, RunnelCatalogProvider};
use crate::checkpointing::{OpenedStore, open_store};
use crate::config::Config;
use crate::error::{ServerError, ServerResult};
use crate::tables::RowIds;

/// What `SELECT version()` answers; clients parse the leading
/// `PostgreSQL 15.x`.
pub const VERSION_STRING: &str = concat!(
    "PostgreSQL 15.0 (Runnel ",
    env!("CARGO_PKG_VERSION"),
    ") on x86_64-pc-linux-gnu, a streaming SQL database"
);
/// The `server_version` reported at startup.
pub const SERVER_VERSION: &str = "15.0";

/// Shared by every session of the process.
pub struct Database {
    pub config: Config,
    pub store: Store,
    pub catalog: Arc<Catalog>,
    /// The state new sessions clone: catalog, pg_catalog, functions.
    base_state: SessionState,
    /// `pg_catalog`'s fixed tables, built once, for the `pg_catalog` of a
    /// transaction block's draft catalog.
    pg_static_tables: Arc<PgCatalogStaticTables>,
    /// Held for the whole of a writing statement (read, check, write), so
    /// statements that change rows apply one after another.
    pub write_lock: tokio::sync::Mutex<()>,
    pub row_ids: RowIds,
    /// Runs the jobs of materialized views.
    pub runtime: Arc<Runtime>,
    /// Takes the checkpoints, when they are on; its history is what SHOW
    /// CHECKPOINTS tells.
    pub checkpointer: Option<Arc<Checkpointer>>,
    pub started_at: Instant,
    /// Connections open now.
    pub connections: AtomicUsize,
    /// The sessions' advisory locks.
    pub advisory_locks: Arc<crate::advisory_locks::AdvisoryLocks>,
    /// The id the next session gets (its `pg_backend_pid`).
    pub next_session_id: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("store", &self.store)
            .finish()
    }
}

impl Database {
    /// Opens the database under the configured data directory.
    pub fn open(config: Config) -> ServerResult<Arc<Self>> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            ServerError::Internal(format!(
                "cannot create data directory {}: {e}",
                config.data_dir.display()
            ))
        })?;
        let OpenedStore { store, checkpoints } = open_store(&config)?;
        let checkpointer = checkpoints.as_ref().map(|c| Arc::clone(&c.checkpointer));
        let catalog = Catalog::open(store.clone())?;
        let pg_static_tables = Arc::new(
            PgCatalogStaticTables::try_new()
                .map_err(|e| ServerError::Internal(format!("pg_catalog tables: {e}")))?,
        );
        let base_state = base_state(
            Arc::clone(&catalog),
            &pg_static_tables,
            config.query_memory_limit_mb << 20,
        )?;
        let runtime = Runtime::start(
            store.clone(),
            runnel_engine::runtime::RuntimeOptions {
                barrier_interval: Duration::from_millis(config.barrier_interval_ms.max(1)),
                source_idle_timeout: (config.source_idle_timeout_ms > 0)
                    .then(|| Duration::from_millis(config.source_idle_timeout_ms)),
                checkpoints,
            },
            Arc::new(runnel_connectors::Connectors),
        )?;
        Ok(Arc::new(Self {
            config,
            store,
            catalog,
            base_state,
            pg_static_tables,
            write_lock: tokio::sync::Mutex::new(()),
            row_ids: RowIds::default(),
            runtime,
            checkpointer,
            started_at: Instant::now(),
            connections: AtomicUsize::new(0),
            advisory_locks: Arc::default(),
            next_session_id: std::sync::atomic::AtomicU64::new(1),
        }))
    }

    /// The template state with unqualified names resolving in `schema`.
    pub fn state_in_schema(&self, schema: &str) -> SessionState {
        let mut state = self.base_state.clone();
        state.config_mut().options_mut().catalog.default_schema = schema.to_string();
        state
    }

    /// A fresh DataFusion context for one session.
    pub fn new_context(&self) -> SessionContext {
        SessionContext::new_with_state(self.base_state.clone())
    }

    /// A session's `state` resolving names in `catalog`: the shared
    /// catalog list for the live catalog, a list of its own (with its own
    /// `pg_catalog`) for a transaction block's draft.
    pub fn state_over(
        &self,
        state: SessionState,
        catalog: &Arc<Catalog>,
    ) -> ServerResult<SessionState> {
        let builder = SessionStateBuilder::new_from_existing(state);
        if Arc::ptr_eq(catalog, &self.catalog) {
            return Ok(builder
                .with_catalog_list(Arc::clone(self.base_state.catalog_list()))
                .build());
        }
        let list: Arc<dyn CatalogProviderList> = Arc::new(MemoryCatalogProviderList::new());
        let provider = Arc::new(RunnelCatalogProvider::new(Arc::clone(catalog)));
        list.register_catalog(DATABASE.into(), Arc::clone(&provider) as _);
        // The functions `setup_pg_catalog` registers are in `state` already;
        // only the `pg_catalog` schema must list this catalog's relations.
        let pg_catalog = PgCatalogSchemaProvider::try_new(
            Arc::clone(&list),
            Arc::clone(&self.pg_static_tables),
            EmptyContextProvider,
        )
        .map_err(|e| ServerError::Internal(format!("pg_catalog setup: {e}")))?;
        provider.register_schema("pg_catalog", Arc::new(pg_catalog))?;
        provider.correct_pg_catalog();
        provider.register_information_schema(Arc::clone(&list));
        let state = builder.with_catalog_list(list).build();
        provider.set_planner_state(state.clone());
        Ok(state)
    }
}

fn base_state(
    catalog: Arc<Catalog>,
    pg_static_tables: &PgCatalogStaticTables,
    memory_limit: usize,
) -> ServerResult<SessionState> {
    let mut config = SessionConfig::new()
        // Ours is in the catalog (catalog/information_schema.rs).
        .with_information_schema(false)
        .with_create_default_catalog_and_schema(false)
        .with_default_catalog_and_schema(DATABASE, DEFAULT_SCHEMA);
    let options = config.options_mut();
    options.sql_parser.dialect = datafusion::config::Dialect::PostgreSQL;
    options.sql_parser.map_string_types_to_utf8view = false;
    options.execution.time_zone = Some("+00:00".into());
    // One memory pool for every query of the process, so a large sort or
    // aggregation spills or fails (53200) instead of exhausting the machine.
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(memory_limit, 1.0)
        .build_arc()
        .map_err(|e| ServerError::Internal(format!("query runtime: {e}")))?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    let provider = Arc::new(RunnelCatalogProvider::new(Arc::clone(&catalog)));
    ctx.register_catalog(DATABASE, Arc::clone(&provider) as _);
    datafusion_pg_catalog::setup_pg_catalog(&ctx, DATABASE, EmptyContextProvider)
        .map_err(|e| ServerError::Internal(format!("pg_catalog setup: {e}")))?;
    provider.correct_pg_catalog();
    provider.register_information_schema(Arc::clone(ctx.state().catalog_list()));
    let search_path = [DEFAULT_SCHEMA.to_string()];
    for function in crate::catalog::definition_functions(&catalog, &search_path)
        .into_iter()
        .chain(crate::catalog::regclass_functions(&catalog, &search_path))
    {
        ctx.register_udf(function);
    }
    for function in crate::catalog::fixed_functions() {
        ctx.register_udf(function);
    }
    ctx.register_udf(crate::catalog::to_regtype(pg_static_tables.pg_type.data())?);
    ctx.register_udf(crate::catalog::function_result(
        pg_static_tables.pg_proc.data(),
        pg_static_tables.pg_type.data(),
    )?);
    ctx.register_udaf(crate::catalog::single_value());
    // For DEFAULT nextval('schema.seq') of SERIAL columns (sessions
    // register their own, resolving in their schema).
    let values = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    for function in crate::sequences::sequence_functions(&catalog, DEFAULT_SCHEMA, &values) {
        ctx.register_udf(function);
    }
    ctx.register_udf(constant_text_udf("version", VERSION_STRING));
    for function in runnel_planner::windows::session::session_window_functions() {
        ctx.register_udwf(function.as_ref().clone());
    }
    if std::env::var_os(FAULT_INJECTION_ENV).is_some() {
        ctx.register_udf(panicking_udf());
    }
    let mut builder = SessionStateBuilder::new_from_existing(ctx.state());
    let inner = builder.type_planner().clone();
    let state = builder
        .with_type_planner(Arc::new(RunnelTypePlanner::new(inner)))
        .with_analyzer_rule(Arc::new(ByteaInputRule::default()))
        .with_analyzer_rule(Arc::new(
            runnel_planner::array_input::ArrayInputRule::default(),
        ))
        .with_analyzer_rule(Arc::new(TimeShiftRule))
        .with_analyzer_rule(Arc::new(
            runnel_planner::time_literals::TimestampLiteralRule,
        ))
        .build();
    provider.set_planner_state(state.clone());
    Ok(state)
}

/// Set to any value to register `runnel_test_panic()`, a function that
/// panics, so tests can prove a panic fails only its own statement.
pub const FAULT_INJECTION_ENV: &str = "RUNNEL_FAULT_INJECTION";

fn panicking_udf() -> ScalarUDF {
    create_udf(
        "runnel_test_panic",
        vec![],
        DataType::Utf8,
        Volatility::Volatile,
        Arc::new(
            |_args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
                panic!("fault injected by runnel_test_panic()")
            },
        ),
    )
}

/// A function of no arguments returning a fixed integer.
pub fn constant_int_udf(name: &str, value: i32) -> ScalarUDF {
    create_udf(
        name,
        vec![],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(move |_args: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::Int32(Some(value))))
        }),
    )
}

/// A function of no arguments returning a fixed text.
pub fn constant_text_udf(name: &str, value: &str) -> ScalarUDF {
    let value = value.to_string();
    create_udf(
        name,
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_args: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                value.clone(),
            ))))
        }),
    )
}
