//! Small pgwire client helpers the integration tests share.

use anyhow::{Context, Result};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::TestServer;

/// Connects to `server`, running the connection on a task of its own.
pub async fn connect(server: &TestServer) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(&server.conn_str(), NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The rows `sql` returns (simple protocol), each value as text; NULL as
/// `NULL`.
pub async fn text_rows(client: &Client, sql: &str) -> Result<Vec<Vec<String>>> {
    let mut out = vec![];
    for message in client
        .simple_query(sql)
        .await
        .with_context(|| sql.to_string())?
    {
        if let SimpleQueryMessage::Row(row) = message {
            out.push(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            );
        }
    }
    Ok(out)
}
