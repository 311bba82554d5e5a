//! Session settings: `SET`, `SHOW`, `RESET` and what is reported to the
//! client with ParameterStatus.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use crate::config::MAX_PARALLELISM;
use crate::database::SERVER_VERSION;
use crate::error::{ServerError, ServerResult};

/// One known setting.
struct SettingSpec {
    /// Its name as ParameterStatus and SHOW spell it; SET, SHOW and RESET
    /// match it case-insensitively.
    name: &'static str,
    default: &'static str,
    /// Sent to the client in ParameterStatus when it changes.
    reported: bool,
    /// Cannot be changed by SET.
    read_only: bool,
}

const fn spec(
    name: &'static str,
    default: &'static str,
    reported: bool,
    read_only: bool,
) -> SettingSpec {
    SettingSpec {
        name,
        default,
        reported,
        read_only,
    }
}

const SETTINGS: &[SettingSpec] = &[
    spec("application_name", "", true, false),
    spec("client_encoding", "UTF8", true, false),
    spec("DateStyle", "ISO, MDY", true, false),
    spec("IntervalStyle", "postgres", true, false),
    spec("TimeZone", "UTC", true, false),
    spec("search_path", "\"$user\", public", false, false),
    spec("extra_float_digits", "1", false, false),
    spec("statement_timeout", "0", false, false),
    spec("lock_timeout", "0", false, false),
    spec("idle_in_transaction_session_timeout", "0", false, false),
    spec("bytea_output", "hex", false, false),
    spec("standard_conforming_strings", "on", true, true),
    spec("server_version", SERVER_VERSION, true, true),
    spec("server_version_num", "150000", false, true),
    spec("server_encoding", "UTF8", true, true),
    spec("integer_datetimes", "on", true, true),
    spec("is_superuser", "on", true, true),
    spec("max_identifier_length", "63", false, true),
    spec("max_index_keys", "32", false, true),
    spec("max_function_args", "100", false, true),
    spec("block_size", "8192", false, true),
    spec("transaction_isolation", "read committed", false, false),
    spec(
        "default_transaction_isolation",
        "read committed",
        false,
        false,
    ),
    spec("transaction_read_only", "off", false, false),
    spec("default_transaction_read_only", "off", true, false),
    spec("lc_messages", "C", false, false),
    spec("lc_monetary", "C", false, false),
    spec("lc_numeric", "C", false, false),
    spec("lc_time", "C", false, false),
    spec("client_min_messages", "notice", false, false),
    spec("row_security", "on", false, false),
    spec("synchronous_commit", "on", false, false),
    spec("parallelism", "1", false, false),
];

fn find(name: &str) -> ServerResult<&'static SettingSpec> {
    SETTINGS
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(name))
        .ok_or(ServerError::UnknownSetting(name.to_string()))
}

/// A session's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    values: BTreeMap<&'static str, String>,
}

/// A change the client must be told about.
pub type ReportedChange = (String, String);

impl Settings {
    /// The defaults, with the session's parallelism from the configuration.
    pub fn new(parallelism: u32) -> Self {
        let mut values: BTreeMap<&'static str, String> = SETTINGS
            .iter()
            .map(|s| (s.name, s.default.to_string()))
            .collect();
        values.insert("parallelism", parallelism.to_string());
        Self { values }
    }

    fn current(&self, spec: &SettingSpec) -> String {
        self.values.get(spec.name).cloned().unwrap_or_default()
    }

    /// The current value of `name`.
    pub fn get(&self, name: &str) -> ServerResult<(&'static str, String)> {
        let spec = find(name)?;
        Ok((spec.name, self.current(spec)))
    }

    /// Every setting, for `SHOW ALL`.
    pub fn all(&self) -> Vec<(&'static str, String)> {
        SETTINGS.iter().map(|s| (s.name, self.current(s))).collect()
    }

