//! The server's error type and the one place errors become SQLSTATEs.

use datafusion::arrow::error::ArrowError;
use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;
use runnel_planner::PlanError;
use runnel_storage::StorageError;

/// Everything a statement can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Arrow(#[from] ArrowError),
    #[error("{}", datafusion_message(.0))]
    DataFusion(#[from] DataFusionError),
    #[error("relation \"{0}\" does not exist")]
    UndefinedTable(String),
    #[error("schema \"{0}\" does not exist")]
    UndefinedSchema(String),
    #[error("column \"{0}\" does not exist")]
    UndefinedColumn(String),
    /// An object other than a relation (a sink) that is not there.
    #[error("{0}")]
    UndefinedObject(String),
    #[error("relation \"{0}\" already exists")]
    DuplicateTable(String),
    /// ON CONFLICT names no key of the table.
    #[error("{0}")]
    InvalidColumnReference(String),
    /// A constraint name a table has already.
    #[error("{0}")]
    DuplicateObject(String),
    #[error("schema \"{0}\" already exists")]
    DuplicateSchema(String),
    #[error("column \"{0}\" of relation \"{1}\" already exists")]
    DuplicateColumn(String, String),
    #[error("cannot drop {what} because other objects depend on it: {dependants}")]
    DependentObjects { what: String, dependants: String },
    #[error(
        "null value in column \"{column}\" of relation \"{table}\" violates not-null constraint"
    )]
    NotNullViolation { table: String, column: String },
    #[error("duplicate key value violates unique constraint \"{table}_pkey\": key ({key})")]
    UniqueViolation { table: String, key: String },
    #[error("new row for relation \"{table}\" violates check constraint \"{constraint}\"")]
    CheckViolation { table: String, constraint: String },
    #[error("duplicate key value violates unique constraint \"{constraint}\": {detail}")]
    UniqueConstraint { constraint: String, detail: String },
    #[error("value too long for type character varying({max}) in column \"{column}\"")]
    StringTooLong { column: String, max: u32 },
    #[error("invalid input syntax for type json in column \"{column}\": {reason}")]
    InvalidJson { column: String, reason: String },
    /// A condition (CHECK) that is not boolean.
    #[error("argument of {0} must be type boolean")]
    NotBoolean(String),
    #[error("column \"{column}\" is of type {expected} but expression is of type {found}")]
    DatatypeMismatch {
        column: String,
        expected: String,
        found: String,
    },
    #[error("invalid parameter value: {0}")]
    InvalidParameter(String),
    /// A connector option (`WITH (...)`) that cannot work: unknown, out of
    /// range, or naming a broker or topic that is not there (SQLSTATE 22023).
    #[error("invalid parameter value: {0}")]
    InvalidOption(String),
    #[error("{0}")]
    CardinalityViolation(String),
    #[error("unrecognized configuration parameter \"{0}\"")]
    UnknownSetting(String),
    #[error("invalid value for parameter \"{name}\": \"{value}\": {hint}")]
    InvalidSettingValue {
        name: String,
        value: String,
        hint: String,
    },
    #[error("parameter \"{0}\" cannot be changed")]
    ReadOnlySetting(String),
    #[error("current transaction is aborted, commands ignored until end of transaction block")]
    InFailedTransaction,
    /// A block's COMMIT found a row it changed changed by another session.
    #[error("could not serialize access due to concurrent update: {0}")]
    SerializationFailure(String),
    #[error("cannot execute {0} in a read-only transaction")]
    ReadOnlyTransaction(String),
    #[error("savepoint \"{0}\" does not exist")]
    UndefinedSavepoint(String),
    /// Streaming DDL inside BEGIN … COMMIT (a job cannot wait for COMMIT).
    #[error(
        "{0} cannot run inside a transaction block; run it outside BEGIN … COMMIT (in autocommit mode)"
    )]
    ActiveTransaction(String),
    /// SAVEPOINT and friends outside BEGIN … COMMIT.
    #[error("{0} can only be used in transaction blocks")]
    NoActiveTransaction(String),
    #[error("prepared statement \"{0}\" already exists")]
    DuplicatePreparedStatement(String),
    #[error("prepared statement \"{0}\" does not exist")]
    UndefinedPreparedStatement(String),
    #[error("cursor \"{0}\" already exists")]
    DuplicateCursor(String),
    #[error("cursor \"{0}\" does not exist")]
    UndefinedCursor(String),
    /// Something asked of an object before it is ready (currval before
    /// nextval).
    #[error("{0}")]
    NotInPrerequisiteState(String),
    /// A definition that cannot replace the one there (42P16).
    #[error("{0}")]
    InvalidObjectDefinition(String),
    /// A sequence ran out, or was asked for a value it cannot give.
    #[error("{0}")]
    SequenceLimit(String),
    /// The client ended COPY FROM STDIN with CopyFail.
    #[error("COPY from stdin failed: {0}")]
    CopyFailed(String),
    #[error("canceling statement due to statement timeout")]
    StatementTimeout,
    #[error("{0} is not supported")]
    NotSupported(String),
    #[error(
        "cached plan must not change result type: {0} changed since the statement was prepared; prepare it again"
    )]
    StalePlan(String),
    #[error("{0}")]
    WrongObjectType(String),
    #[error(transparent)]
    Engine(#[from] runnel_engine::EngineError),
    /// A new job failed at once: `job` says what it maintains
    /// ("materialized view public.v", "sink public.s").
    #[error("{job} failed: {error}")]
    JobFailed { job: String, error: String },
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result alias of the server.
pub type ServerResult<T> = Result<T, ServerError>;

/// What the client is told about an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub code: &'static str,
    pub message: String,
    /// 1-based character position in the statement, for syntax errors.
    pub position: Option<usize>,
}

