//! A stand-in for a Confluent schema registry: `kafka_client.py registry`
//! (Python's `http.server`) answering `GET /subjects` and `GET
//! /schemas/ids/{id}` with the schemas it was given, on a free loopback
//! port, stopped when dropped. The registry itself (Java, under the
//! Confluent Community License) does not install here; its REST API for
//! reading schemas by id is all the Avro source uses.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::kafka_broker::{client_script, python};

/// A running stand-in registry.
pub struct SchemaRegistry {
    child: Child,
    port: u16,
    schemas: BTreeMap<u32, serde_json::Value>,
}

impl SchemaRegistry {
    /// Serves `schemas` (id → Avro schema) until dropped.
    pub fn start(schemas: &BTreeMap<u32, serde_json::Value>) -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = spawn(port, schemas)?;
        Ok(Self {
            child,
            port,
            schemas: schemas.clone(),
        })
    }

    /// Stops the registry (SIGKILL); [`SchemaRegistry::restart`] brings it
    /// back on the same port with the schemas it started with.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the registry again after [`SchemaRegistry::stop`].
    pub fn restart(&mut self) -> Result<()> {
        self.child = spawn(self.port, &self.schemas)?;
        Ok(())
    }

    /// `schema.registry` for this registry.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Runs the stand-in on `port` and waits until it listens.
fn spawn(port: u16, schemas: &BTreeMap<u32, serde_json::Value>) -> Result<Child> {
    let mut child = Command::new(python()?)
        .arg(client_script())
        .args(["-", "registry", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the schema registry stand-in")?;
    let by_id: serde_json::Map<String, serde_json::Value> = schemas
        .iter()
        .map(|(id, schema)| (id.to_string(), schema.clone()))
        .collect();
    {
        let mut stdin = child.stdin.take().context("registry stdin")?;
        stdin.write_all(serde_json::Value::Object(by_id).to_string().as_bytes())?;
    }
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("registry stdout")?).read_line(&mut line)?;
    if line.trim() != "listening" {
        let _ = child.kill();
        bail!("the schema registry stand-in did not start: {line:?}");
    }
    Ok(child)
}

impl Drop for SchemaRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
