//! Drives a real `runnel` process with tokio-postgres: prepared statements
//! with binary parameters and binary results for every supported type, and
//! the error, cancel and robustness guarantees of the protocol layer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use chrono::{NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use postgres_types::{FromSql, ToSql, Type};
use runnel_sql_tests::TestServer;
use rust_decimal::Decimal;
use tokio_postgres::{Client, NoTls};

fn server() -> TestServer {
    TestServer::start(Path::new(env!("CARGO_BIN_EXE_runnel"))).expect("start runnel")
}

async fn connect(server: &TestServer) -> Client {
    let (client, connection) = tokio_postgres::connect(&server.conn_str(), NoTls)
        .await
        .expect("connect");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// The single bigint (count) or int a query returns, as i64.
async fn scalar(client: &Client, sql: &str) -> i64 {
    let row = client.query_one(sql, &[]).await.expect(sql);
    match row.columns()[0].type_() {
        &Type::INT4 => i64::from(row.get::<_, i32>(0)),
        _ => row.get::<_, i64>(0),
    }
}

/// Postgres `interval` in its binary form.
#[derive(Debug, PartialEq)]
struct Interval {
    micros: i64,
    days: i32,
    months: i32,
}

impl<'a> FromSql<'a> for Interval {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        if raw.len() != 16 {
            return Err("interval must be 16 bytes".into());
        }
        Ok(Interval {
            micros: i64::from_be_bytes(raw[0..8].try_into()?),
            days: i32::from_be_bytes(raw[8..12].try_into()?),
            months: i32::from_be_bytes(raw[12..16].try_into()?),
        })
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
}

impl ToSql for Interval {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<postgres_types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.micros.to_be_bytes());
        out.extend_from_slice(&self.days.to_be_bytes());
        out.extend_from_slice(&self.months.to_be_bytes());
        Ok(postgres_types::IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }

    postgres_types::to_sql_checked!();
}

#[tokio::test]
async fn every_type_round_trips_in_binary_through_prepared_statements() {
    let server = server();
    let client = connect(&server).await;
    client
        .batch_execute(
            "CREATE TABLE all_types (
                id int PRIMARY KEY, b boolean, i2 smallint, i8 bigint, f4 real, f8 double precision,
                n numeric(12,3), t text, vc varchar(20), by bytea, d date, tm time, ts timestamp,
                tz timestamptz, iv interval, j json, jb jsonb)",
        )
        .await
        .unwrap();
    let insert = client
        .prepare(
            "INSERT INTO all_types VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        )
        .await
        .unwrap();
    let ts = NaiveDateTime::new(
        NaiveDate::from_ymd_opt(2024, 2, 29).unwrap(),
        NaiveTime::from_hms_micro_opt(13, 14, 15, 123456).unwrap(),
    );
    let tz = Utc.with_ymd_and_hms(2023, 12, 31, 23, 59, 59).unwrap();
    let json = serde_json::json!({"k": [1, 2, {"x": null}]});
    let interval = Interval {
        micros: 3_723_000_000,
        days: 4,
        months: 14,
    };
    // pgjdbc switches to binary after five executions; every execution here
    // is already binary, several times over.
    for id in 1..=6i32 {
        let n = Decimal::new(1234567 + id as i64, 3);
        let rows = client
            .execute(
                &insert,
                &[
                    &id,
                    &(id % 2 == 0),
                    &(id as i16 * -3),
                    &(i64::MAX - id as i64),
                    &(1.5f32 * id as f32),
                    &(-2.25f64 / id as f64),
                    &n,
                    &format!("text {id} ✓"),
                    &"varchar",
                    &vec![0u8, 1, 255, id as u8],
                    &NaiveDate::from_ymd_opt(1999, 12, id as u32).unwrap(),
                    &NaiveTime::from_hms_micro_opt(1, 2, 3, 4).unwrap(),
                    &ts,
                    &tz,
                    &interval,
                    &json,
                    &json,
                ],
            )
            .await
            .unwrap();
        assert_eq!(rows, 1);
    }
    let select = client
        .prepare("SELECT * FROM all_types WHERE id = $1")
        .await
        .unwrap();
    let columns: Vec<(String, Type)> = select
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.type_().clone()))
        .collect();
    let expected_types = [
        Type::INT4,
        Type::BOOL,
        Type::INT2,
        Type::INT8,
        Type::FLOAT4,
        Type::FLOAT8,
        Type::NUMERIC,
        Type::TEXT,
        Type::TEXT,
        Type::BYTEA,
        Type::DATE,
        Type::TIME,
        Type::TIMESTAMP,
        Type::TIMESTAMPTZ,
        Type::INTERVAL,
        Type::JSON,
        Type::JSONB,
    ];
    for ((name, ty), expected) in columns.iter().zip(expected_types.iter()) {
        assert_eq!(ty, expected, "column {name}");
    }
    for id in 1..=6i32 {
        let row = client.query_one(&select, &[&id]).await.unwrap();
        assert_eq!(row.get::<_, i32>("id"), id);
        assert_eq!(row.get::<_, bool>("b"), id % 2 == 0);
        assert_eq!(row.get::<_, i16>("i2"), id as i16 * -3);
        assert_eq!(row.get::<_, i64>("i8"), i64::MAX - id as i64);
        assert_eq!(row.get::<_, f32>("f4"), 1.5 * id as f32);
        assert_eq!(row.get::<_, f64>("f8"), -2.25 / id as f64);
        assert_eq!(
            row.get::<_, Decimal>("n"),
            Decimal::new(1234567 + id as i64, 3)
        );
        assert_eq!(row.get::<_, String>("t"), format!("text {id} ✓"));
        assert_eq!(row.get::<_, String>("vc"), "varchar");
        assert_eq!(row.get::<_, Vec<u8>>("by"), vec![0u8, 1, 255, id as u8]);
        assert_eq!(
            row.get::<_, NaiveDate>("d"),
            NaiveDate::from_ymd_opt(1999, 12, id as u32).unwrap()
        );
        assert_eq!(
            row.get::<_, NaiveTime>("tm"),
            NaiveTime::from_hms_micro_opt(1, 2, 3, 4).unwrap()
        );
        assert_eq!(row.get::<_, NaiveDateTime>("ts"), ts);
        assert_eq!(row.get::<_, chrono::DateTime<Utc>>("tz"), tz);
        assert_eq!(row.get::<_, Interval>("iv"), interval);
        assert_eq!(row.get::<_, serde_json::Value>("j"), json);
        assert_eq!(row.get::<_, serde_json::Value>("jb"), json);
    }
    // NULL in every column but the key, read back as None.
    client
        .execute("INSERT INTO all_types (id) VALUES ($1)", &[&100i32])
        .await
        .unwrap();
    let row = client.query_one(&select, &[&100i32]).await.unwrap();
    assert_eq!(row.get::<_, Option<bool>>("b"), None);
    assert_eq!(row.get::<_, Option<Decimal>>("n"), None);
    assert_eq!(row.get::<_, Option<serde_json::Value>>("jb"), None);
    assert_eq!(row.get::<_, Option<Interval>>("iv"), None);
}

