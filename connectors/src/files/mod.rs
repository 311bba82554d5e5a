//! `connector = 'filesystem'`: files on any object store — `file://`,
//! `s3://` (with `s3.endpoint`, `s3.region`, `s3.access-key`,
//! `s3.secret-key`, `s3.path-style-access`) and `hdfs://` — written by a
//! sink as JSON lines, CSV or Parquet (see `sink`) and read by a source
//! from a folder or a glob (see `source`).

mod decode;
mod encode;
mod line_blocks;
mod sink;
mod source;

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path;
use runnel_storage::StorageError;
use runnel_storage::checkpoint::{CheckpointLocation, S3Options};

use crate::options::{ConnectorError, Options};
pub(crate) use encode::FileFormat;
pub(crate) use sink::{FileWriter, SINK_OPTIONS};
pub(crate) use source::{FileSource, SOURCE_OPTIONS};

/// A directory on an object store.
#[derive(Debug, Clone)]
pub(crate) struct Directory {
    pub store: Arc<dyn ObjectStore>,
    pub root: Path,
    pub url: String,
}

impl Directory {
    /// Reads `path` and the `s3.*` options.
    pub(crate) fn from_options(options: &mut Options<'_>) -> Result<Self, ConnectorError> {
        let url = options.required("path")?.to_string();
        Self::open(&url, options)
    }

    /// The folder at `url`, reached with the `s3.*` options.
    pub(crate) fn open(url: &str, options: &mut Options<'_>) -> Result<Self, ConnectorError> {
        let url = url.to_string();
        let endpoint = options.get("s3.endpoint").map(str::to_string);
        let path_style = match options.get("s3.path-style-access") {
            None => endpoint.is_some(),
            Some(v) => v.eq_ignore_ascii_case("true"),
        };
        let s3 = S3Options {
            endpoint,
            region: options.get("s3.region").map(str::to_string),
            access_key: options.get("s3.access-key").map(str::to_string),
            secret_key: options.get("s3.secret-key").map(str::to_string),
            path_style_access: path_style,
        };
        let location =
            CheckpointLocation::open(&url, &s3).map_err(|e| ConnectorError::BadValue {
                key: "path".into(),
                value: url.clone(),
                reason: match e {
                    StorageError::Checkpoint { reason, .. } => reason,
                    other => other.to_string(),
                },
            })?;
        Ok(Self {
            store: location.object_store(),
            root: location.root().clone(),
            url,
        })
    }
}