impl ServerError {
    /// A connector's refusal of the definition of `what` (a source or
    /// sink): not supported (0A000) or an option to change (22023).
    pub fn from_connector(what: &str, error: runnel_connectors::ConnectorError) -> Self {
        match error {
            runnel_connectors::ConnectorError::Unsupported(feature) => {
                ServerError::NotSupported(feature)
            }
            other => ServerError::InvalidOption(format!("{what}: {other}")),
        }
    }

    /// The SQLSTATE and message of this error: the one place errors are
    /// classified for clients.
    pub fn to_sql_error(&self) -> SqlError {
        let mut position = None;
        let code = match self {
            ServerError::Plan(plan) => match plan {
                PlanError::Syntax { position: p, .. } => {
                    position = *p;
                    "42601"
                }
                PlanError::NotSupported(_) => "0A000",
                PlanError::UnknownType(_) => "42704",
                PlanError::InvalidDefinition(_) => "42P16",
                PlanError::DuplicateColumn(_) => "42701",
                PlanError::UnknownColumn(_) => "42703",
                PlanError::TooComplex(_) => "54001",
                PlanError::InvalidParameter(_) => "22023",
                PlanError::InvalidObject(_) => "42P17",
                PlanError::Internal(_) => "XX000",
            },
            ServerError::Storage(StorageError::UnsupportedType(_)) => "0A000",
            ServerError::Storage(StorageError::Corrupt { .. }) => "XX001",
            ServerError::Storage(_) => "58030",
            ServerError::DataFusion(e) => datafusion_code(e),
            ServerError::Arrow(e) => arrow_code(e),
            ServerError::UndefinedTable(_) => "42P01",
            ServerError::UndefinedSchema(_) => "3F000",
            ServerError::UndefinedColumn(_) => "42703",
            ServerError::UndefinedObject(_) => "42704",
            ServerError::DuplicateTable(_) => "42P07",
            ServerError::DuplicateSchema(_) => "42P06",
            ServerError::DuplicateColumn(..) => "42701",
            ServerError::DependentObjects { .. } => "2BP01",
            ServerError::NotNullViolation { .. } => "23502",
            ServerError::UniqueViolation { .. } | ServerError::UniqueConstraint { .. } => "23505",
            ServerError::CheckViolation { .. } => "23514",
            ServerError::DuplicateObject(_) => "42710",
            ServerError::InvalidColumnReference(_) => "42P10",
            ServerError::StringTooLong { .. } => "22001",
            ServerError::DatatypeMismatch { .. } | ServerError::NotBoolean(_) => "42804",
            ServerError::InvalidJson { .. } => "22P02",
            ServerError::InvalidParameter(_) => "22P02",
            ServerError::InvalidOption(_) => "22023",
            ServerError::CardinalityViolation(_) => "21000",
            ServerError::UnknownSetting(_) => "42704",
            ServerError::InvalidSettingValue { .. } => "22023",
            ServerError::ReadOnlySetting(_) => "55P02",
            ServerError::InFailedTransaction => "25P02",
            ServerError::SerializationFailure(_) => "40001",
            ServerError::CopyFailed(_) => "57014",
            ServerError::SequenceLimit(_) => "2200H",
            ServerError::InvalidObjectDefinition(_) => "42P16",
            ServerError::NotInPrerequisiteState(_) => "55000",
            ServerError::DuplicatePreparedStatement(_) => "42P05",
            ServerError::UndefinedPreparedStatement(_) => "26000",
            ServerError::DuplicateCursor(_) => "42P03",
            ServerError::UndefinedCursor(_) => "34000",
            ServerError::ReadOnlyTransaction(_) => "25006",
            ServerError::UndefinedSavepoint(_) => "3B001",
            ServerError::NoActiveTransaction(_) => "25P01",
            ServerError::ActiveTransaction(_) => "25001",
            ServerError::StatementTimeout => "57014",
            ServerError::NotSupported(_) | ServerError::StalePlan(_) => "0A000",
            ServerError::WrongObjectType(_) => "42809",
            ServerError::Engine(e) => engine_code(e),
            ServerError::JobFailed { .. } => "22000",
            ServerError::Internal(_) => "XX000",
        };
        SqlError {
            code,
            message: self.to_string(),
            position,
        }
    }
}

/// The innermost error, through DataFusion's context and shared wrappers.
fn root(e: &DataFusionError) -> &DataFusionError {
    e.find_root()
}

