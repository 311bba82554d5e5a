//! What Kafka sources and sinks share: the librdkafka configuration from
//! `WITH (…)` options and the look-up of a topic's partitions.

use std::time::Duration;

use rdkafka::client::{Client, ClientContext};
use rdkafka::config::ClientConfig;

use crate::options::{ConnectorError, Options};

/// How long CREATE SOURCE / CREATE SINK waits for the broker to answer.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// `properties.bootstrap.server` (or `…servers`) and every other
/// `properties.<name>`, passed to librdkafka as `<name>` (security, SASL,
/// TLS). Returns the configuration and the bootstrap servers.
pub(crate) fn client_config(
    options: &mut Options<'_>,
) -> Result<(ClientConfig, String), ConnectorError> {
    let servers = match (
        options.get("properties.bootstrap.server"),
        options.get("properties.bootstrap.servers"),
    ) {
        (Some(s), _) | (None, Some(s)) => s.to_string(),
        (None, None) => {
            return Err(ConnectorError::Missing(
                "properties.bootstrap.server".into(),
            ));
        }
    };
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &servers);
    for (key, value) in options.with_prefix("properties.") {
        if key == "bootstrap.server" || key == "bootstrap.servers" {
            continue;
        }
        config.set(key, value);
    }
    Ok((config, servers))
}

/// The error for a configuration librdkafka refuses.
pub(crate) fn refused(servers: &str, error: rdkafka::error::KafkaError) -> ConnectorError {
    ConnectorError::BadValue {
        key: "properties.*".into(),
        value: servers.to_string(),
        reason: format!("librdkafka refused the configuration: {error}"),
    }
}

/// The partitions of `topic` as the broker knows them now, sorted.
pub(crate) fn topic_partitions<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, String> {
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| format!("cannot reach the Kafka broker: {e}"))?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(format!("the broker does not list topic '{topic}'"));
    };
    if let Some(error) = found.error() {
        return Err(format!(
            "topic '{topic}': {:?} (does the topic exist?)",
            rdkafka::types::RDKafkaErrorCode::from(error)
        ));
    }
    let mut ids: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    Ok(ids)
}
