//! What a message stands for under the source's `FORMAT`: `PLAIN` (a row
//! to append), `UPSERT` (the value is the key's new row, a null value
//! deletes the key) or `DEBEZIUM` (a change event with `before`, `after`
//! and `op`). Each message becomes zero or more changes, each an op and the
//! encoded row the value decoder reads; the engine's Upsert operator then
//! keeps the last row per primary key and emits retractions.

use std::borrow::Cow;

use runnel_engine::Op;
use serde_json::Value;

use super::format::BadMessage;

/// The message envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Plain,
    Upsert,
    Debezium,
}

impl Format {
    /// `FORMAT name`, None for one not known.
    pub(crate) fn named(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "plain" => Some(Format::Plain),
            "upsert" => Some(Format::Upsert),
            "debezium" => Some(Format::Debezium),
            _ => None,
        }
    }

    /// Whether messages carry upserts and deletes rather than new rows.
    pub(crate) fn is_changelog(self) -> bool {
        self != Format::Plain
    }
}

/// One change a message holds: the message's index, the op (Insert for an
/// upsert, Delete for a delete, of which only the key columns count) and
/// the encoded row.
#[derive(Debug)]
pub(crate) struct Change<'a> {
    pub message: usize,
    pub op: Op,
    pub row: Cow<'a, [u8]>,
}

/// A message's key and value, as the broker gave them.
pub(crate) struct Message<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// The changes of `messages` in order, and the messages that hold none
/// that can be read. `key_column`: the message key is a declared column
/// (`INCLUDE key AS …`), so an upsert tombstone whose key is not a JSON
/// object still names its row.
pub(crate) fn changes<'a>(
    format: Format,
    messages: &[Message<'a>],
    key_column: bool,
) -> (Vec<Change<'a>>, Vec<BadMessage>) {
    let mut changes = Vec::with_capacity(messages.len());
    let mut bad = vec![];
    for (index, message) in messages.iter().enumerate() {
        let found = match format {
            Format::Plain => plain(message),
            Format::Upsert => upsert(message, key_column),
            Format::Debezium => debezium(message),
        };
        match found {
            Ok(found) => changes.extend(found.into_iter().map(|(op, row)| Change {
                message: index,
                op,
                row,
            })),
            Err(reason) => bad.push(BadMessage { index, reason }),
        }
    }
    (changes, bad)
}

type Found<'a> = Result<Vec<(Op, Cow<'a, [u8]>)>, String>;

/// A value is a row; a message without one (a tombstone) holds none.
fn plain<'a>(message: &Message<'a>) -> Found<'a> {
    Ok(message
        .value
        .map(|v| (Op::Insert, Cow::Borrowed(v)))
        .into_iter()
        .collect())
}

fn upsert<'a>(message: &Message<'a>, key_column: bool) -> Found<'a> {
    if let Some(value) = message.value {
        return Ok(vec![(Op::Insert, Cow::Borrowed(value))]);
    }
    // A tombstone: the key names the row. A JSON object key holds the
    // primary key columns by name; a key that is itself the key column
    // (INCLUDE key) needs no value column at all.
    match message.key {
        Some(key) if is_json_object(key) => Ok(vec![(Op::Delete, Cow::Borrowed(key))]),
        Some(_) if key_column => Ok(vec![(Op::Delete, Cow::Borrowed(b"{}".as_slice()))]),
        Some(_) => Err(
            "a delete (null value) whose key is not a JSON object of the primary key columns"
                .into(),
        ),
        None => Err("a delete (null value) without a key".into()),
    }
}

