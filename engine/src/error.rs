/// Errors of the streaming engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A chunk was built from parts that do not fit together.
    #[error("invalid chunk: {0}")]
    InvalidChunk(String),
    /// Evaluating an expression failed (division by zero, overflow, a bad
    /// cast): the row's data is at fault, not the engine.
    #[error("{0}")]
    Expression(#[from] datafusion::error::DataFusionError),
    /// An Arrow kernel failed on a chunk's columns.
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// Reading or writing state failed.
    #[error(transparent)]
    Storage(#[from] runnel_storage::StorageError),
    /// The job this one reads from stopped.
    #[error("upstream failed: {0}")]
    UpstreamFailed(String),
    /// The runtime is shutting down or a job was dropped while waited on.
    #[error("stopped: {0}")]
    Stopped(String),
    /// A source cannot go on because of what is outside: a file that
    /// vanished or shrank, a record that does not decode under
    /// `format.error-policy = 'fail'`. The message names where.
    #[error("{0}")]
    Source(String),
    /// A broken invariant of the engine itself.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result alias of the engine.
pub type EngineResult<T> = Result<T, EngineError>;
