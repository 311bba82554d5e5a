//! One chunk through a join, a step at a time over all its rows: their
//! keys encoded into one buffer; the other side's rows with the same key
//! copied into another (a run of rows with one key copies them once); the
//! extra condition evaluated over every pair in one batch; then each row
//! applied in order (the other side's degrees, padded rows, the row's own
//! state); the output assembled a column at a time, this side's columns
//! taken from the chunk and the other side's decoded from the copies.

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions, UInt32Array,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::Schema;
use datafusion::common::HashMap;
use runnel_storage::key_codec::encode_nullable_key;
use runnel_storage::row_codec::{RowDecoder, encode_row};
use runnel_storage::state_table::key_group;

use super::{HashJoinOperator, KeptRow, KeyRows, MATCHABLE, UNMATCHABLE, split_value, start_value};
use crate::graph::JoinSide;
use crate::watermarks::order_key_at;
use crate::{EngineError, EngineResult, Op, StreamChunk};

/// The keys of a chunk's rows, encoded into one buffer. A row's bytes are
/// its cache key (key group, big endian; tag; join key length, big
/// endian; join key), then its stream key; its state key is all but the
/// key group.
pub(super) struct ChunkKeys {
    bytes: Vec<u8>,
    /// Per row: where its bytes start, where its cache key ends, where its
    /// bytes end.
    bounds: Vec<[usize; 3]>,
}

impl ChunkKeys {
    fn encode(spec: &JoinSide, batch: &RecordBatch, nulls_equal: bool) -> EngineResult<Self> {
        let rows = batch.num_rows();
        let keys: Vec<&ArrayRef> = spec.keys.iter().map(|&k| batch.column(k)).collect();
        let stream: Vec<&ArrayRef> = spec.stream_key.iter().map(|&k| batch.column(k)).collect();
        let mut bytes = Vec::with_capacity(rows * 32);
        let mut bounds = Vec::with_capacity(rows);
        for row in 0..rows {
            let start = bytes.len();
            let unmatchable = !nulls_equal && keys.iter().any(|c| c.is_null(row));
            let tag = if unmatchable { UNMATCHABLE } else { MATCHABLE };
            bytes.extend_from_slice(&[0, 0, tag, 0, 0, 0, 0]);
            let key_start = bytes.len();
            encode_nullable_key(&keys, row, &mut bytes)?;
            let length = (bytes.len() - key_start) as u32;
            bytes[start + 3..key_start].copy_from_slice(&length.to_be_bytes());
            let group = key_group(&bytes[key_start..]);
            bytes[start..start + 2].copy_from_slice(&group.to_be_bytes());
            let prefix_end = bytes.len();
            encode_nullable_key(&stream, row, &mut bytes)?;
            bounds.push([start, prefix_end, bytes.len()]);
        }
        Ok(Self { bytes, bounds })
    }

    /// Row `row`'s key group and state key.
    pub(super) fn keyed(&self, row: usize) -> &[u8] {
        let [start, _, end] = self.bounds[row];
        &self.bytes[start..end]
    }

    /// Row `row`'s cache key: key group, tag and join key.
    fn cache_key(&self, row: usize) -> &[u8] {
        let [start, prefix_end, _] = self.bounds[row];
        &self.bytes[start..prefix_end]
    }

    fn state_key(&self, row: usize) -> &[u8] {
        let [start, _, end] = self.bounds[row];
        &self.bytes[start + 2..end]
    }

    fn matchable(&self, row: usize) -> bool {
        self.bytes[self.bounds[row][0] + 2] == MATCHABLE
    }
}

/// The other side's rows met by a chunk's rows, copied back to back.
#[derive(Default)]
struct Gathered {
    /// Rows as the row codec encodes them.
    rows: Vec<u8>,
    /// State keys, when degrees are tracked.
    keys: Vec<u8>,
    entries: Vec<GatheredRow>,
}

struct GatheredRow {
    row: Range<usize>,
    key: Range<usize>,
    degree: i64,
}