#[tokio::test]
async fn startup_parameters_and_catalog_functions_satisfy_clients() {
    let server = server();
    let client = connect(&server).await;
    let row = client
        .query_one(
            "SELECT version(), current_database(), current_schema(), current_user",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, String>(0).starts_with("PostgreSQL 15."));
    assert_eq!(row.get::<_, String>(1), "runnel");
    assert_eq!(row.get::<_, String>(2), "public");
    assert_eq!(row.get::<_, String>(3), "runnel");
    for (setting, expected) in [
        ("server_version", "15.0"),
        ("standard_conforming_strings", "on"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
    ] {
        let rows = client
            .simple_query(&format!("SHOW {setting}"))
            .await
            .unwrap();
        let value = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        });
        assert_eq!(value.as_deref(), Some(expected), "SHOW {setting}");
    }
    let level = client
        .simple_query("SHOW TRANSACTION ISOLATION LEVEL")
        .await
        .unwrap();
    assert!(
        level
            .iter()
            .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
    );
}

#[tokio::test]
async fn errors_carry_sqlstates_and_the_session_survives_them() {
    let server = server();
    let client = connect(&server).await;
    let cases = [
        ("SELEC 1", "42601"),
        ("SELECT * FROM missing_table", "42P01"),
        ("SELECT no_such_column FROM (SELECT 1 AS a) s", "42703"),
        ("SELECT 1 / 0", "22012"),
        ("CREATE TABLE t (a int REFERENCES other (id))", "0A000"),
        ("SELECT runnel_test_panic()", "XX000"),
    ];
    for (sql, code) in cases {
        let err = client.simple_query(sql).await.expect_err(sql);
        let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
        assert_eq!(db.code().code(), code, "{sql}: {}", db.message());
        // The session still answers after every error.
        assert_eq!(scalar(&client, "SELECT 1::int AS one").await, 1);
    }
    let err = client.simple_query("SELECT 1;\nSELEC 2").await.unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "42601");
    assert!(matches!(
        db.position(),
        Some(tokio_postgres::error::ErrorPosition::Original(11))
    ));
    // A second client was never affected.
    let other = connect(&server).await;
    assert_eq!(scalar(&other, "SELECT 2::int").await, 2);
}

