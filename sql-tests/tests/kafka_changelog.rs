//! Changelog sources against a real Kafka-protocol broker (tansu): topics
//! of upserts (`FORMAT UPSERT`) and of Debezium change events (`FORMAT
//! DEBEZIUM`) feed materialized views that retract correctly. Each test
//! applies the same messages in order to a map here, the batch oracle, and
//! checks both the source's rows and an aggregation over them, also after
//! the server is killed with SIGKILL while messages keep coming.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use runnel_sql_tests::{
    KafkaBroker, Produced, TestServer, connect, count_and_sum, wait_for_rows as wait_for,
};

/// A deterministic pseudo-random sequence (a 64-bit LCG), so a failure
/// replays the same messages.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// An account's row: region and balance, keyed by id.
type Accounts = BTreeMap<i64, (String, i64)>;

/// One message of the upsert topic and what it does to the oracle.
struct Upsert {
    id: i64,
    /// None: a tombstone, which deletes the id.
    row: Option<(String, i64)>,
}

fn upserts(rng: &mut Lcg, count: usize) -> Vec<Upsert> {
    (0..count)
        .map(|_| {
            let id = rng.below(16) as i64;
            let row = (rng.below(5) != 0)
                .then(|| (format!("r{}", rng.below(3)), rng.below(1000) as i64 - 200));
            Upsert { id, row }
        })
        .collect()
}

fn apply_upserts(accounts: &mut Accounts, messages: &[Upsert]) {
    for message in messages {
        match &message.row {
            Some(row) => accounts.insert(message.id, row.clone()),
            None => accounts.remove(&message.id),
        };
    }
}

