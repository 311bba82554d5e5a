//! `COPY … TO STDOUT`: rows written in Postgres's text, CSV and binary
//! formats through the same encoders as query results (`encode.rs`), so
//! COPY writes what Postgres reads.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use futures::{Stream, StreamExt};
use pgwire::api::portal::Format;
use pgwire::api::results::CopyResponse;
use pgwire::error::PgWireResult;
use pgwire::messages::copy::CopyData;
use pgwire::messages::data::DataRow;
use pgwire::types::format::FormatOptions;

use super::copy_in::{BINARY_SIGNATURE, read4};
use super::encode;
use crate::session::{CopyFormat, CopyKind};

/// The CopyData stream of `COPY … TO STDOUT`: one message per row (the
/// header, if any, goes with the first row; pgwire counts messages as
/// rows).
pub fn copy_out(
    schema: SchemaRef,
    stream: SendableRecordBatchStream,
    format: CopyFormat,
    options: &Arc<FormatOptions>,
) -> PgWireResult<CopyResponse> {
    let binary = format.kind == CopyKind::Binary;
    let wire_format = if binary {
        Format::UnifiedBinary
    } else {
        Format::UnifiedText
    };
    let fields = Arc::new(encode::fields(&schema, &wire_format, options)?);
    let columns = fields.len();
    let mut header = Some(match format.kind {
        CopyKind::Binary => {
            let mut head = BytesMut::from(BINARY_SIGNATURE);
            head.put_i32(0);
            head.put_i32(0);
            head
        }
        CopyKind::Csv if format.header => {
            let names: Vec<Option<Vec<u8>>> = fields
                .iter()
                .map(|f| Some(f.name().as_bytes().to_vec()))
                .collect();
            let mut head = BytesMut::new();
            csv_line(&names, &format, &mut head);
            head
        }
        _ => BytesMut::new(),
    });
    let rows = encode::row_stream(Arc::clone(&fields), stream);
    let lines = rows.map(move |row| {
        let row = row?;
        let mut out = header.take().unwrap_or_default();
        if binary {
            out.put_i16(row.field_count);
            out.put_slice(&row.data);
        } else {
            let values = text_fields(&row);
            match format.kind {
                CopyKind::Csv => csv_line(&values, &format, &mut out),
                _ => text_line(&values, &format, &mut out),
            }
        }
        Ok(CopyData::new(out.freeze()))
    });
    let mut response = CopyResponse::new(i8::from(binary), columns, futures::stream::empty());
    *response.data_stream() = Box::pin(with_trailer(lines, binary));
    Ok(response)
}

/// Ends binary data with its trailer, a message of its own (pgwire does
/// not count it as a row).
fn with_trailer(
    lines: impl Stream<Item = PgWireResult<CopyData>> + Send + 'static,
    binary: bool,
) -> impl Stream<Item = PgWireResult<CopyData>> + Send + 'static {
    let trailer = binary.then(|| Ok(CopyData::new(Bytes::from_static(&[0xFF, 0xFF]))));
    lines.chain(futures::stream::iter(trailer))
}

/// The text of each field of an encoded (text-format) row.
fn text_fields(row: &DataRow) -> Vec<Option<Vec<u8>>> {
    let data = &row.data;
    let mut at = 0;
    let mut out = Vec::with_capacity(row.field_count.max(0) as usize);
    for _ in 0..row.field_count {
        if data.len() < at + 4 {
            break;
        }
        let len = i32::from_be_bytes(read4(data, at));
        at += 4;
        if len < 0 {
            out.push(None);
        } else {
            let len = len as usize;
            out.push(Some(data[at..at + len].to_vec()));
            at += len;
        }
    }
    out
}

fn text_line(values: &[Option<Vec<u8>>], format: &CopyFormat, out: &mut BytesMut) {
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.put_slice(format.delimiter.to_string().as_bytes());
        }
        match value {
            None => out.put_slice(format.null.as_bytes()),
            Some(value) => {
                for &b in value {
                    match b {
                        b'\\' => out.put_slice(b"\\\\"),
                        b'\n' => out.put_slice(b"\\n"),
                        b'\r' => out.put_slice(b"\\r"),
                        b'\t' => out.put_slice(b"\\t"),
                        b if b == format.delimiter as u8 => {
                            out.put_u8(b'\\');
                            out.put_u8(b);
                        }
                        b => out.put_u8(b),
                    }
                }
            }
        }
    }
    out.put_u8(b'\n');
}

fn csv_line(values: &[Option<Vec<u8>>], format: &CopyFormat, out: &mut BytesMut) {
    let (quote, escape, delimiter) = (
        format.quote as u8,
        format.escape as u8,
        format.delimiter as u8,
    );
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.put_u8(delimiter);
        }
        let Some(value) = value else {
            out.put_slice(format.null.as_bytes());
            continue;
        };
        let needs_quotes = value.is_empty() && format.null.is_empty()
            || value.as_slice() == format.null.as_bytes()
            || value.as_slice() == b"\\."
            || value
                .iter()
                .any(|&b| b == delimiter || b == quote || b == b'\n' || b == b'\r');
        if !needs_quotes {
            out.put_slice(value);
            continue;
        }
        out.put_u8(quote);
        for &b in value {
            if b == quote || b == escape {
                out.put_u8(escape);
            }
            out.put_u8(b);
        }
        out.put_u8(quote);
    }
    out.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use super::super::copy_in::unescape_text;
    use super::*;

    fn format(kind: CopyKind) -> CopyFormat {
        CopyFormat::new(kind)
    }

    #[test]
    fn text_escapes_round_trip() {
        let values = vec![Some(b"a\tb\\c\nd".to_vec()), None, Some(vec![])];
        let mut out = BytesMut::new();
        text_line(&values, &format(CopyKind::Text), &mut out);
        assert_eq!(&out[..], b"a\\tb\\\\c\\nd\t\\N\t\n");
        let line = &out[..out.len() - 1];
        let fields: Vec<Option<Vec<u8>>> = line
            .split(|&b| b == b'\t')
            .map(|raw| (raw != b"\\N").then(|| unescape_text(raw)))
            .collect();
        assert_eq!(fields, values);
        assert_eq!(unescape_text(b"\\101\\x42\\q"), b"ABq");
    }

    #[test]
    fn csv_quotes_what_it_must() {
        let values = vec![
            Some(b"plain".to_vec()),
            Some(b"a,b".to_vec()),
            Some(b"say \"hi\"".to_vec()),
            Some(vec![]),
            None,
        ];
        let mut out = BytesMut::new();
        csv_line(&values, &format(CopyKind::Csv), &mut out);
        assert_eq!(&out[..], b"plain,\"a,b\",\"say \"\"hi\"\"\",\"\",\n");
    }
}
