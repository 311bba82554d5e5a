//! librdkafka's log lines and client errors into `tracing`, each kind at
//! most once per [`EVERY`] with a count of what was held back: a broker
//! that goes away makes librdkafka report every reconnect attempt of every
//! client, which flooded the server's log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;

/// At most one line per kind this often.
const EVERY: Duration = Duration::from_secs(10);

/// When each kind of line was last let through, and how many were held
/// back since.
#[derive(Debug, Default)]
pub(crate) struct QuietLogs {
    last: Mutex<HashMap<String, (Instant, u64)>>,
}

impl QuietLogs {
    /// Lines of `kind` held back since the last one let through, if this
    /// one may go.
    fn allow(&self, kind: &str) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match last.get_mut(kind) {
            Some((at, held)) if now.duration_since(*at) < EVERY => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let before = *held;
                (*at, *held) = (now, 0);
                Some(before)
            }
            None => {
                last.insert(kind.to_string(), (now, 0));
                Some(0)
            }
        }
    }

    /// A librdkafka log line (`fac` is its kind).
    pub(crate) fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if matches!(level, RDKafkaLogLevel::Debug) {
            tracing::debug!(target: "librdkafka", fac, "{message}");
            return;
        }
        let Some(held) = self.allow(fac) else {
            return;
        };
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", fac, held_back = held, "{message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", fac, held_back = held, "{message}")
            }
            _ => tracing::info!(target: "librdkafka", fac, held_back = held, "{message}"),
        }
    }

    /// A client error librdkafka reports (it retries on its own).
    pub(crate) fn error(&self, error: &KafkaError, reason: &str) {
        let kind = format!("error {:?}", error.rdkafka_error_code());
        if let Some(held) = self.allow(&kind) {
            tracing::warn!(target: "librdkafka", held_back = held, "{error}: {reason}");
        }
    }
}

/// The client context of Kafka sources: quiet logs.
#[derive(Debug, Default)]
pub(crate) struct SourceContext {
    logs: QuietLogs,
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.logs.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.logs.error(&error, reason);
    }
}

impl ConsumerContext for SourceContext {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_held_back_and_counted() {
        let logs = QuietLogs::default();
        assert_eq!(logs.allow("FAIL"), Some(0));
        assert_eq!(logs.allow("FAIL"), None);
        assert_eq!(logs.allow("FAIL"), None);
        assert_eq!(logs.allow("OTHER"), Some(0));
        if let Ok(mut last) = logs.last.lock()
            && let Some((at, _)) = last.get_mut("FAIL")
        {
            *at -= EVERY;
        }
        assert_eq!(logs.allow("FAIL"), Some(2));
    }
}
