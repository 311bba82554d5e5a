//! Test support for Runnel: [`TestServer`] starts a real `runnel` process on
//! free ports with its own data directory, restarts it (also after
//! `SIGKILL`) and stops it when dropped; [`SltDatabase`] runs sqllogictest
//! records against it over pgwire.
//!
//! The `runnel-sql-tests` binary runs every `.slt` file under `slt/`.

mod slt_db;
mod test_server;

pub use slt_db::{SltDatabase, SltError};
pub use test_server::{TestServer, runnel_binary};
