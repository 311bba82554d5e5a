//! `COPY … FROM STDIN`: the copy sub-protocol's data in Postgres's text,
//! CSV and binary formats, read into columns of the table's types, and the
//! handler that takes the client's CopyData, CopyDone and CopyFail.
//!
//! Values go through the same decoders as bound parameters (`params.rs`),
//! so COPY reads what Postgres writes. Rows are collected as Arrow columns
//! and inserted at the end in one write, atomically like an INSERT (inside
//! a block: into its pending rows).

use std::fmt::Debug;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::DataType;
use datafusion::scalar::ScalarValue;
use futures::{Sink, SinkExt};
use pgwire::api::results::{CopyResponse, Tag};
use pgwire::api::{ClientInfo, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;

use super::params::{Label, decode_binary, decode_text, without_zone};
use super::{ConnectionHandler, encode, sql_error_to_pgwire};
use crate::error::{ServerError, ServerResult};
use crate::session::{CopyFormat, CopyInto, CopyKind};

/// Rows gathered before they become Arrow arrays.
const CHUNK_ROWS: usize = 8192;

/// The 11-byte signature that starts binary COPY data.
pub(super) const BINARY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// A `COPY … FROM STDIN` in progress.
pub struct CopyIn {
    pub into: CopyInto,
    format: CopyFormat,
    /// (name, wire type, Arrow type) of each column the data gives.
    columns: Vec<(String, Type, DataType)>,
    /// Received bytes not yet parsed (an incomplete line or tuple).
    buffer: Vec<u8>,
    /// Values of the current chunk, per column.
    values: Vec<Vec<ScalarValue>>,
    /// Finished chunks of columns.
    pub chunks: Vec<Vec<ArrayRef>>,
    /// Data lines (or tuples) read so far.
    line: u64,
    header_skipped: bool,
    binary_header_read: bool,
    /// `\.` or the binary trailer was seen: what follows is ignored.
    ended: bool,
    /// The first error; the rest of the data is then only drained.
    pub error: Option<ServerError>,
}

impl CopyIn {
    /// Starts reading data for `into` in `format`.
    pub fn new(into: CopyInto, format: CopyFormat) -> ServerResult<Self> {
        let schema = into.table.arrow_schema();
        let columns = into
            .columns
            .iter()
            .map(|&i| {
                let field = &schema.fields()[i];
                let ty = encode::pg_type(field)
                    .map_err(|e| ServerError::Internal(format!("COPY column type: {e}")))?;
                Ok((field.name().clone(), ty, field.data_type().clone()))
            })
            .collect::<ServerResult<Vec<_>>>()?;
        Ok(Self {
            values: vec![vec![]; columns.len()],
            columns,
            into,
            format,
            buffer: vec![],
            chunks: vec![],
            line: 0,
            header_skipped: false,
            binary_header_read: false,
            ended: false,
            error: None,
        })
    }

    /// The CopyInResponse to send: one column format for every column.
    pub fn response(&self) -> CopyResponse {
        let format = i8::from(self.format.kind == CopyKind::Binary);
        CopyResponse::new(format, self.columns.len(), futures::stream::empty())
    }

    /// Takes in one CopyData message.
    pub fn feed(&mut self, data: &[u8]) {
        if self.error.is_some() || self.ended {
            return;
        }
        self.buffer.extend_from_slice(data);
        if let Err(e) = self.parse(false) {
            self.error = Some(e);
        }
    }

    /// The data is complete (CopyDone): parses what is left and returns the
    /// number of rows.
    pub fn finish(&mut self) -> ServerResult<u64> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.parse(true)?;
        if !self.buffer.is_empty() && !self.ended {
            return Err(ServerError::InvalidParameter(
                "COPY data ended in the middle of a row".into(),
            ));
        }
        self.flush_chunk()?;
        Ok(self
            .chunks
            .iter()
            .map(|c| c.first().map_or(0, |a| a.len()) as u64)
            .sum())
    }

    fn parse(&mut self, at_end: bool) -> ServerResult<()> {
        let mut at = 0;
        let buffer = std::mem::take(&mut self.buffer);
        let result = loop {
            if self.ended {
                at = buffer.len();
                break Ok(());
            }
            if at >= buffer.len() {
                break Ok(());
            }
            let step = match self.format.kind {
                CopyKind::Binary => self.binary_tuple(&buffer[at..]),
                CopyKind::Text => self.text_line(&buffer[at..], at_end),
                CopyKind::Csv => self.csv_record(&buffer[at..], at_end),
            };
            match step {
                Ok(Some(used)) => at += used,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.buffer = buffer[at..].to_vec();
        result
    }

    /// Adds one row of raw field values (None: NULL).
    fn add_row(&mut self, fields: Vec<Option<Vec<u8>>>, binary: bool) -> ServerResult<()> {
        self.line += 1;
        if fields.len() != self.columns.len() {
            return Err(ServerError::InvalidParameter(format!(
                "COPY line {}: expected {} columns, got {}",
                self.line,
                self.columns.len(),
                fields.len()
            )));
        }
        for (i, field) in fields.into_iter().enumerate() {
            let (name, ty, target) = &self.columns[i];
            let label = Label::Copied(name, self.line);
            let value = match field {
                None => ScalarValue::try_from(target)?,
                Some(raw) => {
                    let raw = Bytes::from(raw);
                    let value = if binary {
                        decode_binary(label, ty, &raw)
                    } else {
                        decode_text(label, ty, &raw)
                    }
                    .map_err(|e| ServerError::InvalidParameter(pg_message(&e)))?;
                    let value = match value {
                        ScalarValue::Utf8(Some(text)) => {
                            ScalarValue::Utf8(Some(without_zone(&text, target).to_string()))
                        }
                        other => other,
                    };
                    if value.data_type() == *target {
                        value
                    } else {
                        value.cast_to(target).map_err(|e| {
                            ServerError::InvalidParameter(format!(
                                "{label}: cannot read {} as {}: {e}",
                                value, ty
                            ))
                        })?
                    }
                }
            };
            self.values[i].push(value);
        }
        if self.values.first().is_some_and(|v| v.len() >= CHUNK_ROWS) {
            self.flush_chunk()?;
        }
        Ok(())
    }

    fn flush_chunk(&mut self) -> ServerResult<()> {
        if self.values.first().is_none_or(Vec::is_empty) {
            return Ok(());
        }
        let mut arrays = Vec::with_capacity(self.values.len());
        for (values, (_, _, target)) in self.values.iter_mut().zip(&self.columns) {
            let values = std::mem::take(values);
            arrays.push(if values.is_empty() {
                datafusion::arrow::array::new_empty_array(target)
            } else {
                ScalarValue::iter_to_array(values)?
            });
        }
        self.chunks.push(arrays);
        Ok(())
    }

    /// One text-format line: bytes used, None when no whole line is there.
    fn text_line(&mut self, data: &[u8], at_end: bool) -> ServerResult<Option<usize>> {
        let (line, used) = match data.iter().position(|&b| b == b'\n') {
            Some(end) => (&data[..end], end + 1),
            None if at_end && !data.is_empty() => (data, data.len()),
            None => return Ok(None),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line == b"\\." {
            self.ended = true;
            return Ok(Some(used));
        }
        let delimiter = self.format.delimiter as u8;
        let null = self.format.null.as_bytes();
        let fields = line
            .split(|&b| b == delimiter)
            .map(|raw| (raw != null).then(|| unescape_text(raw)))
            .collect();
        self.add_row(fields, false)?;
        Ok(Some(used))
    }

    /// One CSV record (quoted fields may hold newlines).
    fn csv_record(&mut self, data: &[u8], at_end: bool) -> ServerResult<Option<usize>> {
        let (quote, escape, delimiter) = (
            self.format.quote as u8,
            self.format.escape as u8,
            self.format.delimiter as u8,
        );
        let mut fields = vec![];
        let mut at = 0;
        loop {
            // One field, starting at `at`.
            let mut value = vec![];
            let mut quoted = false;
            let mut in_quotes = false;
            loop {
                let Some(&b) = data.get(at) else {
                    if !at_end || in_quotes {
                        return if at_end {
                            Err(ServerError::InvalidParameter(format!(
                                "COPY line {}: unterminated CSV quoted field",
                                self.line + 1
                            )))
                        } else {
                            Ok(None)
                        };
                    }
                    break;
                };
                if in_quotes {
                    if b == escape && data.get(at + 1) == Some(&quote) {
                        value.push(quote);
                        at += 2;
                    } else if b == quote {
                        in_quotes = false;
                        at += 1;
                    } else {
                        value.push(b);
                        at += 1;
                    }
                } else if b == quote {
                    in_quotes = true;
                    quoted = true;
                    at += 1;
                } else if b == delimiter || b == b'\n' || b == b'\r' {
                    break;
                } else {
                    value.push(b);
                    at += 1;
                }
            }
            let is_null = !quoted && value == self.format.null.as_bytes();
            fields.push((!is_null).then_some(value));
            match data.get(at) {
                Some(&b) if b == delimiter => at += 1,
                Some(b'\r') => {
                    at += if data.get(at + 1) == Some(&b'\n') {
                        2
                    } else {
                        1
                    };
                    break;
                }
                Some(b'\n') => {
                    at += 1;
                    break;
                }
                _ => break,
            }
        }
        if fields.len() == 1 && fields[0].as_deref() == Some(b"\\.".as_slice()) {
            self.ended = true;
            return Ok(Some(at));
        }
        if self.format.header && !self.header_skipped {
            self.header_skipped = true;
            return Ok(Some(at));
        }
        self.add_row(fields, false)?;
        Ok(Some(at))
    }

    /// The binary header, or one tuple.
    fn binary_tuple(&mut self, data: &[u8]) -> ServerResult<Option<usize>> {
        let bad = |what: &str| ServerError::InvalidParameter(format!("COPY binary data: {what}"));
        if !self.binary_header_read {
            if data.len() < BINARY_SIGNATURE.len() + 8 {
                return Ok(None);
            }
            if &data[..BINARY_SIGNATURE.len()] != BINARY_SIGNATURE {
                return Err(bad("missing the PGCOPY signature"));
            }
            let at = BINARY_SIGNATURE.len() + 4;
            let extension = i32::from_be_bytes(read4(data, at)) as usize;
            if data.len() < at + 4 + extension {
                return Ok(None);
            }
            self.binary_header_read = true;
            return Ok(Some(at + 4 + extension));
        }
        if data.len() < 2 {
            return Ok(None);
        }
        let count = i16::from_be_bytes([data[0], data[1]]);
        if count == -1 {
            self.ended = true;
            return Ok(Some(2));
        }
        let mut at = 2;
        let mut fields = Vec::with_capacity(count.max(0) as usize);
        for _ in 0..count {
            if data.len() < at + 4 {
                return Ok(None);
            }
            let len = i32::from_be_bytes(read4(data, at));
            at += 4;
            if len < 0 {
                fields.push(None);
                continue;
            }
            let len = len as usize;
            if data.len() < at + len {
                return Ok(None);
            }
            fields.push(Some(data[at..at + len].to_vec()));
            at += len;
        }
        self.add_row(fields, true)?;
        Ok(Some(at))
    }
}

pub(super) fn read4(data: &[u8], at: usize) -> [u8; 4] {
    [data[at], data[at + 1], data[at + 2], data[at + 3]]
}

/// The message of a decoding error, without pgwire's wrapping.
fn pg_message(error: &pgwire::error::PgWireError) -> String {
    match error {
        pgwire::error::PgWireError::UserError(info) => info
            .message
            .strip_prefix("invalid parameter value: ")
            .unwrap_or(&info.message)
            .to_string(),
        other => other.to_string(),
    }
}

/// A text-format field with its backslash escapes resolved.
pub(super) fn unescape_text(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'\\' || i + 1 == raw.len() {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        let c = raw[i + 1];
        i += 2;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut value = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(value as u8);
            }
            b'x' => {
                let mut value = 0u32;
                let mut digits = 0;
                while digits < 2 {
                    match raw.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            value = value * 16 + d;
                            i += 1;
                            digits += 1;
                        }
                        None => break,
                    }
                }
                if digits == 0 {
                    out.push(b'x');
                } else {
                    out.push(value as u8);
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[async_trait]
impl pgwire::api::copy::CopyHandler for ConnectionHandler {
    async fn on_copy_data<C>(
        &self,
        _client: &mut C,
        copy_data: pgwire::messages::copy::CopyData,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(state) = self
            .copy_in
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            state.feed(&copy_data.data);
        }
        Ok(())
    }

    async fn on_copy_done<C>(
        &self,
        client: &mut C,
        _done: pgwire::messages::copy::CopyDone,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let state = self
            .copy_in
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(mut state) = state else {
            return Err(sql_error_to_pgwire(&ServerError::Internal(
                "COPY data without a COPY statement".into(),
            )));
        };
        let result = match state.finish() {
            Ok(_) => {
                let mut guard = self.session.lock().await;
                match guard.as_mut() {
                    Some(session) => {
                        let chunks = std::mem::take(&mut state.chunks);
                        session.copy_rows_in(&state.into, chunks).await
                    }
                    None => Err(ServerError::Internal("COPY before startup finished".into())),
                }
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(rows) => {
                let tag = Tag::new("COPY").with_rows(rows as usize);
                client
                    .send(PgWireBackendMessage::CommandComplete(tag.into()))
                    .await?;
                Ok(())
            }
            Err(e) => Err(sql_error_to_pgwire(&e)),
        }
    }

    async fn on_copy_fail<C>(
        &self,
        _client: &mut C,
        fail: pgwire::messages::copy::CopyFail,
    ) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.copy_in
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        sql_error_to_pgwire(&ServerError::CopyFailed(fail.message))
    }
}
