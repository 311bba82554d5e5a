//! Configuration: one YAML file (`conf/runnel.yaml` or `--config FILE`),
//! overridden by `RUNNEL_*` environment variables, overridden by flags.
//!
//! Every key is listed once in [`KEYS`], which generates the flags, the
//! environment variable names and `--help`. Flink's key names are accepted as
//! aliases where the meaning is the same.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, ArgMatches, Command};

/// One configuration key.
pub struct KeySpec {
    /// The canonical dotted key, e.g. `pgwire.port`.
    pub key: &'static str,
    /// Flink (or other) names meaning the same.
    pub aliases: &'static [&'static str],
    /// The default as text.
    pub default: &'static str,
    /// What the key does, for `--help`.
    pub help: &'static str,
}

/// Every configuration key Runnel knows.
pub const KEYS: &[KeySpec] = &[
    KeySpec {
        key: "pgwire.host",
        aliases: &[],
        default: "127.0.0.1",
        help: "Address the PostgreSQL wire protocol listens on",
    },
    KeySpec {
        key: "pgwire.port",
        aliases: &[],
        default: "4577",
        help: "Port of the PostgreSQL wire protocol (psql -p)",
    },
    KeySpec {
        key: "pgwire.max-connections",
        aliases: &[],
        default: "256",
        help: "Connections served at once; more wait for a free place",
    },
    KeySpec {
        key: "web.host",
        aliases: &["rest.address", "rest.bind-address"],
        default: "127.0.0.1",
        help: "Address of the HTTP server (health, overview, REST)",
    },
    KeySpec {
        key: "web.port",
        aliases: &["rest.port"],
        default: "8081",
        help: "Port of the HTTP server",
    },
    KeySpec {
        key: "data.dir",
        aliases: &[],
        default: "./runnel-data",
        help: "Directory of the catalog, table rows and state",
    },
    KeySpec {
        key: "storage.sync-writes",
        aliases: &[],
        default: "true",
        help: "fsync the write-ahead log before a statement returns",
    },
    KeySpec {
        key: "storage.block-cache-mb",
        aliases: &[],
        default: "64",
        help: "RocksDB block cache size in MiB",
    },
    KeySpec {
        key: "storage.write-buffer-mb",
        aliases: &[],
        default: "64",
        help: "Memory RocksDB's memtables may hold together before they are flushed, in MiB (counted in the block cache's budget)",
    },
    KeySpec {
        key: "process.malloc-arenas",
        aliases: &[],
        default: "2",
        help: "glibc malloc arenas the process may use, with large blocks always mapped on their own (0: glibc's defaults, eight arenas per core); this keeps a long-running server's resident memory from creeping up",
    },
    KeySpec {
        key: "query.memory-limit-mb",
        aliases: &[],
        default: "4096",
        help: "Memory all running queries may hold together; past it they spill or fail with 53200",
    },
    KeySpec {
        key: "coordinator.address",
        aliases: &["jobmanager.rpc.address"],
        default: "127.0.0.1",
        help: "Address workers reach the coordinator at",
    },
    KeySpec {
        key: "coordinator.rpc-port",
        aliases: &["jobmanager.rpc.port"],
        default: "6123",
        help: "RPC port of the coordinator (the cluster mode uses it)",
    },
    KeySpec {
        key: "worker.slots",
        aliases: &["taskmanager.numberOfTaskSlots"],
        default: "2",
        help: "Task slots of a worker",
    },
    KeySpec {
        key: "parallelism.default",
        aliases: &[],
        default: "1",
        help: "Parallelism of a new job unless the session sets one",
    },
    KeySpec {
        key: "streaming.barrier-interval-ms",
        aliases: &[],
        default: "250",
        help: "Milliseconds between barriers: how often materialized views commit new results",
    },
    KeySpec {
        key: "source.idle-timeout-ms",
        aliases: &["table.exec.source.idle-timeout"],
        default: "0",
        help: "Milliseconds after which an input whose watermark stands still stops holding back the watermark of a union or join (0: never)",
    },
];

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub pgwire_host: String,
    pub pgwire_port: u16,
    pub max_connections: usize,
    pub web_host: String,
    pub web_port: u16,
    pub data_dir: PathBuf,
    pub sync_writes: bool,
    pub block_cache_mb: usize,
    /// `storage.write-buffer-mb`.
    pub write_buffer_mb: usize,
    /// `process.malloc-arenas`.
    pub malloc_arenas: u32,
    pub query_memory_limit_mb: usize,
    pub coordinator_address: String,
    pub coordinator_rpc_port: u16,
    pub worker_slots: u32,
    pub parallelism_default: u32,
    pub barrier_interval_ms: u64,
    pub source_idle_timeout_ms: u64,
}

