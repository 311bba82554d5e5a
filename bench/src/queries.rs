//! The Nexmark queries, in the SQL RisingWave and Flink use for them.

use runnel_connectors::NexmarkTable;

/// The SQL name of a Nexmark table.
pub fn table_name(table: NexmarkTable) -> &'static str {
    match table {
        NexmarkTable::Person => "person",
        NexmarkTable::Auction => "auction",
        NexmarkTable::Bid => "bid",
    }
}

/// (name, query, the tables it reads).
pub const ALL: &[(&str, &str, &[NexmarkTable])] = &[
    (
        "q0",
        "SELECT auction, bidder, price, date_time FROM bid",
        &[NexmarkTable::Bid],
    ),
    (
        "q1",
        "SELECT auction, bidder, 0.908 * price AS price, date_time FROM bid",
        &[NexmarkTable::Bid],
    ),
    (
        "q2",
        "SELECT auction, price FROM bid WHERE auction % 123 = 0",
        &[NexmarkTable::Bid],
    ),
    (
        "q3",
        "SELECT p.name, p.city, p.state, a.id FROM auction AS a JOIN person AS p ON a.seller = p.id \
         WHERE a.category = 10 AND (p.state = 'OR' OR p.state = 'ID' OR p.state = 'CA')",
        &[NexmarkTable::Auction, NexmarkTable::Person],
    ),
    (
        "q4",
        "SELECT q.category, avg(q.final) AS avg FROM (SELECT max(b.price) AS final, a.category \
         FROM auction a, bid b WHERE a.id = b.auction AND b.date_time BETWEEN a.date_time AND a.expires \
         GROUP BY a.id, a.category) q GROUP BY q.category",
        &[NexmarkTable::Auction, NexmarkTable::Bid],
    ),
];
