//! Test support for Runnel: [`TestServer`] starts a real `runnel` process on
//! free ports with its own data directory, restarts it (also after
//! `SIGKILL`) and stops it when dropped; [`SltDatabase`] runs sqllogictest
//! records against it over pgwire; [`S3Server`] runs an S3-compatible
//! server for checkpoint and connector tests; [`KafkaBroker`] runs a
//! Kafka-protocol broker and produces messages to it with an outside client;
//! [`SchemaRegistry`] stands in for a Confluent schema registry.
//!
//! The `runnel-sql-tests` binary runs every `.slt` file under `slt/`.

mod client;
mod kafka_broker;
mod oracle;
mod rng;
mod s3_server;
mod schema_registry;
mod slt_db;
mod test_server;

pub use client::{JobRow, connect, error_of, job_state, sorted_lines, text_rows, wait_for_rows};
pub use kafka_broker::{Consumed, ConsumedAvro, ConsumerRun, KafkaBroker, Produced};
pub use oracle::count_and_sum;
pub use rng::Rng;
pub use s3_server::{S3_KEY, S3Server};
pub use schema_registry::SchemaRegistry;
pub use slt_db::{SltDatabase, SltError};
pub use test_server::{TestServer, runnel_binary};