/// A bad configuration, reported before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("unknown configuration key '{key}' in {path}")]
    UnknownKey { key: String, path: String },
    #[error("configuration key '{key}' = '{value}': {reason}")]
    BadValue {
        key: String,
        value: String,
        reason: String,
    },
}

fn flag_name(key: &str) -> String {
    key.replace('.', "-")
}

fn env_name(key: &str) -> String {
    format!("RUNNEL_{}", key.replace(['.', '-'], "_").to_uppercase())
}

/// Flag and variable names are built once per process from [`KEYS`].
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// The clap command: the role subcommands and one flag per key.
pub fn command() -> Command {
    let mut command =
        Command::new("runnel")
            .about("Runnel: a streaming SQL database that speaks the PostgreSQL wire protocol")
            .version(env!("CARGO_PKG_VERSION"))
            .arg(
                Arg::new("config")
                    .long("config")
                    .env("RUNNEL_CONFIG")
                    .global(true)
                    .help("YAML configuration file [default: conf/runnel.yaml if it exists]"),
            )
            .subcommand(Command::new("standalone").about(
                "Coordinator and one worker in one process (the default with no subcommand)",
            ));
    for spec in KEYS {
        let flag = flag_name(spec.key);
        let mut help = format!("{} [key: {}", spec.help, spec.key);
        if !spec.aliases.is_empty() {
            help.push_str(&format!(", also {}", spec.aliases.join(", ")));
        }
        help.push_str(&format!("; default: {}]", spec.default));
        command = command.arg(
            Arg::new(spec.key)
                .long(leak(flag))
                .env(leak(env_name(spec.key)))
                .global(true)
                .action(ArgAction::Set)
                .help(help),
        );
    }
    command
}

impl Config {
    /// Resolves the configuration from parsed arguments (flags and
    /// environment) and the YAML file they name.
    pub fn from_matches(matches: &ArgMatches) -> Result<Self, ConfigError> {
        let explicit = matches.get_one::<String>("config").map(PathBuf::from);
        let default_file = PathBuf::from("conf/runnel.yaml");
        let file = match explicit {
            Some(path) => Some(path),
            None => default_file.exists().then_some(default_file),
        };
        let mut values: BTreeMap<&'static str, String> = BTreeMap::new();
        if let Some(path) = &file {
            values.extend(read_yaml(path)?);
        }
        for spec in KEYS {
            if let Some(v) = matches.get_one::<String>(spec.key) {
                values.insert(spec.key, v.clone());
            }
        }
        Self::from_values(&values)
    }

    /// Resolves the configuration from key/value pairs (defaults fill in).
    pub fn from_values(values: &BTreeMap<&'static str, String>) -> Result<Self, ConfigError> {
        let get = |key: &'static str| -> String {
            values.get(key).cloned().unwrap_or_else(|| {
                KEYS.iter()
                    .find(|s| s.key == key)
                    .map(|s| s.default.to_string())
                    .unwrap_or_default()
            })
        };
        Ok(Self {
            pgwire_host: get("pgwire.host"),
            pgwire_port: parse("pgwire.port", &get("pgwire.port"))?,
            max_connections: parse("pgwire.max-connections", &get("pgwire.max-connections"))?,
            web_host: get("web.host"),
            web_port: parse("web.port", &get("web.port"))?,
            data_dir: PathBuf::from(get("data.dir")),
            sync_writes: parse_bool("storage.sync-writes", &get("storage.sync-writes"))?,
            block_cache_mb: parse("storage.block-cache-mb", &get("storage.block-cache-mb"))?,
            write_buffer_mb: parse("storage.write-buffer-mb", &get("storage.write-buffer-mb"))?,
            malloc_arenas: parse("process.malloc-arenas", &get("process.malloc-arenas"))?,
            query_memory_limit_mb: parse("query.memory-limit-mb", &get("query.memory-limit-mb"))?,
            coordinator_address: get("coordinator.address"),
            coordinator_rpc_port: parse("coordinator.rpc-port", &get("coordinator.rpc-port"))?,
            worker_slots: parse("worker.slots", &get("worker.slots"))?,
            parallelism_default: parse("parallelism.default", &get("parallelism.default"))?,
            barrier_interval_ms: parse(
                "streaming.barrier-interval-ms",
                &get("streaming.barrier-interval-ms"),
            )?,
            source_idle_timeout_ms: parse(
                "source.idle-timeout-ms",
                &get("source.idle-timeout-ms"),
            )?,
        })
    }
}

fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|e: T::Err| ConfigError::BadValue {
            key: key.into(),
            value: value.into(),
            reason: e.to_string(),
        })
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Ok(true),
        "false" | "off" | "no" | "0" => Ok(false),
        _ => Err(ConfigError::BadValue {
            key: key.into(),
            value: value.into(),
            reason: "expected true or false".into(),
        }),
    }
}

/// Reads a YAML file, nested maps or dotted keys alike, into canonical keys.
fn read_yaml(path: &Path) -> Result<BTreeMap<&'static str, String>, ConfigError> {
    let file_error = |reason: String| ConfigError::File {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    let document: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| file_error(e.to_string()))?;
    let mut flat = BTreeMap::new();
    flatten("", &document, &mut flat);
    let mut out = BTreeMap::new();
    for (key, value) in flat {
        let spec = KEYS
            .iter()
            .find(|s| s.key == key || s.aliases.contains(&key.as_str()))
            .ok_or_else(|| ConfigError::UnknownKey {
                key: key.clone(),
                path: path.display().to_string(),
            })?;
        out.insert(spec.key, value);
    }
    Ok(out)
}

fn flatten(prefix: &str, value: &serde_yaml::Value, out: &mut BTreeMap<String, String>) {
    use serde_yaml::Value;
    let scalar = match value {
        Value::Mapping(map) => {
            for (k, v) in map {
                let k = match k {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                let key = if prefix.is_empty() {
                    k
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
            return;
        }
        Value::Null => return,
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    };
    out.insert(prefix.to_string(), scalar);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_accepts_nested_dotted_and_flink_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runnel.yaml");
        std::fs::write(
            &path,
            "pgwire:\n  port: 5000\ntaskmanager.numberOfTaskSlots: 8\nparallelism.default: 3\n",
        )
        .unwrap();
        let config = Config::from_values(&read_yaml(&path).unwrap()).unwrap();
        assert_eq!(config.pgwire_port, 5000);
        assert_eq!(config.worker_slots, 8);
        assert_eq!(config.parallelism_default, 3);
        assert_eq!(config.web_port, 8081);
    }

    #[test]
    fn the_shipped_config_file_is_valid_and_says_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/runnel.yaml");
        let from_file = Config::from_values(&read_yaml(&path).unwrap()).unwrap();
        let defaults = Config::from_values(&BTreeMap::new()).unwrap();
        assert_eq!(format!("{from_file:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runnel.yaml");
        std::fs::write(&path, "pgwire.prot: 5000\n").unwrap();
        assert!(matches!(
            read_yaml(&path),
            Err(ConfigError::UnknownKey { .. })
        ));
        let mut values = BTreeMap::new();
        values.insert("pgwire.port", "many".to_string());
        assert!(matches!(
            Config::from_values(&values),
            Err(ConfigError::BadValue { .. })
        ));
    }

    #[test]
    fn flags_override_and_env_names() {
        assert_eq!(env_name("pgwire.port"), "RUNNEL_PGWIRE_PORT");
        assert_eq!(
            env_name("coordinator.rpc-port"),
            "RUNNEL_COORDINATOR_RPC_PORT"
        );
        let matches = command()
            .try_get_matches_from(["runnel", "--pgwire-port", "6000", "--data-dir", "/tmp/x"])
            .unwrap();
        let config = Config::from_matches(&matches).unwrap();
        assert_eq!(config.pgwire_port, 6000);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
    }
}