fn datafusion_code(e: &DataFusionError) -> &'static str {
    let e = root(e);
    let message = e.to_string();
    if let Some(server) = server_error_inside(e) {
        return server.to_sql_error().code;
    }
    match e {
        DataFusionError::SQL(_, _) => "42601",
        DataFusionError::NotImplemented(_) => "0A000",
        DataFusionError::SchemaError(schema, _) => match schema.as_ref() {
            SchemaError::FieldNotFound { .. } => "42703",
            SchemaError::AmbiguousReference { .. } => "42702",
            SchemaError::DuplicateQualifiedField { .. }
            | SchemaError::DuplicateUnqualifiedField { .. } => "42701",
        },
        DataFusionError::ArrowError(arrow, _) => arrow_code(arrow),
        DataFusionError::ResourcesExhausted(_) => "53200",
        DataFusionError::Plan(_) => plan_code(&message),
        DataFusionError::Execution(_) | DataFusionError::External(_) => execution_code(&message),
        _ => "XX000",
    }
}

fn engine_code(e: &runnel_engine::EngineError) -> &'static str {
    use runnel_engine::EngineError;
    match e {
        EngineError::Expression(e) => datafusion_code(e),
        EngineError::Arrow(e) => arrow_code(e),
        EngineError::Storage(StorageError::Corrupt { .. }) => "XX001",
        EngineError::Storage(_) => "58030",
        EngineError::UpstreamFailed(_) | EngineError::Stopped(_) => "55000",
        EngineError::Source(_) => "22000",
        EngineError::InvalidChunk(_) | EngineError::Internal(_) => "XX000",
    }
}

fn arrow_code(e: &ArrowError) -> &'static str {
    match e {
        ArrowError::DivideByZero => "22012",
        ArrowError::CastError(_) | ArrowError::ParseError(_) => "22P02",
        ArrowError::ArithmeticOverflow(_) => "22003",
        ArrowError::ComputeError(m) if m.contains("verflow") => "22003",
        ArrowError::InvalidArgumentError(m) if m.contains("verflow") || m.contains("too large") => {
            "22003"
        }
        _ => "XX000",
    }
}

fn plan_code(message: &str) -> &'static str {
    let lower = message.to_ascii_lowercase();
    if lower.contains("table") && lower.contains("not found") {
        "42P01"
    } else if lower.contains("invalid function") || lower.contains("no function matches") {
        "42883"
    } else if lower.contains("coerce")
        || lower.contains("coercion")
        || lower.contains("type mismatch")
        || lower.contains("cannot infer common")
        || lower.contains("must be boolean")
        || lower.contains("non-boolean")
        || lower.contains("does not support")
    {
        "42804"
    } else {
        "42601"
    }
}

fn execution_code(message: &str) -> &'static str {
    let lower = message.to_ascii_lowercase();
    if lower.contains("divide by zero") || lower.contains("division by zero") {
        "22012"
    } else if lower.contains("overflow") {
        "22003"
    } else if lower.contains("cast") || lower.contains("cannot parse") {
        "22P02"
    } else {
        "XX000"
    }
}

/// DataFusion's messages, without the `Error during planning:` style
/// prefixes and backtraces that mean nothing to a SQL user.
/// A server error a function raised inside a query (sequences do).
fn server_error_inside(e: &DataFusionError) -> Option<&ServerError> {
    match e {
        DataFusionError::External(inner) => inner.downcast_ref::<ServerError>(),
        _ => None,
    }
}

fn datafusion_message(e: &DataFusionError) -> String {
    let e = root(e);
    if let Some(server) = server_error_inside(e) {
        return server.to_string();
    }
    let text = match e {
        DataFusionError::Plan(m)
        | DataFusionError::Execution(m)
        | DataFusionError::NotImplemented(m)
        | DataFusionError::ResourcesExhausted(m) => m.clone(),
        DataFusionError::ArrowError(a, _) => match a.as_ref() {
            ArrowError::DivideByZero => "division by zero".to_string(),
            other => other.to_string(),
        },
        DataFusionError::SchemaError(s, _) => s.to_string(),
        other => other.to_string(),
    };
    text.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_their_sqlstates() {
        let syntax = ServerError::Plan(PlanError::Syntax {
            message: "x".into(),
            position: Some(3),
        });
        assert_eq!(syntax.to_sql_error().code, "42601");
        assert_eq!(syntax.to_sql_error().position, Some(3));
        let missing = ServerError::DataFusion(DataFusionError::Plan(
            "table 'runnel.public.nope' not found".into(),
        ));
        assert_eq!(missing.to_sql_error().code, "42P01");
        let div = ServerError::DataFusion(DataFusionError::ArrowError(
            Box::new(ArrowError::DivideByZero),
            None,
        ));
        assert_eq!(div.to_sql_error().code, "22012");
        assert_eq!(div.to_sql_error().message, "division by zero");
        let wrapped = ServerError::DataFusion(DataFusionError::Context(
            "while planning".into(),
            Box::new(DataFusionError::NotImplemented("LATERAL".into())),
        ));
        assert_eq!(wrapped.to_sql_error().code, "0A000");
    }
}