impl Gathered {
    /// Copies a stored row (degree, then the encoded row), with its state
    /// key when `with_key`.
    fn push(&mut self, state_key: &[u8], value: &[u8], with_key: bool) -> EngineResult<()> {
        let (degree, row) = split_value(value)?;
        let start = self.rows.len();
        self.rows.extend_from_slice(row);
        let key_start = self.keys.len();
        if with_key {
            self.keys.extend_from_slice(state_key);
        }
        self.entries.push(GatheredRow {
            row: start..self.rows.len(),
            key: key_start..self.keys.len(),
            degree,
        });
        Ok(())
    }

    fn row(&self, entry: u32) -> &[u8] {
        &self.rows[self.entries[entry as usize].row.clone()]
    }

    fn key(&self, entry: u32) -> &[u8] {
        &self.keys[self.entries[entry as usize].key.clone()]
    }
}

/// A chunk row and a row of the other side with its join key.
#[derive(Clone, Copy)]
struct Pair {
    own: u32,
    theirs: u32,
}

/// Where an output row's columns of one side come from.
#[derive(Clone, Copy)]
enum Source {
    /// A row of the chunk.
    Own(u32),
    /// A gathered row of the other side.
    Theirs(u32),
    /// Nulls (padding).
    Null,
}

/// One output row: the op, then where its left and right columns come
/// from.
type OutRow = (Op, Source, Source);

impl HashJoinOperator {
    /// Joins a chunk arriving on `side` and emits what it changes.
    pub(super) fn join_chunk(
        &mut self,
        side: usize,
        chunk: &StreamChunk,
    ) -> EngineResult<Option<StreamChunk>> {
        let other = 1 - side;
        let keys = ChunkKeys::encode(&self.sides[side], chunk.data(), self.nulls_equal)?;
        let with_keys = self.tracks_degree(other);
        let mut gathered = Gathered::default();
        let mut pairs = vec![];
        let mut last: Option<(usize, Range<usize>)> = None;
        for row in 0..chunk.num_rows() {
            if !keys.matchable(row) {
                continue;
            }
            // The other side does not change while the chunk is gathered:
            // a row with the key of the one before meets the same rows.
            let range = match &last {
                Some((previous, range)) if keys.cache_key(*previous) == keys.cache_key(row) => {
                    range.clone()
                }
                _ => {
                    let start = gathered.entries.len();
                    self.gather(other, keys.cache_key(row), &mut gathered, with_keys)?;
                    start..gathered.entries.len()
                }
            };
            pairs.extend(range.clone().map(|theirs| Pair {
                own: row as u32,
                theirs: theirs as u32,
            }));
            last = Some((row, range));
        }
        let pairs = self.filter_pairs(side, chunk, &gathered, pairs)?;

        let mut degrees = HashMap::default();
        let mut out = vec![];
        let mut at = 0;
        for row in 0..chunk.num_rows() {
            let end = at + pairs[at..].partition_point(|p| p.own as usize == row);
            self.apply_row(
                side,
                chunk,
                &keys,
                row,
                (&pairs[at..end], &gathered),
                &mut degrees,
                &mut out,
            )?;
            at = end;
        }
        if out.is_empty() {
            return Ok(None);
        }
        let batch = self.build(side, chunk, &gathered, &out)?;
        let ops: Vec<Op> = out.iter().map(|(op, _, _)| *op).collect();
        Ok(Some(StreamChunk::new(batch, &ops)?))
    }

    /// Copies the rows of `side` under `cache_key` into `into`: from the
    /// cache or, once, from state (caching them).
    fn gather(
        &mut self,
        side: usize,
        cache_key: &[u8],
        into: &mut Gathered,
        with_keys: bool,
    ) -> EngineResult<()> {
        if let Some(rows) = self.caches[side].get_mut(cache_key) {
            for (state_key, kept) in &rows.rows {
                into.push(state_key, &kept.value, with_keys)?;
            }
            return Ok(());
        }
        // A complete cache holds every key with rows (but those it
        // evicted): a miss is none.
        if self.caches[side].knows_absent(cache_key) {
            return Ok(());
        }
        let group = u16::from_be_bytes([cache_key[0], cache_key[1]]);
        let mut rows = KeyRows::default();
        for (state_key, value) in self.states[side].scan_prefix(group, &cache_key[2..])? {
            into.push(&state_key, &value, with_keys)?;
            rows.set(
                &state_key,
                Some(KeptRow {
                    value,
                    written: true,
                }),
            );
        }
        self.cache_rows(side, cache_key.to_vec(), rows);
        Ok(())
    }

