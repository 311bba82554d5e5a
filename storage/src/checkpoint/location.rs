//! Where checkpoints go: `state.checkpoints.dir` turned into an
//! `object_store` and a root path inside it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;

use crate::{StorageError, StorageResult};

/// How to reach an S3-compatible service. Unset fields fall back to the
/// usual `AWS_*` environment variables.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// e.g. `http://127.0.0.1:9000` for a local S3-compatible server.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// `https://endpoint/bucket/key` rather than `https://bucket.endpoint/key`.
    pub path_style_access: bool,
}

/// An opened checkpoint location.
#[derive(Debug, Clone)]
pub struct CheckpointLocation {
    pub(crate) store: Arc<dyn ObjectStore>,
    /// Every checkpoint object lives under this path.
    pub(crate) root: Path,
    pub(crate) url: String,
}

impl std::fmt::Display for CheckpointLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl CheckpointLocation {
    /// Opens `url`: `file:///abs/path`, `file://./relative`, a plain path,
    /// `s3://bucket/prefix` or `hdfs://namenode:port/path`.
    pub fn open(url: &str, s3: &S3Options) -> StorageResult<Self> {
        let (scheme, rest) = match url.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("file".to_string(), url),
        };
        let bad = |reason: String| StorageError::checkpoint(url, reason);
        match scheme.as_str() {
            "file" => {
                // Folders are made as files are written: a location that
                // cannot be written to fails its checkpoints, not the start.
                let mut dir = PathBuf::from(rest);
                if dir.is_relative() {
                    let cwd = std::env::current_dir().map_err(|e| bad(e.to_string()))?;
                    dir = cwd.join(dir);
                }
                let root = Path::from_absolute_path(&dir).map_err(|e| bad(e.to_string()))?;
                Ok(Self {
                    store: Arc::new(LocalFileSystem::new().with_automatic_cleanup(true)),
                    root,
                    url: url.to_string(),
                })
            }
            "s3" | "s3a" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(bad("name a bucket: s3://bucket/path".into()));
                }
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_virtual_hosted_style_request(!s3.path_style_access)
                    .with_retry(object_store::RetryConfig {
                        max_retries: 3,
                        retry_timeout: Duration::from_secs(30),
                        ..Default::default()
                    });
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                if let Some(region) = &s3.region {
                    builder = builder.with_region(region);
                }
                if let Some(key) = &s3.access_key {
                    builder = builder.with_access_key_id(key);
                }
                if let Some(secret) = &s3.secret_key {
                    builder = builder.with_secret_access_key(secret);
                }
                let store = builder.build().map_err(|e| bad(e.to_string()))?;
                Ok(Self {
                    store: Arc::new(store),
                    root: Path::parse(prefix.trim_end_matches('/'))
                        .map_err(|e| bad(e.to_string()))?,
                    url: url.to_string(),
                })
            }
            "hdfs" | "viewfs" => super::hdfs::open(url),
            other => Err(bad(format!(
                "unknown scheme '{other}'; use file://, s3:// or hdfs://"
            ))),
        }
    }

    /// The object store (for connectors reading and writing files there).
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }

    /// The root path inside [`CheckpointLocation::object_store`].
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `relative` under the location's root.
    pub(crate) fn path(&self, relative: &str) -> Path {
        let mut path = self.root.clone();
        for part in relative.split('/').filter(|p| !p.is_empty()) {
            path = path.clone().join(part);
        }
        path
    }

    /// `path` relative to the root, as stored in manifests.
    pub(crate) fn relative(&self, path: &Path) -> String {
        match path.prefix_match(&self.root) {
            Some(parts) => parts
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/"),
            None => path.to_string(),
        }
    }

    pub(crate) fn error(&self, e: impl ToString) -> StorageError {
        StorageError::checkpoint(&self.url, e)
    }
}