#[tokio::test]
async fn statements_in_a_failed_block_are_refused_until_rollback() {
    let server = server();
    let client = connect(&server).await;
    client
        .batch_execute("CREATE TABLE tx (a int)")
        .await
        .unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("INSERT INTO tx VALUES (1)")
        .await
        .unwrap();
    assert!(client.batch_execute("SELECT * FROM nope").await.is_err());
    let err = client
        .batch_execute("INSERT INTO tx VALUES (2)")
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "25P02");
    client.batch_execute("ROLLBACK").await.unwrap();
    // ROLLBACK undoes the block: the first insert is gone too.
    assert_eq!(scalar(&client, "SELECT count(*) FROM tx").await, 0);
}

#[tokio::test]
async fn cancel_request_and_statement_timeout_stop_a_running_query() {
    let server = server();
    let client = connect(&server).await;
    let slow = "SELECT count(*) FROM generate_series(1, 100000000000) a";
    let token = client.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(NoTls).await
    });
    let err = client.simple_query(slow).await.unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "57014");
    canceller.await.unwrap().unwrap();
    client
        .batch_execute("SET statement_timeout = '200ms'")
        .await
        .unwrap();
    let err = client.simple_query(slow).await.unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "57014");
    client
        .batch_execute("RESET statement_timeout")
        .await
        .unwrap();
    assert_eq!(scalar(&client, "SELECT 3::int").await, 3);
}

/// A startup packet for protocol 3.0 as user `runnel`.
fn startup_packet() -> Vec<u8> {
    let mut body = vec![];
    body.extend_from_slice(&196608i32.to_be_bytes());
    for s in ["user", "runnel", "database", "runnel"] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

fn read_until_ready(stream: &mut TcpStream) {
    let mut seen = vec![];
    let mut buf = [0u8; 4096];
    while !seen.windows(6).any(|w| w == [b'Z', 0, 0, 0, 5, b'I']) {
        let n = stream.read(&mut buf).expect("read startup reply");
        assert!(n > 0, "server closed during startup");
        seen.extend_from_slice(&buf[..n]);
    }
}

/// Opens a raw connection (after a normal startup when `startup`), sends
/// `messages` and reads until the server closes the connection.
fn send_and_wait_for_close(port: u16, startup: bool, messages: &[&[u8]]) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    if startup {
        stream.write_all(&startup_packet()).unwrap();
        read_until_ready(&mut stream);
    }
    for message in messages {
        stream.write_all(message).unwrap();
    }
    let mut rest = vec![];
    let _ = stream.read_to_end(&mut rest);
}

#[tokio::test]
async fn a_malformed_or_oversized_message_closes_only_that_connection() {
    let server = server();
    let client = connect(&server).await;
    client
        .batch_execute("CREATE TABLE kept (a int); INSERT INTO kept VALUES (1)")
        .await
        .unwrap();
    let port = server.pg_port;
    tokio::task::spawn_blocking(move || {
        // An oversized Query message.
        send_and_wait_for_close(
            port,
            true,
            &[&[b'Q', 0x7f, 0xff, 0xff, 0xff], &[b'x'; 1024]],
        );
        // A message of an unknown type.
        send_and_wait_for_close(port, true, &[&[b'!', 0, 0, 0, 4]]);
        // Garbage instead of a startup packet.
        send_and_wait_for_close(port, false, &[&[0xff; 64]]);
    })
    .await
    .unwrap();
    assert_eq!(scalar(&client, "SELECT count(*) FROM kept").await, 1);
    let fresh = connect(&server).await;
    assert_eq!(scalar(&fresh, "SELECT count(*) FROM kept").await, 1);
}

#[tokio::test]
async fn a_query_past_the_memory_limit_fails_alone() {
    let server = TestServer::start_with(
        Path::new(env!("CARGO_BIN_EXE_runnel")),
        &["--query-memory-limit-mb", "16"],
    )
    .expect("start runnel");
    let client = connect(&server).await;
    let err = client
        .simple_query(
            "SELECT count(*) FROM generate_series(1, 3000000) a \
             JOIN generate_series(1, 3000000) b ON a.value = b.value",
        )
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "53200", "{err}");
    assert_eq!(scalar(&client, "SELECT 4::int").await, 4);
}
