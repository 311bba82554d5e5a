//! Configuration: one YAML file (`conf/runnel.yaml` or `--config FILE`),
//! overridden by `RUNNEL_*` environment variables, overridden by flags.
//!
//! Every key is listed once in [`KEYS`], which generates the flags, the
//! environment variable names and `--help`. Flink's key names are accepted as
//! aliases where the meaning is the same.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};
use runnel_storage::checkpoint::S3Options;

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
        key: "storage.epoch-buffer-mb",
        aliases: &[],
        default: "16",
        help: "Uncommitted state writes all jobs together may hold in memory, in MiB; when full, sources wait for an early barrier (0: no limit)",
    },
    KeySpec {
        key: "state.cache-mb",
        aliases: &[],
        default: "256",
        help: "Decoded operator state (groups, join keys, windows) all jobs may cache in memory together, in MiB, least recently used entries evicted past it (0: no cache); at most three quarters of the machine's memory",
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
        key: "state.backend",
        aliases: &[],
        default: "rocksdb",
        help: "Where operator state lives: rocksdb (the default) or memory",
    },
    KeySpec {
        key: "state.checkpoints.dir",
        aliases: &[],
        default: "",
        help: "Where checkpoints go: file:///path, s3://bucket/path or hdfs://namenode:port/path (empty: file:// under the data directory)",
    },
    KeySpec {
        key: "state.checkpoints.num-retained",
        aliases: &[],
        default: "3",
        help: "Complete checkpoints kept; older ones and files no kept one references are deleted",
    },
    KeySpec {
        key: "execution.checkpointing.interval",
        aliases: &[],
        default: "10s",
        help: "Time between checkpoints, e.g. 10s, 500ms, 1min (0: no checkpoints)",
    },
    KeySpec {
        key: "execution.checkpointing.timeout",
        aliases: &[],
        default: "10min",
        help: "A checkpoint not complete after this long fails (and the next one retries)",
    },
    KeySpec {
        key: "execution.checkpointing.min-pause",
        aliases: &[],
        default: "0",
        help: "Least time between the end of one checkpoint and the start of the next",
    },
    KeySpec {
        key: "s3.endpoint",
        aliases: &[],
        default: "",
        help: "Endpoint of an S3-compatible service, e.g. http://127.0.0.1:9000 (empty: AWS)",
    },
    KeySpec {
        key: "s3.region",
        aliases: &[],
        default: "",
        help: "S3 region (empty: AWS_REGION or us-east-1)",
    },
    KeySpec {
        key: "s3.access-key",
        aliases: &[],
        default: "",
        help: "S3 access key id (empty: AWS_ACCESS_KEY_ID)",
    },
    KeySpec {
        key: "s3.secret-key",
        aliases: &[],
        default: "",
        help: "S3 secret access key (empty: AWS_SECRET_ACCESS_KEY)",
    },
    KeySpec {
        key: "s3.path.style.access",
        aliases: &[],
        default: "true",
        help: "Address buckets as endpoint/bucket rather than bucket.endpoint",
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
    /// `storage.epoch-buffer-mb`.
    pub epoch_buffer_mb: usize,
    /// `state.cache-mb`.
    pub state_cache_mb: usize,
    pub query_memory_limit_mb: usize,
    pub coordinator_address: String,
    pub coordinator_rpc_port: u16,
    pub worker_slots: u32,
    pub parallelism_default: u32,
    pub barrier_interval_ms: u64,
    pub source_idle_timeout_ms: u64,
    /// `state.backend`.
    pub state_backend: StateBackend,
    /// `state.checkpoints.*`, `execution.checkpointing.*` and `s3.*`.
    pub checkpoints: CheckpointConfig,
}

/// Where operator state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateBackend {
    RocksDb,
    Memory,
}

/// How and where checkpoints are taken.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// The location's URL (the default already resolved).
    pub dir: String,
    pub retained: usize,
    /// None: no checkpoints.
    pub interval: Option<Duration>,
    pub timeout: Duration,
    pub min_pause: Duration,
    pub s3: S3Options,
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
            epoch_buffer_mb: parse("storage.epoch-buffer-mb", &get("storage.epoch-buffer-mb"))?,
            state_cache_mb: parse_cache_mb(&get("state.cache-mb"))?,
            query_memory_limit_mb: parse("query.memory-limit-mb", &get("query.memory-limit-mb"))?,
            coordinator_address: get("coordinator.address"),
            coordinator_rpc_port: parse("coordinator.rpc-port", &get("coordinator.rpc-port"))?,
            worker_slots: parse("worker.slots", &get("worker.slots"))?,
            parallelism_default: parse_parallelism(&get("parallelism.default"))?,
            barrier_interval_ms: parse(
                "streaming.barrier-interval-ms",
                &get("streaming.barrier-interval-ms"),
            )?,
            source_idle_timeout_ms: parse(
                "source.idle-timeout-ms",
                &get("source.idle-timeout-ms"),
            )?,
            state_backend: match get("state.backend").trim().to_ascii_lowercase().as_str() {
                "rocksdb" => StateBackend::RocksDb,
                "memory" | "hashmap" => StateBackend::Memory,
                other => {
                    return Err(ConfigError::BadValue {
                        key: "state.backend".into(),
                        value: other.into(),
                        reason: "expected rocksdb or memory".into(),
                    });
                }
            },
            checkpoints: CheckpointConfig::from_values(&get)?,
        })
    }
}

