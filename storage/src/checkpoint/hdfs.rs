//! `hdfs://` checkpoint locations through `hdfs-native-object-store` (the
//! native Rust HDFS client; no JVM or libhdfs). Configuration beyond the URL
//! (HA name services, Kerberos) comes from `HADOOP_CONF_DIR`'s
//! `core-site.xml` and `hdfs-site.xml`, as the client reads them.

use std::sync::Arc;

use hdfs_native_object_store::HdfsObjectStoreBuilder;
use object_store::path::Path;

use super::CheckpointLocation;
use crate::{StorageError, StorageResult};

/// Opens `url` (`hdfs://namenode:port/path`): the name node part picks the
/// file system, the path the root of the checkpoints in it.
pub(super) fn open(url: &str) -> StorageResult<CheckpointLocation> {
    let bad = |reason: String| StorageError::checkpoint(url, reason);
    let (_, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected hdfs://namenode:port/path".into()))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let scheme = &url[..url.len() - rest.len()];
    let store = HdfsObjectStoreBuilder::new()
        .with_url(format!("{scheme}{authority}"))
        .build()
        .map_err(|e| bad(e.to_string()))?;
    Ok(CheckpointLocation {
        store: Arc::new(store),
        root: Path::parse(path.trim_end_matches('/')).map_err(|e| bad(e.to_string()))?,
        url: url.to_string(),
    })
}
