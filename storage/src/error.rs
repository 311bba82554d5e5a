use datafusion::arrow::datatypes::DataType;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// RocksDB refused an operation (I/O error, corruption, lock held).
    #[error("storage error at '{path}': {reason}")]
    Rocks { path: String, reason: String },
    /// A stored record could not be decoded: the data on disk is damaged or
    /// was written by an incompatible version.
    #[error("corrupt stored record ({what}): {reason}")]
    Corrupt { what: &'static str, reason: String },
    /// A column type the row codec does not store.
    #[error("column type {0} cannot be stored")]
    UnsupportedType(DataType),
    /// The checkpoint location refused an operation or cannot be used.
    #[error("checkpoint storage at '{location}': {reason}")]
    Checkpoint { location: String, reason: String },
    /// A file of the data directory could not be read or written.
    #[error("file '{path}': {reason}")]
    Io { path: String, reason: String },
    /// Building an Arrow array from decoded rows failed.
    #[error("building a batch failed: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}

/// Result alias of the storage layer.
pub type StorageResult<T> = Result<T, StorageError>;

impl StorageError {
    pub(crate) fn io(path: &std::path::Path, e: std::io::Error) -> Self {
        StorageError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    }

    pub(crate) fn checkpoint(location: impl std::fmt::Display, reason: impl ToString) -> Self {
        StorageError::Checkpoint {
            location: location.to_string(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn corrupt(what: &'static str, reason: impl Into<String>) -> Self {
        StorageError::Corrupt {
            what,
            reason: reason.into(),
        }
    }
}