/// Produces `messages`, each to partition id % 2 so one id's messages
/// keep their order, with the key `{"id": n}`.
fn produce_upserts(broker: &KafkaBroker, topic: &str, messages: &[Upsert]) -> Result<()> {
    let encoded: Vec<(i32, String, Option<String>)> = messages
        .iter()
        .map(|m| {
            let value = m.row.as_ref().map(|(region, balance)| {
                format!(
                    r#"{{"id": {}, "region": "{region}", "balance": {balance}}}"#,
                    m.id
                )
            });
            ((m.id % 2) as i32, format!(r#"{{"id": {}}}"#, m.id), value)
        })
        .collect();
    let produced: Vec<Produced<'_>> = encoded
        .iter()
        .map(|(partition, key, value)| (*partition, Some(key.as_str()), value.as_deref()))
        .collect();
    broker.produce(topic, &produced)
}

fn account_rows(accounts: &Accounts) -> Vec<Vec<String>> {
    accounts
        .iter()
        .map(|(id, (region, balance))| vec![id.to_string(), region.clone(), balance.to_string()])
        .collect()
}

/// region → (accounts, total balance): what `by_region` must hold.
fn region_rows(accounts: &Accounts) -> Vec<Vec<String>> {
    count_and_sum(
        accounts
            .values()
            .map(|(region, balance)| (region.as_str(), *balance)),
    )
}

const ACCOUNTS: &str = "SELECT id, region, balance FROM accounts_now ORDER BY id";
const BY_REGION: &str = "SELECT region, n, total FROM by_region ORDER BY region";

async fn check_accounts(server: &TestServer, accounts: &Accounts, when: &str) -> Result<()> {
    let client = connect(server).await?;
    let wait = Duration::from_secs(60);
    wait_for(&client, ACCOUNTS, &account_rows(accounts), wait)
        .await
        .with_context(|| format!("accounts_now {when}"))?;
    wait_for(&client, BY_REGION, &region_rows(accounts), wait)
        .await
        .with_context(|| format!("by_region {when}"))
}

#[tokio::test]
async fn upsert_topic_retracts_across_kills() -> Result<()> {
    let broker = KafkaBroker::start()?;
    broker.create_topic("accounts", 2)?;
    let mut rng = Lcg(7);
    let first = upserts(&mut rng, 200);
    produce_upserts(&broker, "accounts", &first)?;
    let mut accounts = Accounts::new();
    apply_upserts(&mut accounts, &first);

    let mut server = TestServer::start_with_fast_barriers()?;
    let client = connect(&server).await?;
    client
        .batch_execute(&format!(
            "CREATE SOURCE accounts (id bigint, region varchar, balance bigint, PRIMARY KEY (id))
               WITH (connector = 'kafka', topic = 'accounts',
                     properties.bootstrap.server = '{}')
               FORMAT UPSERT ENCODE JSON;
             CREATE MATERIALIZED VIEW accounts_now AS SELECT id, region, balance FROM accounts;
             CREATE MATERIALIZED VIEW by_region AS
               SELECT region, count(*) AS n, sum(balance) AS total FROM accounts GROUP BY region",
            broker.bootstrap()
        ))
        .await?;
    check_accounts(&server, &accounts, "after the first messages").await?;

    for round in 0..2u64 {
        let more = upserts(&mut rng, 300);
        let producing = server.kill_during(Duration::from_millis(200 + 300 * round), || {
            produce_upserts(&broker, "accounts", &more)
        });
        producing.context("producing while killing")?;
        apply_upserts(&mut accounts, &more);
        check_accounts(&server, &accounts, &format!("after kill {round}")).await?;
    }
    Ok(())
}

/// One Debezium change event and how it is sent.
struct Event {
    json: String,
    /// Sent a second time right after, as an at-least-once CDC pipeline may.
    duplicated: bool,
    /// Followed by a tombstone, as Debezium does after a delete.
    tombstone: bool,
}

fn order_json(id: i64, (customer, amount): &(String, i64)) -> String {
    format!(r#"{{"id": {id}, "customer": "{customer}", "amount": {amount}}}"#)
}

/// Change events on orders keyed by id, applied to `orders` as they are
/// made: creates of new ids, updates (some moving an order to a new id,
/// which retracts the old one), deletes; some wrapped in the
/// `schema`/`payload` envelope.
fn change_events(
    rng: &mut Lcg,
    orders: &mut Accounts,
    count: usize,
    next_id: &mut i64,
) -> Vec<Event> {
    let mut events = Vec::with_capacity(count);
    for _ in 0..count {
        let existing: Vec<i64> = orders.keys().copied().collect();
        let pick = rng.below(10);
        let row = (format!("c{}", rng.below(4)), rng.below(500) as i64);
        let (body, tombstone) = if existing.is_empty() || pick < 4 {
            let id = *next_id;
            *next_id += 1;
            let body = format!(
                r#""op": "c", "before": null, "after": {}"#,
                order_json(id, &row)
            );
            orders.insert(id, row);
            (body, false)
        } else {
            let id = existing[rng.below(existing.len() as u64) as usize];
            let before = orders[&id].clone();
            if pick < 8 {
                // An update; one in four moves the order to a new id.
                let new_id = if rng.below(4) == 0 {
                    *next_id += 1;
                    *next_id - 1
                } else {
                    id
                };
                let body = format!(
                    r#""op": "u", "before": {}, "after": {}"#,
                    order_json(id, &before),
                    order_json(new_id, &row)
                );
                orders.remove(&id);
                orders.insert(new_id, row);
                (body, false)
            } else {
                let body = format!(
                    r#""op": "d", "before": {}, "after": null"#,
                    order_json(id, &before)
                );
                orders.remove(&id);
                (body, true)
            }
        };
        let json = if rng.below(3) == 0 {
            format!(r#"{{"schema": {{"type": "struct"}}, "payload": {{{body}, "ts_ms": 1}}}}"#)
        } else {
            format!("{{{body}, \"source\": {{\"table\": \"orders\"}}}}")
        };
        events.push(Event {
            json,
            duplicated: rng.below(8) == 0,
            tombstone,
        });
    }
    events
}

fn produce_events(broker: &KafkaBroker, topic: &str, events: &[Event]) -> Result<()> {
    let mut produced: Vec<Produced<'_>> = vec![];
    for event in events {
        produced.push((0, None, Some(event.json.as_str())));
        if event.duplicated {
            produced.push((0, None, Some(event.json.as_str())));
        }
        if event.tombstone {
            produced.push((0, None, None));
        }
    }
    broker.produce(topic, &produced)
}

/// customer → (orders, total amount) over `orders`.
fn customer_rows(orders: &Accounts) -> Vec<Vec<String>> {
    region_rows(orders)
}

#[tokio::test]
async fn debezium_topic_retracts_updates_and_deletes_across_a_kill() -> Result<()> {
    let broker = KafkaBroker::start()?;
    broker.create_topic("orders_cdc", 1)?;
    let mut rng = Lcg(11);
    let mut orders = Accounts::new();
    let mut next_id = 1;
    let first = change_events(&mut rng, &mut orders, 250, &mut next_id);
    produce_events(&broker, "orders_cdc", &first)?;

    let mut server = TestServer::start_with_fast_barriers()?;
    let client = connect(&server).await?;
    client
        .batch_execute(&format!(
            "CREATE SOURCE orders (id bigint, customer varchar, amount bigint, PRIMARY KEY (id))
               WITH (connector = 'kafka', topic = 'orders_cdc',
                     properties.bootstrap.server = '{}')
               FORMAT DEBEZIUM ENCODE JSON;
             CREATE MATERIALIZED VIEW per_customer AS
               SELECT customer, count(*) AS n, sum(amount) AS total FROM orders GROUP BY customer",
            broker.bootstrap()
        ))
        .await?;
    let query = "SELECT customer, n, total FROM per_customer ORDER BY customer";
    let wait = Duration::from_secs(60);
    wait_for(&client, query, &customer_rows(&orders), wait)
        .await
        .context("after the first events")?;

    let more = change_events(&mut rng, &mut orders, 400, &mut next_id);
    let producing = server.kill_during(Duration::from_millis(300), || {
        produce_events(&broker, "orders_cdc", &more)
    });
    producing.context("producing while killing")?;
    let client = connect(&server).await?;
    wait_for(&client, query, &customer_rows(&orders), wait)
        .await
        .context("after the kill")?;
    Ok(())
}
