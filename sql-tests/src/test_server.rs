use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Whether a Postgres server answers on `port`: an SSLRequest gets `N` or
/// `S` (an HTTP server on the port, say, answers otherwise or not at all).
fn speaks_postgres(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let ssl_request = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let mut answer = [0u8; 1];
    stream.write_all(&ssl_request).is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && matches!(answer[0], b'N' | b'S')
}

/// The `runnel` binary to test: `$RUNNEL_BIN`, else the one built next to
/// the running executable (`target/debug/runnel`).
pub fn runnel_binary() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("RUNNEL_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe
        .parent()
        .context("executable has no directory")?
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let candidate = dir.join("runnel");
    if candidate.exists() {
        Ok(candidate)
    } else {
        bail!(
            "no runnel binary at {}; build it (cargo build -p runnel-server) or set RUNNEL_BIN",
            candidate.display()
        )
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running `runnel` process owned by a test.
pub struct TestServer {
    binary: PathBuf,
    data_dir: PathBuf,
    /// Keeps the temporary data directory alive when the server made it.
    _temp: Option<tempfile::TempDir>,
    pub pg_port: u16,
    pub web_port: u16,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl TestServer {
    /// Starts a server with a fresh temporary data directory.
    pub fn start(binary: &Path) -> Result<Self> {
        Self::start_with(binary, &[])
    }

    /// Starts a server with extra command-line options.
    pub fn start_with(binary: &Path, extra_args: &[&str]) -> Result<Self> {
        let temp = tempfile::tempdir()?;
        let data_dir = temp.path().join("data");
        let mut server = Self {
            binary: binary.to_path_buf(),
            data_dir,
            _temp: Some(temp),
            pg_port: free_port()?,
            web_port: free_port()?,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        server.spawn_on_free_ports()?;
        Ok(server)
    }

    /// Starts the process; a port free a moment ago can be taken by the
    /// time the server binds it (by another test's server or a client's
    /// ephemeral port), so a failed start is retried on other ports.
    fn spawn_on_free_ports(&mut self) -> Result<()> {
        let mut attempts = 0;
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) if attempts < 5 && e.to_string().contains("exited during start-up") => {
                    attempts += 1;
                    self.pg_port = free_port()?;
                    self.web_port = free_port()?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn spawn(&mut self) -> Result<()> {
        let child = Command::new(&self.binary)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--pgwire-port")
            .arg(self.pg_port.to_string())
            .arg("--web-port")
            .arg(self.web_port.to_string())
            .args(&self.extra_args)
            .env(
                "RUST_LOG",
                std::env::var("RUNNEL_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("RUNNEL_FAULT_INJECTION", "1")
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            // Something on the port answering as Postgres does is not yet
            // proof it is this process: another test's server may hold the
            // port this one failed to bind. Still running a moment later is.
            if speaks_postgres(self.pg_port) {
                std::thread::sleep(Duration::from_millis(200));
                if let Some(child) = self.child.as_mut()
                    && let Some(status) = child.try_wait()?
                {
                    bail!("runnel exited during start-up: {status}");
                }
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("runnel exited during start-up: {status}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "runnel did not accept connections on port {} within 60 s",
            self.pg_port
        )
    }

    /// The connection string for tokio-postgres.
    pub fn conn_str(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=runnel dbname=runnel",
            self.pg_port
        )
    }

    /// Kills the process with SIGKILL (no shutdown of any kind) and starts
    /// it again on the same data directory (and the same ports, unless
    /// they were taken meanwhile).
    pub fn kill_and_restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn_on_free_ports()
    }

    /// Starts the server with a barrier every 100 ms, so streaming tests
    /// see their results (and their sinks write) soon after the input.
    pub fn start_with_fast_barriers() -> Result<Self> {
        Self::start_with(
            &runnel_binary()?,
            &["--streaming-barrier-interval-ms", "100"],
        )
    }

    /// Runs `work` on a thread and, `delay` after it starts, kills the
    /// server with SIGKILL and starts it again; returns what `work` did.
    pub fn kill_during<T: Send>(
        &mut self,
        delay: std::time::Duration,
        work: impl FnOnce() -> Result<T> + Send,
    ) -> Result<T> {
        std::thread::scope(|scope| {
            let handle = scope.spawn(work);
            std::thread::sleep(delay);
            self.kill_and_restart()?;
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("the thread working during the kill panicked"))?
        })
    }

    /// Starts the process again after [`TestServer::kill`], on the same data
    /// directory.
    pub fn restart(&mut self) -> Result<()> {
        self.spawn_on_free_ports()
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Kills the process with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}
