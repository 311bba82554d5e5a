//! A Confluent schema registry's REST API, as far as Avro sources and
//! sinks use it: `GET /subjects` (does it answer), `GET /schemas/ids/{id}`
//! (a writer schema) and `POST /subjects/{subject}/versions` (register a
//! sink's schema, get its id). Requests run on the server's runtime from
//! the connectors' synchronous calls.

use std::time::Duration;

use crate::blocking::run_blocking;
use crate::options::ConnectorError;

/// How long a schema registry gets to answer.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(5);

/// A schema registry at one URL.
#[derive(Debug)]
pub(crate) struct Registry {
    url: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl Registry {
    /// The registry at `url` (`schema.registry`); nothing is asked yet.
    pub(crate) fn new(url: &str) -> Result<Self, ConnectorError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ConnectorError::Unsupported("a schema registry outside a runtime".into())
        })?;
        let client = reqwest::Client::builder()
            .timeout(REGISTRY_TIMEOUT)
            .build()
            .map_err(|e| ConnectorError::Unsupported(format!("an HTTP client: {e}")))?;
        Ok(Self {
            url: url.trim_end_matches('/').to_string(),
            client,
            runtime,
        })
    }

    /// Whether it answers `GET /subjects`.
    pub(crate) fn check(&self) -> Result<(), ConnectorError> {
        let bad = |reason: String| ConnectorError::BadValue {
            key: "schema.registry".into(),
            value: self.url.clone(),
            reason,
        };
        let (status, _) = self
            .send(self.client.get(format!("{}/subjects", self.url)))
            .map_err(|e| bad(format!("the schema registry does not answer: {e}")))?;
        if !status.is_success() {
            return Err(bad(format!("GET /subjects answers {status}")));
        }
        Ok(())
    }

    /// Schema `id` from the registry: Ok(Err) when it has none (or not an
    /// Avro record), Err when it does not answer.
    pub(crate) fn fetch(&self, id: u32) -> Result<Result<String, String>, String> {
        let url = &self.url;
        let answer = self.send(self.client.get(format!("{url}/schemas/ids/{id}")));
        let (status, body) = answer.map_err(|e| {
            format!("the schema registry at {url} does not answer for schema id {id}: {e}")
        })?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(Err(format!(
                "schema id {id} is not in the schema registry at {url}"
            )));
        }
        if !status.is_success() {
            return Err(format!(
                "the schema registry at {url} answers {status} for schema id {id}"
            ));
        }
        let parsed: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(parsed) => parsed,
            Err(e) => return Ok(Err(format!("schema id {id}: the registry's answer: {e}"))),
        };
        if parsed
            .get("schemaType")
            .and_then(|t| t.as_str())
            .is_some_and(|t| t != "AVRO")
        {
            return Ok(Err(format!("schema id {id} is not an Avro schema")));
        }
        Ok(match parsed.get("schema").and_then(|s| s.as_str()) {
            Some(schema) => Ok(schema.to_string()),
            None => Err(format!(
                "schema id {id}: the registry's answer holds no schema"
            )),
        })
    }

    /// Registers `schema` (Avro JSON) under `subject` and returns its id
    /// (the same id again for a schema registered before).
    pub(crate) fn register(&self, subject: &str, schema: &str) -> Result<u32, String> {
        let url = &self.url;
        let body = serde_json::json!({ "schema": schema }).to_string();
        let answer = self.send(
            self.client
                .post(format!("{url}/subjects/{subject}/versions"))
                .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                .body(body),
        );
        let (status, body) = answer.map_err(|e| {
            format!("the schema registry at {url} does not answer to register {subject}: {e}")
        })?;
        if !status.is_success() {
            return Err(format!(
                "the schema registry at {url} refuses the schema of {subject} ({status}): {}",
                String::from_utf8_lossy(&body)
            ));
        }
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("id").and_then(|id| id.as_u64()))
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| format!("the schema registry at {url} answered no id for {subject}"))
    }

    /// Sends `request` and reads the whole answer.
    fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, bytes::Bytes), reqwest::Error> {
        run_blocking(&self.runtime, async {
            let response = request.send().await?;
            let status = response.status();
            Ok((status, response.bytes().await?))
        })
    }
}
