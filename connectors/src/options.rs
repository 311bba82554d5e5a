//! `WITH (…)` options of a source: read by name, every one used, so a typo
//! is an error rather than a silently ignored setting.

use std::collections::{BTreeMap, BTreeSet};

/// A source definition that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("missing option '{0}'")]
    Missing(String),
    #[error("option '{key}' = '{value}': {reason}")]
    BadValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error("unknown option(s) {0}")]
    Unknown(String),
    #[error("unknown option(s) {unknown}; accepted: {accepted}")]
    UnknownOf { unknown: String, accepted: String },
    #[error("{0} is not supported")]
    Unsupported(String),
    #[error("column \"{column}\": {reason}")]
    Column { column: String, reason: String },
}

/// The options, with the ones read so far remembered.
pub(crate) struct Options<'a> {
    values: &'a BTreeMap<String, String>,
    used: BTreeSet<String>,
}

impl<'a> Options<'a> {
    pub(crate) fn new(values: &'a BTreeMap<String, String>) -> Self {
        Self {
            values,
            used: BTreeSet::new(),
        }
    }

    /// The value of `key`, if given.
    pub(crate) fn get(&mut self, key: &str) -> Option<&'a str> {
        let value = self.values.get(key)?;
        self.used.insert(key.to_string());
        Some(value.as_str())
    }

    /// The value of `key`, which must be given.
    pub(crate) fn required(&mut self, key: &str) -> Result<&'a str, ConnectorError> {
        self.get(key)
            .ok_or_else(|| ConnectorError::Missing(key.into()))
    }

    /// The value of `key` parsed, if given.
    pub(crate) fn parse<T: std::str::FromStr>(
        &mut self,
        key: &str,
    ) -> Result<Option<T>, ConnectorError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(None),
            Some(value) => {
                value
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|e: T::Err| ConnectorError::BadValue {
                        key: key.into(),
                        value: value.into(),
                        reason: e.to_string(),
                    })
            }
        }
    }

    /// Every option whose key starts with `prefix`, as (rest of the key,
    /// value), in key order.
    pub(crate) fn with_prefix(&mut self, prefix: &str) -> Vec<(&'a str, &'a str)> {
        let found: Vec<(&'a str, &'a str)> = self
            .values
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?, v.as_str())))
            .collect();
        for (rest, _) in &found {
            self.used.insert(format!("{prefix}{rest}"));
        }
        found
    }

    /// Fails when an option was never read, naming the `accepted` ones.
    pub(crate) fn finish_accepting(self, accepted: &[&str]) -> Result<(), ConnectorError> {
        match self.finish() {
            Err(ConnectorError::Unknown(unknown)) => Err(ConnectorError::UnknownOf {
                unknown,
                accepted: accepted.join(", "),
            }),
            other => other,
        }
    }

    /// Fails when an option was never read.
    pub(crate) fn finish(self) -> Result<(), ConnectorError> {
        let unknown: Vec<String> = self
            .values
            .keys()
            .filter(|k| !self.used.contains(*k))
            .map(|k| format!("'{k}'"))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(ConnectorError::Unknown(unknown.join(", ")))
        }
    }
}

/// What a source does with a record (a Kafka message, a line of a file)
/// that does not decode: `format.error-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorPolicy {
    /// Skip it, count it (`skipped_messages` in SHOW JOBS) and log it.
    Skip,
    /// Fail the source (and so its jobs), naming where the record is.
    Fail,
}

impl ErrorPolicy {
    /// Reads `format.error-policy` (`skip`, the default, or `fail`).
    pub(crate) fn from_options(options: &mut Options<'_>) -> Result<Self, ConnectorError> {
        match options.get("format.error-policy") {
            None => Ok(ErrorPolicy::Skip),
            Some(p) if p.eq_ignore_ascii_case("skip") => Ok(ErrorPolicy::Skip),
            Some(p) if p.eq_ignore_ascii_case("fail") => Ok(ErrorPolicy::Fail),
            Some(other) => Err(ConnectorError::BadValue {
                key: "format.error-policy".into(),
                value: other.into(),
                reason: "must be 'skip' or 'fail'".into(),
            }),
        }
    }
}
