/// Errors found while parsing or analysing SQL.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The text is not valid SQL. `position` is the 1-based character offset
    /// into the statement text, as Postgres reports it.
    #[error("syntax error: {message}")]
    Syntax {
        message: String,
        position: Option<usize>,
    },
    /// Valid SQL that Runnel does not implement (SQLSTATE 0A000).
    #[error("{0} is not supported")]
    NotSupported(String),
    /// A type name Runnel does not know.
    #[error("type \"{0}\" does not exist")]
    UnknownType(String),
    /// A definition that contradicts itself, e.g. two primary keys.
    #[error("invalid table definition: {0}")]
    InvalidDefinition(String),
    /// A column named twice.
    #[error("column \"{0}\" specified more than once")]
    DuplicateColumn(String),
    /// A statement too deep to process safely (SQLSTATE 54001).
    #[error("statement too complex: {0}")]
    TooComplex(String),
    /// A value out of its range, e.g. a window size of zero (SQLSTATE
    /// 22023).
    #[error("{0}")]
    InvalidParameter(String),
    /// An object whose definition cannot work as written, e.g. `EMIT ON
    /// WINDOW CLOSE` over a query without a window (SQLSTATE 42P17).
    #[error("{0}")]
    InvalidObject(String),
    /// An invariant of the planner broke (SQLSTATE XX000).
    #[error("internal error: {0}")]
    Internal(String),
    /// A column name that does not exist in the table.
    #[error("column \"{0}\" does not exist")]
    UnknownColumn(String),
}

/// Result alias of the planner.
pub type PlanResult<T> = Result<T, PlanError>;