/// `state.cache-mb`: refused when larger than three quarters of the
/// machine's memory (the rest is RocksDB's, the epoch buffer's, queries'
/// and the system's), so a typo does not surface as the OOM killer.
fn parse_cache_mb(value: &str) -> Result<usize, ConfigError> {
    let mb: usize = parse("state.cache-mb", value)?;
    if let Some(total) = physical_memory_mb()
        && mb > total / 4 * 3
    {
        return Err(ConfigError::BadValue {
            key: "state.cache-mb".into(),
            value: value.into(),
            reason: format!(
                "this machine has {total} MiB of memory; the cache may take at most {} MiB",
                total / 4 * 3
            ),
        });
    }
    Ok(mb)
}

/// The machine's memory in MiB (`MemTotal` of /proc/meminfo), when known.
fn physical_memory_mb() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: usize = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

impl CheckpointConfig {
    fn from_values(get: &dyn Fn(&'static str) -> String) -> Result<Self, ConfigError> {
        let optional = |key: &'static str| {
            let value = get(key).trim().to_string();
            (!value.is_empty()).then_some(value)
        };
        let interval = parse_duration(
            "execution.checkpointing.interval",
            &get("execution.checkpointing.interval"),
        )?;
        let dir = match optional("state.checkpoints.dir") {
            Some(dir) => dir,
            None => {
                let data = PathBuf::from(get("data.dir")).join("checkpoints");
                format!("file://{}", data.display())
            }
        };
        Ok(Self {
            dir,
            retained: parse(
                "state.checkpoints.num-retained",
                &get("state.checkpoints.num-retained"),
            )?,
            interval: (!interval.is_zero()).then_some(interval),
            timeout: parse_duration(
                "execution.checkpointing.timeout",
                &get("execution.checkpointing.timeout"),
            )?,
            min_pause: parse_duration(
                "execution.checkpointing.min-pause",
                &get("execution.checkpointing.min-pause"),
            )?,
            s3: S3Options {
                endpoint: optional("s3.endpoint"),
                region: optional("s3.region"),
                access_key: optional("s3.access-key"),
                secret_key: optional("s3.secret-key"),
                path_style_access: parse_bool(
                    "s3.path.style.access",
                    &get("s3.path.style.access"),
                )?,
            },
        })
    }
}

/// A duration as Flink writes them: `10s`, `500 ms`, `1min`, `2 h`; a bare
/// number is milliseconds.
fn parse_duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    let bad = |reason: &str| ConfigError::BadValue {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    };
    let text = value.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| bad("expected a duration such as 10s, 500ms or 1min"))?;
    let seconds = match unit.trim() {
        "" | "ms" | "milli" | "millis" | "milliseconds" => number / 1000.0,
        "s" | "sec" | "secs" | "second" | "seconds" => number,
        "m" | "min" | "mins" | "minute" | "minutes" => number * 60.0,
        "h" | "hour" | "hours" => number * 3600.0,
        _ => return Err(bad("unknown unit; use ms, s, min or h")),
    };
    Ok(Duration::from_secs_f64(seconds))
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

/// The most subtasks a fragment may have: a subtask owns key groups (and
/// a source reader keeps its position under its own), so more subtasks
/// than key groups would idle. `parallelism.default` and `SET
/// parallelism` take 1 to this.
pub(crate) const MAX_PARALLELISM: u32 = runnel_storage::state_table::KEY_GROUPS as u32;

/// `parallelism.default`: 1 to [`MAX_PARALLELISM`].
fn parse_parallelism(value: &str) -> Result<u32, ConfigError> {
    let key = "parallelism.default";
    match parse::<u32>(key, value)? {
        n if (1..=MAX_PARALLELISM).contains(&n) => Ok(n),
        _ => Err(ConfigError::BadValue {
            key: key.into(),
            value: value.into(),
            reason: format!("must be from 1 to {MAX_PARALLELISM}"),
        }),
    }
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
    fn durations_read_like_flinks() {
        let d = |v: &str| parse_duration("k", v).unwrap();
        assert_eq!(d("10s"), Duration::from_secs(10));
        assert_eq!(d("500 ms"), Duration::from_millis(500));
        assert_eq!(d("1min"), Duration::from_secs(60));
        assert_eq!(d("2h"), Duration::from_secs(7200));
        assert_eq!(d("250"), Duration::from_millis(250));
        assert_eq!(d("0"), Duration::ZERO);
        let error = parse_duration("execution.checkpointing.interval", "10 parsecs").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("execution.checkpointing.interval")
        );
        assert!(parse_duration("k", "soon").is_err());
    }

    #[test]
    fn checkpoints_default_to_the_data_directory() {
        let mut values = BTreeMap::new();
        values.insert("data.dir", "/srv/runnel".to_string());
        let config = Config::from_values(&values).unwrap();
        assert_eq!(config.checkpoints.dir, "file:///srv/runnel/checkpoints");
        assert_eq!(config.checkpoints.interval, Some(Duration::from_secs(10)));
        values.insert("execution.checkpointing.interval", "0".to_string());
        let config = Config::from_values(&values).unwrap();
        assert_eq!(config.checkpoints.interval, None);
    }

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
        for bad in ["0", "129"] {
            let mut values = read_yaml(&path).unwrap();
            values.insert("parallelism.default", bad.to_string());
            assert!(
                Config::from_values(&values).is_err(),
                "parallelism.default {bad}"
            );
        }
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
    fn a_state_cache_larger_than_memory_is_refused_naming_the_key() {
        let mut values = BTreeMap::new();
        values.insert("state.cache-mb", (1usize << 40).to_string());
        let refused = Config::from_values(&values).unwrap_err().to_string();
        assert!(refused.contains("state.cache-mb"), "{refused}");
        values.insert("state.cache-mb", "64".to_string());
        assert_eq!(Config::from_values(&values).unwrap().state_cache_mb, 64);
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