    /// The pairs that pass the extra condition, evaluated over all of them
    /// in one batch.
    fn filter_pairs(
        &self,
        side: usize,
        chunk: &StreamChunk,
        gathered: &Gathered,
        pairs: Vec<Pair>,
    ) -> EngineResult<Vec<Pair>> {
        let Some(filter) = &self.filter else {
            return Ok(pairs);
        };
        if pairs.is_empty() {
            return Ok(pairs);
        }
        let own: Vec<Source> = pairs.iter().map(|p| Source::Own(p.own)).collect();
        let theirs: Vec<Source> = pairs.iter().map(|p| Source::Theirs(p.theirs)).collect();
        let (left, right) = if side == 0 {
            (&own, &theirs)
        } else {
            (&theirs, &own)
        };
        // The condition reads both sides' visible columns, even in semi
        // and anti joins.
        let (lv, rv) = (self.sides[0].visible, self.sides[1].visible);
        let mut columns = self.columns(0, side, chunk, gathered, left, lv)?;
        columns.extend(self.columns(1, side, chunk, gathered, right, rv)?);
        let mut fields = Vec::with_capacity(lv + rv);
        fields.extend(self.sides[0].schema.fields()[..lv].iter().cloned());
        fields.extend(self.sides[1].schema.fields()[..rv].iter().cloned());
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        let mask = filter.evaluate(&batch)?.into_array(batch.num_rows())?;
        let mask = mask.as_boolean();
        Ok(pairs
            .into_iter()
            .enumerate()
            .filter(|&(i, _)| mask.is_valid(i) && mask.value(i))
            .map(|(_, pair)| pair)
            .collect())
    }

    /// Applies row `row` of a chunk on `side`, which met `pairs` (of
    /// `gathered`): emits its joined and padded rows, moves the matched
    /// rows' degrees (`degrees` holds those moved earlier in the chunk,
    /// newer than the gathered copies) and writes the row to state.
    #[allow(clippy::too_many_arguments)]
    fn apply_row(
        &mut self,
        side: usize,
        chunk: &StreamChunk,
        keys: &ChunkKeys,
        row: usize,
        (pairs, gathered): (&[Pair], &Gathered),
        degrees: &mut HashMap<Vec<u8>, i64>,
        out: &mut Vec<OutRow>,
    ) -> EngineResult<()> {
        let other = 1 - side;
        let insert = chunk.op(row)?.sign() > 0;
        let add = if insert { Op::Insert } else { Op::Delete };
        let own = Source::Own(row as u32);
        let oriented = |own: Source, theirs: Source| {
            if side == 0 {
                (own, theirs)
            } else {
                (theirs, own)
            }
        };
        let kept = self.kept();
        let cache_key = keys.cache_key(row);
        for pair in pairs {
            let theirs = Source::Theirs(pair.theirs);
            if kept.is_none() {
                let (l, r) = oriented(own, theirs);
                out.push((add, l, r));
            }
            if !self.tracks_degree(other) {
                continue;
            }
            let their_key = gathered.key(pair.theirs);
            let entry = &gathered.entries[pair.theirs as usize];
            let before = degrees.get(their_key).copied().unwrap_or(entry.degree);
            let after = before + if insert { 1 } else { -1 };
            degrees.insert(their_key.to_vec(), after);
            // The other row's result changes when its degree leaves or
            // reaches zero.
            if (before == 0) != (after == 0) {
                let now_matched = after > 0;
                let (l, r) = oriented(Source::Null, theirs);
                if self.preserved(other) {
                    out.push((if now_matched { Op::Delete } else { Op::Insert }, l, r));
                } else if let Some((_, semi)) = kept {
                    let show = now_matched == semi;
                    out.push((if show { Op::Insert } else { Op::Delete }, l, r));
                }
            }
            let their_row = gathered.row(pair.theirs);
            let mut value = Vec::with_capacity(8 + their_row.len());
            start_value(&mut value, after);
            value.extend_from_slice(their_row);
            self.write_row(other, cache_key, their_key, Some(value), false);
        }
        let degree = pairs.len() as i64;
        let padded = (self.preserved(side) && degree == 0)
            || kept.is_some_and(|(kept, semi)| kept == side && (degree > 0) == semi);
        if padded {
            let (l, r) = oriented(own, Source::Null);
            out.push((add, l, r));
        }
        if insert {
            let degree = if self.tracks_degree(side) { degree } else { 0 };
            // Encoded into one buffer, then copied out at its size.
            self.scratch.clear();
            start_value(&mut self.scratch, degree);
            encode_row(chunk.data().columns(), row, &mut self.scratch)?;
            let value = self.scratch.as_slice().to_vec();
            self.write_row(side, cache_key, keys.state_key(row), Some(value), true);
            if let Some(window) = self.window.as_mut() {
                let column = window.spec.columns[side];
                if let Some(order) = order_key_at(chunk.data().column(column), row)? {
                    window.register(side, order, keys.keyed(row));
                }
            }
        } else {
            self.write_row(side, cache_key, keys.state_key(row), None, false);
        }
        Ok(())
    }