fn is_json_object(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// A Debezium change event, with or without its `schema`/`payload`
/// wrapper. An update is the delete of `before` (when the event carries
/// it) then the upsert of `after`, so a changed primary key retracts the
/// old row. Tombstones, which follow deletes for compaction, hold nothing.
fn debezium<'a>(message: &Message<'a>) -> Found<'a> {
    let Some(value) = message.value else {
        return Ok(vec![]);
    };
    let event: Value =
        serde_json::from_slice(value).map_err(|e| format!("not a Debezium JSON event: {e}"))?;
    let event = match event.get("payload") {
        Some(payload) if event.get("op").is_none() => payload,
        _ => &event,
    };
    let row = |side: &str| -> Result<Option<Cow<'a, [u8]>>, String> {
        match event.get(side) {
            None | Some(Value::Null) => Ok(None),
            Some(object @ Value::Object(_)) => {
                Ok(Some(Cow::Owned(object.to_string().into_bytes())))
            }
            Some(other) => Err(format!(
                "Debezium event: '{side}' is {other}, not an object"
            )),
        }
    };
    let op = event
        .get("op")
        .and_then(Value::as_str)
        .ok_or("Debezium event without an 'op'")?;
    let (before, after) = (row("before")?, row("after")?);
    match (op, before, after) {
        ("c" | "r", _, Some(after)) => Ok(vec![(Op::Insert, after)]),
        ("u", before, Some(after)) => Ok(before
            .map(|b| (Op::Delete, b))
            .into_iter()
            .chain([(Op::Insert, after)])
            .collect()),
        ("d", Some(before), _) => Ok(vec![(Op::Delete, before)]),
        ("c" | "r" | "u", _, None) => Err(format!("Debezium '{op}' event without 'after'")),
        ("d", None, _) => Err("Debezium 'd' event without 'before'".into()),
        (other, _, _) => Err(format!(
            "Debezium op '{other}' (known: c, r, u, d; a truncate cannot be replayed as row changes)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(format: Format, messages: &[Message<'_>]) -> (Vec<(Op, String)>, Vec<usize>) {
        let (changes, bad) = changes(format, messages, false);
        (
            changes
                .iter()
                .map(|c| (c.op, String::from_utf8_lossy(&c.row).into_owned()))
                .collect(),
            bad.iter().map(|b| b.index).collect(),
        )
    }

    #[test]
    fn upsert_values_are_upserts_and_tombstones_delete_by_key() {
        let messages = [
            Message {
                key: Some(br#"{"id": 1}"#),
                value: Some(br#"{"id": 1, "v": 2}"#),
            },
            Message {
                key: Some(br#"{"id": 1}"#),
                value: None,
            },
            Message {
                key: Some(b"plain"),
                value: None,
            },
            Message {
                key: None,
                value: None,
            },
        ];
        let (found, bad) = ops(Format::Upsert, &messages);
        assert_eq!(
            found,
            [
                (Op::Insert, r#"{"id": 1, "v": 2}"#.to_string()),
                (Op::Delete, r#"{"id": 1}"#.to_string())
            ]
        );
        assert_eq!(bad, [2, 3]);
        let (with_key_column, bad) = changes(Format::Upsert, &messages[2..3], true);
        assert!(bad.is_empty());
        assert_eq!(with_key_column[0].row.as_ref(), b"{}");
    }

    #[test]
    fn debezium_events_become_deletes_and_upserts() {
        let messages = [
            Message {
                key: None,
                value: Some(br#"{"op": "c", "before": null, "after": {"id": 1}}"#),
            },
            Message {
                key: None,
                value: Some(
                    br#"{"schema": {}, "payload": {"op": "u", "before": {"id": 1}, "after": {"id": 2}}}"#,
                ),
            },
            Message {
                key: None,
                value: Some(br#"{"op": "d", "before": {"id": 2}, "after": null}"#),
            },
            Message {
                key: None,
                value: None,
            },
            Message {
                key: None,
                value: Some(br#"{"op": "t"}"#),
            },
            Message {
                key: None,
                value: Some(b"{"),
            },
        ];
        let (changes, bad) = ops(Format::Debezium, &messages);
        let id = |n: i32| format!(r#"{{"id":{n}}}"#);
        assert_eq!(
            changes,
            [
                (Op::Insert, id(1)),
                (Op::Delete, id(1)),
                (Op::Insert, id(2)),
                (Op::Delete, id(2)),
            ]
        );
        assert_eq!(bad, [4, 5]);
    }
}
