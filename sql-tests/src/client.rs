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

/// The rows of `sql` as sorted text lines, values joined by `|` (a
/// multiset, for comparing two queries' answers).
pub async fn sorted_lines(client: &Client, sql: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = text_rows(client, sql)
        .await?
        .into_iter()
        .map(|row| row.join("|"))
        .collect();
    out.sort();
    Ok(out)
}

/// Waits until `sql` returns `want`; fails with the last rows seen if it
/// does not within `wait`.
pub async fn wait_for_rows(
    client: &Client,
    sql: &str,
    want: &[Vec<String>],
    wait: std::time::Duration,
) -> Result<()> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let rows = text_rows(client, sql).await?;
        if rows == want {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("{sql}: after {wait:?} got {rows:?}, want {want:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A job's row in SHOW JOBS, by the job's schema-qualified name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    pub status: String,
    pub error: String,
    pub skipped_messages: String,
}

/// What SHOW JOBS says of job `name`.
pub async fn job_state(client: &Client, name: &str) -> Result<JobRow> {
    for message in client.simple_query("SHOW JOBS").await? {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message
            && row.get("name") == Some(name)
        {
            let column = |c: &str| row.get(c).unwrap_or("").to_string();
            return Ok(JobRow {
                status: column("status"),
                error: column("error"),
                skipped_messages: column("skipped_messages"),
            });
        }
    }
    anyhow::bail!("SHOW JOBS does not list {name}")
}

/// The SQLSTATE and message of the error `sql` gets; an error itself when
/// `sql` succeeds or fails other than with a server error.
pub async fn error_of(client: &Client, sql: &str) -> Result<(String, String)> {
    match client.batch_execute(sql).await {
        Ok(()) => anyhow::bail!("{sql}: succeeded, want an error"),
        Err(e) => {
            let db = e.as_db_error().context("not a server error")?;
            Ok((db.code().code().to_string(), db.message().to_string()))
        }
    }
}