    /// The first `count` columns of side `of` for rows `from`, the chunk
    /// having arrived on `input`: taken from the chunk or decoded from the
    /// gathered rows.
    fn columns(
        &self,
        of: usize,
        input: usize,
        chunk: &StreamChunk,
        gathered: &Gathered,
        from: &[Source],
        count: usize,
    ) -> EngineResult<Vec<ArrayRef>> {
        if of == input {
            let indices: UInt32Array = from
                .iter()
                .map(|f| match f {
                    Source::Own(row) => Some(*row),
                    _ => None,
                })
                .collect();
            let columns = chunk.data().columns().get(..count).ok_or_else(|| {
                EngineError::Internal(format!(
                    "a join input chunk has {} columns, its side {count}",
                    chunk.data().num_columns()
                ))
            })?;
            return Ok(columns
                .iter()
                .map(|c| take(c, &indices, None))
                .collect::<Result<Vec<_>, _>>()?);
        }
        let projection: Vec<usize> = (0..count).collect();
        let mut decoder = RowDecoder::new(&self.sides[of].schema, Some(&projection))?;
        let mut indices = Vec::with_capacity(from.len());
        let mut padded = false;
        for f in from {
            match f {
                Source::Theirs(entry) => {
                    indices.push(Some(decoder.len() as u32));
                    decoder.push(gathered.row(*entry))?;
                }
                _ => {
                    padded = true;
                    indices.push(None);
                }
            }
        }
        let decoded = decoder.finish()?;
        if !padded {
            // Decoded in order, one per output row.
            return Ok(decoded.columns().to_vec());
        }
        let indices = UInt32Array::from(indices);
        Ok(decoded
            .columns()
            .iter()
            .map(|c| take(c, &indices, None))
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// The output rows `rows` of a chunk that arrived on `side`, in the
    /// output's layout.
    fn build(
        &self,
        side: usize,
        chunk: &StreamChunk,
        gathered: &Gathered,
        rows: &[OutRow],
    ) -> EngineResult<RecordBatch> {
        let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
        let of = |n: usize| -> Vec<Source> {
            rows.iter()
                .map(|&(_, l, r)| if n == 0 { l } else { r })
                .collect()
        };
        if let Some((kept, _)) = self.kept() {
            let count = self.sides[kept].schema.fields().len();
            let columns = self.columns(kept, side, chunk, gathered, &of(kept), count)?;
            return Ok(RecordBatch::try_new_with_options(
                Arc::clone(&self.schema),
                columns,
                &options,
            )?);
        }
        let counts = [0, 1].map(|n| self.sides[n].schema.fields().len());
        let left = self.columns(0, side, chunk, gathered, &of(0), counts[0])?;
        let right = self.columns(1, side, chunk, gathered, &of(1), counts[1])?;
        let (lv, rv) = (self.sides[0].visible, self.sides[1].visible);
        let mut columns = Vec::with_capacity(left.len() + right.len());
        columns.extend_from_slice(&left[..lv]);
        columns.extend_from_slice(&right[..rv]);
        columns.extend_from_slice(&left[lv..]);
        columns.extend_from_slice(&right[rv..]);
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &options,
        )?)
    }
}