    /// Every setting as `pg_settings` lists it.
    pub fn listed(&self) -> Vec<crate::catalog::ListedSetting> {
        SETTINGS
            .iter()
            .map(|s| crate::catalog::ListedSetting {
                name: s.name.to_string(),
                value: self.current(s),
                default: s.default.to_string(),
                read_only: s.read_only,
            })
            .collect()
    }

    /// Sets `name` (None resets it to its default). Returns the change to
    /// report to the client, if the setting is reported.
    pub fn set(&mut self, name: &str, value: Option<&str>) -> ServerResult<Option<ReportedChange>> {
        let spec = find(name)?;
        let value = match value {
            None => spec.default.to_string(),
            Some(v) => {
                if spec.read_only {
                    if v.eq_ignore_ascii_case(spec.default) {
                        return Ok(None);
                    }
                    return Err(ServerError::ReadOnlySetting(spec.name.into()));
                }
                validate(spec, v)?
            }
        };
        self.values.insert(spec.name, value.clone());
        Ok(spec.reported.then(|| (spec.name.to_string(), value)))
    }

    /// Resets every settable setting; returns the reported changes.
    pub fn reset_all(&mut self) -> Vec<ReportedChange> {
        let mut changes = vec![];
        for spec in SETTINGS
            .iter()
            .filter(|s| !s.read_only && s.name != "parallelism")
        {
            if self.values.get(spec.name).map(String::as_str) != Some(spec.default) {
                self.values.insert(spec.name, spec.default.to_string());
                if spec.reported {
                    changes.push((spec.name.to_string(), spec.default.to_string()));
                }
            }
        }
        changes
    }

    /// Every reported setting, for the startup ParameterStatus messages.
    pub fn reported(&self) -> Vec<ReportedChange> {
        SETTINGS
            .iter()
            .filter(|s| s.reported)
            .map(|s| (s.name.to_string(), self.current(s)))
            .collect()
    }

