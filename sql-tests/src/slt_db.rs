use std::time::Duration;

use async_trait::async_trait;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::TestServer;

/// What the runner reports for a failed statement: the SQLSTATE first, so
/// `statement error 42P01` checks the code.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct SltError {
    code: String,
    message: String,
}

impl SltError {
    /// An error of the runner itself.
    pub fn new(message: &str) -> Self {
        SltError {
            code: "runner".into(),
            message: message.into(),
        }
    }
}

impl From<tokio_postgres::Error> for SltError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => SltError {
                code: db.code().code().to_string(),
                message: db.message().to_string(),
            },
            None => SltError {
                code: "connection".into(),
                message: e.to_string(),
            },
        }
    }
}

/// A sqllogictest database: one connection to a [`TestServer`].
///
/// The pseudo-statement `RESTART` kills the server with SIGKILL, starts it
/// again on the same data and reconnects, so files can check what survives.
pub struct SltDatabase {
    server: TestServer,
    client: Client,
}

async fn connect(server: &TestServer) -> Result<Client, SltError> {
    let (client, connection) = tokio_postgres::connect(&server.conn_str(), NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

impl SltDatabase {
    /// Connects to `server`, taking ownership of it.
    pub async fn new(server: TestServer) -> Result<Self, SltError> {
        let client = connect(&server).await?;
        Ok(Self { server, client })
    }
}

#[async_trait]
impl AsyncDB for SltDatabase {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        if sql.trim().eq_ignore_ascii_case("RESTART") {
            self.server.kill_and_restart().map_err(|e| SltError {
                code: "restart".into(),
                message: e.to_string(),
            })?;
            self.client = connect(&self.server).await?;
            return Ok(DBOutput::StatementComplete(0));
        }
        let messages = self.client.simple_query(sql).await?;
        let mut rows = vec![];
        let mut columns = None;
        let mut affected = 0;
        for message in messages {
            match message {
                SimpleQueryMessage::RowDescription(desc) => columns = Some(desc.len()),
                SimpleQueryMessage::Row(row) => {
                    columns = Some(row.len());
                    rows.push(
                        (0..row.len())
                            .map(|i| match row.get(i) {
                                None => "NULL".to_string(),
                                Some("") => "(empty)".to_string(),
                                Some(v) => v.to_string(),
                            })
                            .collect(),
                    );
                }
                SimpleQueryMessage::CommandComplete(n) => affected = n,
                _ => {}
            }
        }
        match columns {
            Some(n) => Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Any; n],
                rows,
            }),
            None => Ok(DBOutput::StatementComplete(affected)),
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "runnel"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }
}
