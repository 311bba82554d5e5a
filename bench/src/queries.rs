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

/// The columns of a `CREATE SOURCE` of `table`, in SQL: every Nexmark
/// field (`BIGINT`, `TIMESTAMP` or `VARCHAR`).
pub fn declared_columns(table: NexmarkTable) -> String {
    table
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let sql_type = match f.data_type() {
                datafusion::arrow::datatypes::DataType::Int64 => "BIGINT",
                datafusion::arrow::datatypes::DataType::Timestamp(..) => "TIMESTAMP",
                _ => "VARCHAR",
            };
            format!("{} {sql_type}", f.name())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The SQL of query `name` and the tables it reads.
pub fn find(name: &str) -> anyhow::Result<(&'static str, &'static [NexmarkTable])> {
    ALL.iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, sql, tables)| (*sql, *tables))
        .ok_or_else(|| anyhow::anyhow!("unknown query {name}"))
}

/// Whether `sql` groups by a window (TUMBLE, HOP), so `EMIT ON WINDOW
/// CLOSE` applies to it.
pub fn has_windows(sql: &str) -> bool {
    sql.contains("TUMBLE(") || sql.contains("HOP(")
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
    (
        "q9",
        "SELECT id, item_name, description, initial_bid, reserve, date_time, expires, seller, \
           category, auction, bidder, price, bid_date_time FROM (\
           SELECT A.*, B.auction, B.bidder, B.price, B.date_time AS bid_date_time, \
             ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY B.price DESC, B.date_time ASC) AS rownum \
           FROM auction A, bid B \
           WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires) tmp \
         WHERE rownum <= 1",
        &[NexmarkTable::Auction, NexmarkTable::Bid],
    ),
    (
        "q10",
        // Flink's DATE_FORMAT(dateTime, 'yyyy-MM-dd') and 'HH:mm', as
        // chrono formats; the sink partitions its files by both.
        "SELECT auction, bidder, price, date_time, extra, \
           to_char(date_time, '%Y-%m-%d') AS dt, to_char(date_time, '%H:%M') AS hm FROM bid",
        &[NexmarkTable::Bid],
    ),
    (
        "q11",
        "SELECT bidder, count(*) AS bid_count, window_start AS starttime, window_end AS endtime \
         FROM SESSION(bid, date_time, INTERVAL '10' SECOND, bidder) \
         GROUP BY bidder, window_start, window_end",
        &[NexmarkTable::Bid],
    ),
    (
        "q13",
        // Flink joins the side input FOR SYSTEM_TIME AS OF the bid's
        // processing time; the file does not change while a run reads
        // it, so a regular join gives the same rows.
        "SELECT B.auction, B.bidder, B.price, B.date_time, S.value \
         FROM bid AS B INNER JOIN side_input AS S ON B.auction % 10000 = S.key",
        &[NexmarkTable::Bid],
    ),
    (
        "q14",
        "SELECT auction, bidder, 0.908 * price AS price, \
           CASE WHEN extract(hour FROM date_time) >= 8 AND extract(hour FROM date_time) <= 18 THEN 'dayTime' \
                WHEN extract(hour FROM date_time) <= 6 OR extract(hour FROM date_time) >= 20 THEN 'nightTime' \
                ELSE 'otherTime' END AS bid_time_type, \
           date_time, extra \
         FROM bid WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000",
        &[NexmarkTable::Bid],
    ),
    (
        "q15",
        "SELECT to_char(date_time, '%Y-%m-%d') AS day, count(*) AS total_bids, \
           count(*) FILTER (WHERE price < 10000) AS rank1_bids, \
           count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids, \
           count(*) FILTER (WHERE price >= 1000000) AS rank3_bids, \
           count(DISTINCT bidder) AS total_bidders, \
           count(DISTINCT bidder) FILTER (WHERE price < 10000) AS rank1_bidders, \
           count(DISTINCT bidder) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bidders, \
           count(DISTINCT bidder) FILTER (WHERE price >= 1000000) AS rank3_bidders, \
           count(DISTINCT auction) AS total_auctions, \
           count(DISTINCT auction) FILTER (WHERE price < 10000) AS rank1_auctions, \
           count(DISTINCT auction) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_auctions, \
           count(DISTINCT auction) FILTER (WHERE price >= 1000000) AS rank3_auctions \
         FROM bid GROUP BY to_char(date_time, '%Y-%m-%d')",
        &[NexmarkTable::Bid],
    ),
    (
        "q16",
        "SELECT channel, to_char(date_time, '%Y-%m-%d') AS day, max(to_char(date_time, '%H:%M')) AS minute, \
           count(*) AS total_bids, \
           count(*) FILTER (WHERE price < 10000) AS rank1_bids, \
           count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids, \
           count(*) FILTER (WHERE price >= 1000000) AS rank3_bids, \
           count(DISTINCT bidder) AS total_bidders, \
           count(DISTINCT bidder) FILTER (WHERE price < 10000) AS rank1_bidders, \
           count(DISTINCT auction) AS total_auctions, \
           count(DISTINCT auction) FILTER (WHERE price >= 1000000) AS rank3_auctions \
         FROM bid GROUP BY channel, to_char(date_time, '%Y-%m-%d')",
        &[NexmarkTable::Bid],
    ),
    (
        "q17",
        "SELECT auction, to_char(date_time, '%Y-%m-%d') AS day, count(*) AS total_bids, \
           count(*) FILTER (WHERE price < 10000) AS rank1_bids, \
           count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids, \
           count(*) FILTER (WHERE price >= 1000000) AS rank3_bids, \
           min(price) AS min_price, max(price) AS max_price, avg(price) AS avg_price, sum(price) AS sum_price \
         FROM bid GROUP BY auction, to_char(date_time, '%Y-%m-%d')",
        &[NexmarkTable::Bid],
    ),
    (
        "q18",
        "SELECT auction, bidder, price, channel, url, date_time, extra FROM (\
           SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC) AS rank_number \
           FROM bid) t \
         WHERE rank_number <= 1",
        &[NexmarkTable::Bid],
    ),
    (
        "q19",
        "SELECT * FROM (\
           SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC, date_time) AS rank_number \
           FROM bid) t \
         WHERE rank_number <= 10",
        &[NexmarkTable::Bid],
    ),
    (
        "q20",
        "SELECT auction, bidder, price, channel, url, B.date_time AS bid_date_time, B.extra AS bid_extra, \
           item_name, description, initial_bid, reserve, A.date_time AS auction_date_time, expires, \
           seller, category, A.extra AS auction_extra \
         FROM bid AS B INNER JOIN auction AS A ON B.auction = A.id WHERE A.category = 10",
        &[NexmarkTable::Bid, NexmarkTable::Auction],
    ),
    (
        "q21",
        "SELECT auction, bidder, price, channel, \
           CASE WHEN lower(channel) = 'apple' THEN '0' \
                WHEN lower(channel) = 'google' THEN '1' \
                WHEN lower(channel) = 'facebook' THEN '2' \
                WHEN lower(channel) = 'baidu' THEN '3' \
                ELSE regexp_replace(url, '.*channel_id=([^&]*).*', '\\1') END AS channel_id \
         FROM bid \
         WHERE url LIKE '%channel_id=%' OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu')",
        &[NexmarkTable::Bid],
    ),
    (
        "q22",
        "SELECT auction, bidder, price, channel, split_part(url, '/', 4) AS dir1, \
           split_part(url, '/', 5) AS dir2, split_part(url, '/', 6) AS dir3 FROM bid",
        &[NexmarkTable::Bid],
    ),
];

/// Queries that also read the side input (a CSV file, see `files`).
pub const SIDE_INPUT_READERS: &[&str] = &["q13"];

/// Queries that write to a file sink instead of a view (see `files`),
/// and the columns the sink writes.
pub const FILE_SINKS: &[(&str, &[&str])] = &[(
    "q10",
    &[
        "auction",
        "bidder",
        "price",
        "date_time",
        "extra",
        "dt",
        "hm",
    ],
)];

/// Nexmark queries the SQL surface cannot express here, and why.
pub const LEFT_OUT: &[(&str, &str)] = &[
    (
        "q6",
        "needs an aggregate over the last 10 rows per seller (ROWS BETWEEN), which a materialized view refuses",
    ),
    (
        "q12",
        "groups by processing time, which no batch query can reproduce",
    ),
];
