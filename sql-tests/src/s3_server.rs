//! An S3-compatible server for tests: `moto` in server mode (from PyPI,
//! installed into the test virtualenv by `scripts/test.sh`), on a free
//! loopback port, with one bucket made, stopped when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Access key and secret the server accepts (moto takes any).
pub const S3_KEY: &str = "runnel-test";

/// A running S3-compatible server.
pub struct S3Server {
    child: Child,
    pub port: u16,
    pub bucket: String,
}

/// `$RUNNEL_MOTO_SERVER`, else `moto_server` in the test virtualenv.
fn moto_binary() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("RUNNEL_MOTO_SERVER") {
        return Ok(PathBuf::from(path));
    }
    test_venv_bin("moto_server")
}

/// Program `name` of the test virtualenv (`~/.cache/runnel-venv`, made by
/// `scripts/test.sh`).
pub(crate) fn test_venv_bin(name: &str) -> Result<PathBuf> {
    let home = std::env::var("HOME").context("HOME is not set")?;
    let path = PathBuf::from(home)
        .join(".cache/runnel-venv/bin")
        .join(name);
    if !path.exists() {
        bail!(
            "no {name} at {}: run ./scripts/test.sh (it makes the test virtualenv)",
            path.display()
        );
    }
    Ok(path)
}

impl S3Server {
    /// Starts the server and creates `bucket`.
    pub fn start(bucket: &str) -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(moto_binary()?)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting moto_server")?;
        let mut server = Self {
            child,
            port,
            bucket: bucket.to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if server.create_bucket().is_ok() {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("moto_server exited during start-up: {status}");
            }
            if Instant::now() > deadline {
                bail!("moto_server did not answer on port {port} within 60 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The endpoint URL (`s3.endpoint`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `WITH (…)` options that reach this server, for a connector.
    pub fn connector_options(&self) -> String {
        format!(
            "s3.endpoint = '{}', s3.region = 'us-east-1', s3.access-key = '{S3_KEY}', \
             s3.secret-key = '{S3_KEY}'",
            self.endpoint()
        )
    }

    fn client(&self) -> Result<object_store::aws::AmazonS3> {
        Ok(object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id(S3_KEY)
            .with_secret_access_key(S3_KEY)
            .build()?)
    }

    /// Writes object `path` in the bucket.
    pub async fn put_object(&self, path: &str, contents: &[u8]) -> Result<()> {
        use object_store::ObjectStoreExt;
        self.client()?
            .put(
                &object_store::path::Path::from(path),
                contents.to_vec().into(),
            )
            .await?;
        Ok(())
    }

    /// Every object under `prefix` in the bucket: (path, contents), by path.
    pub async fn objects(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        use futures::TryStreamExt;
        use object_store::{ObjectStore, ObjectStoreExt};
        let store = self.client()?;
        let prefix = object_store::path::Path::from(prefix);
        let listed: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
        let mut objects = vec![];
        for meta in listed {
            let bytes = store.get(&meta.location).await?.bytes().await?;
            objects.push((meta.location.to_string(), bytes.to_vec()));
        }
        objects.sort();
        Ok(objects)
    }

    /// The `runnel` flags that put checkpoints under `prefix` in the bucket.
    pub fn checkpoint_args(&self, prefix: &str) -> Vec<String> {
        [
            "--state-checkpoints-dir",
            &format!("s3://{}/{prefix}", self.bucket),
            "--s3-endpoint",
            &self.endpoint(),
            "--s3-region",
            "us-east-1",
            "--s3-access-key",
            S3_KEY,
            "--s3-secret-key",
            S3_KEY,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// `PUT /bucket` (moto does not check signatures).
    fn create_bucket(&self) -> Result<()> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "PUT /{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.bucket, self.port
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        if !response.starts_with("HTTP/1.1 200") && !response.starts_with("HTTP/1.0 200") {
            bail!(
                "creating bucket {}: {}",
                self.bucket,
                response.lines().next().unwrap_or("")
            );
        }
        Ok(())
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
