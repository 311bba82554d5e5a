//! Batch answers the streaming tests compare views with.

use std::collections::BTreeMap;

/// `SELECT g, count(*), sum(v) … GROUP BY g ORDER BY g` over `rows` of
/// (g, v), as text rows.
pub fn count_and_sum<'a>(rows: impl IntoIterator<Item = (&'a str, i64)>) -> Vec<Vec<String>> {
    let mut groups: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for (group, value) in rows {
        let entry = groups.entry(group).or_default();
        entry.0 += 1;
        entry.1 += value;
    }
    groups
        .into_iter()
        .map(|(group, (n, total))| vec![group.to_string(), n.to_string(), total.to_string()])
        .collect()
}
