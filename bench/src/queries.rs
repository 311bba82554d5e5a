//! The Nexmark queries, in the SQL RisingWave and Flink use for them
//! (window functions in RisingWave's `TUMBLE(table, column, size)` form).

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
    (
        "q5",
        "SELECT AuctionBids.auction, AuctionBids.num FROM (\
           SELECT auction, count(*) AS num, window_start AS starttime \
           FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) \
           GROUP BY window_start, auction) AS AuctionBids \
         JOIN (\
           SELECT max(CountBids.num) AS maxn, CountBids.starttime_c FROM (\
             SELECT count(*) AS num, window_start AS starttime_c \
             FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) \
             GROUP BY auction, window_start) AS CountBids \
           GROUP BY CountBids.starttime_c) AS MaxBids \
         ON AuctionBids.starttime = MaxBids.starttime_c AND AuctionBids.num >= MaxBids.maxn",
        &[NexmarkTable::Bid],
    ),
    (
        "q7",
        "SELECT B.auction, B.price, B.bidder, B.date_time FROM bid B \
         JOIN (SELECT max(price) AS maxprice, window_end AS date_time \
               FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND) GROUP BY window_end) B1 \
         ON B.price = B1.maxprice \
         WHERE B.date_time BETWEEN B1.date_time - INTERVAL '10' SECOND AND B1.date_time",
        &[NexmarkTable::Bid],
    ),
    (
        "q8",
        "SELECT P.id, P.name, P.starttime FROM (\
           SELECT id, name, window_start AS starttime, window_end AS endtime \
           FROM TUMBLE(person, date_time, INTERVAL '10' SECOND) \
           GROUP BY id, name, window_start, window_end) P \
         JOIN (\
           SELECT seller, window_start AS starttime, window_end AS endtime \
           FROM TUMBLE(auction, date_time, INTERVAL '10' SECOND) \
           GROUP BY seller, window_start, window_end) A \
         ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime",
        &[NexmarkTable::Person, NexmarkTable::Auction],
    ),
];