    /// The schemas of `search_path` in order, `"$user"` left out.
    pub fn search_path(&self) -> Vec<String> {
        self.values
            .get("search_path")
            .map(|p| {
                p.split(',')
                    .map(|s| s.trim().trim_matches('"').to_string())
                    .filter(|s| !s.is_empty() && s != "$user")
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `statement_timeout`, None when 0 (no limit).
    pub fn statement_timeout(&self) -> Option<Duration> {
        self.values
            .get("statement_timeout")
            .and_then(|v| parse_duration_ms(v))
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
    }

    /// Raw value of a setting known to exist.
    pub fn value(&self, name: &'static str) -> String {
        self.get(name).map(|(_, v)| v).unwrap_or_default()
    }
}

fn invalid(spec: &SettingSpec, value: &str, hint: &str) -> ServerError {
    ServerError::InvalidSettingValue {
        name: spec.name.into(),
        value: value.into(),
        hint: hint.into(),
    }
}

fn validate(spec: &SettingSpec, value: &str) -> ServerResult<String> {
    let trimmed = value.trim();
    match spec.name {
        "client_encoding" => {
            let normalized = trimmed.to_ascii_uppercase().replace(['-', '_'], "");
            if normalized == "UTF8" || normalized == "UNICODE" {
                Ok("UTF8".into())
            } else {
                Err(invalid(spec, value, "only UTF8 is supported"))
            }
        }
        "DateStyle" => {
            let upper = trimmed.to_ascii_uppercase();
            let order = ["MDY", "DMY", "YMD"]
                .into_iter()
                .find(|o| upper.contains(o))
                .unwrap_or("MDY");
            if upper
                .split(',')
                .all(|p| matches!(p.trim(), "ISO" | "MDY" | "DMY" | "YMD" | ""))
            {
                Ok(format!("ISO, {order}"))
            } else {
                Err(invalid(
                    spec,
                    value,
                    "only the ISO output style is supported",
                ))
            }
        }
        "IntervalStyle" => match trimmed.to_ascii_lowercase().as_str() {
            "postgres" => Ok("postgres".into()),
            _ => Err(invalid(
                spec,
                value,
                "only the postgres interval style is supported",
            )),
        },
        "TimeZone" => {
            let upper = trimmed.to_ascii_uppercase();
            if matches!(
                upper.as_str(),
                "UTC" | "GMT" | "Z" | "ETC/UTC" | "ZULU" | "UCT"
            ) {
                Ok("UTC".into())
            } else if datafusion::arrow::array::timezone::Tz::from_str(trimmed).is_ok() {
                Ok(trimmed.to_string())
            } else {
                Err(invalid(
                    spec,
                    value,
                    "use UTC, an offset such as +02:00, or an IANA name",
                ))
            }
        }
        "extra_float_digits" => match trimmed.parse::<i8>() {
            Ok(n) if (-15..=3).contains(&n) => Ok(n.to_string()),
            _ => Err(invalid(spec, value, "an integer from -15 to 3")),
        },
        "statement_timeout" | "lock_timeout" | "idle_in_transaction_session_timeout" => {
            parse_duration_ms(trimmed)
                .map(|ms| ms.to_string())
                .ok_or_else(|| {
                    invalid(
                        spec,
                        value,
                        "milliseconds, or a number with ms, s, min or h",
                    )
                })
        }
        "bytea_output" => match trimmed.to_ascii_lowercase().as_str() {
            "hex" => Ok("hex".into()),
            _ => Err(invalid(spec, value, "only hex is supported")),
        },
        "parallelism" => match trimmed.parse::<u32>() {
            Ok(n) if (1..=MAX_PARALLELISM).contains(&n) => Ok(n.to_string()),
            _ => Err(invalid(
                spec,
                value,
                &format!("an integer from 1 to {MAX_PARALLELISM}"),
            )),
        },
        _ => Ok(trimmed.to_string()),
    }
}

/// Parses `5000`, `5000ms`, `5s`, `2min`, `1h` into milliseconds.
fn parse_duration_ms(value: &str) -> Option<u64> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" => 1,
        "s" => 1_000,
        "min" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    number.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_show_reset() {
        let mut settings = Settings::new(1);
        let change = settings.set("TimeZone", Some("Europe/Berlin")).unwrap();
        assert_eq!(change, Some(("TimeZone".into(), "Europe/Berlin".into())));
        assert_eq!(settings.get("timezone").unwrap().1, "Europe/Berlin");
        settings.set("statement_timeout", Some("5s")).unwrap();
        assert_eq!(settings.statement_timeout(), Some(Duration::from_secs(5)));
        settings.set("search_path", Some("app, public")).unwrap();
        assert_eq!(settings.search_path(), vec!["app", "public"]);
        settings.set("timezone", None).unwrap();
        assert_eq!(settings.get("TIMEZONE").unwrap().1, "UTC");
    }

    #[test]
    fn bad_values_and_names_are_refused() {
        let mut settings = Settings::new(1);
        assert!(matches!(
            settings.set("nope", Some("1")),
            Err(ServerError::UnknownSetting(_))
        ));
        assert!(matches!(
            settings.set("client_encoding", Some("LATIN1")),
            Err(ServerError::InvalidSettingValue { .. })
        ));
        assert!(matches!(
            settings.set("timezone", Some("Mars/Olympus")),
            Err(ServerError::InvalidSettingValue { .. })
        ));
        for bad in ["0", "129", "two"] {
            assert!(matches!(
                settings.set("parallelism", Some(bad)),
                Err(ServerError::InvalidSettingValue { .. })
            ));
        }
        settings.set("parallelism", Some("128")).unwrap();
        assert!(matches!(
            settings.set("server_version", Some("9.6")),
            Err(ServerError::ReadOnlySetting(_))
        ));
        assert_eq!(
            settings
                .set("standard_conforming_strings", Some("on"))
                .unwrap(),
            None
        );
    }
}
