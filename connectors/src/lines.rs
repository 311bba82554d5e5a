//! Sources of text lines: `connector = 'file'` reads a local text file,
//! one row per line; `connector = 'socket'` reads lines from a TCP server
//! (`nc -lk 9999`), as Flink's `socketTextStream` does. Both have one
//! `varchar` column; a socket source may declare a second, a timestamp,
//! which holds when the line arrived (so it can be windowed).
//!
//! A file is addressed by line number, so a restart resumes exactly where
//! the last committed epoch ended and the file source is exactly-once (for
//! a file that does not change). A socket cannot be replayed: lines sent
//! while the job is down, or after the last committed epoch before a
//! crash, are not seen again (at most once), as in Flink; it is for
//! examples and experiments.

use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use runnel_engine::runtime::connector::RowGenerator;
use runnel_engine::{EngineError, EngineResult};

use crate::options::{ConnectorError, Options};

fn is_text(field: &Field) -> bool {
    matches!(field.data_type(), DataType::Utf8 | DataType::LargeUtf8)
}

/// The one text column a file source needs.
fn check_schema(connector: &str, schema: &SchemaRef) -> Result<(), ConnectorError> {
    match schema.fields().as_ref() {
        [field] if is_text(field) => Ok(()),
        _ => Err(ConnectorError::Unsupported(format!(
            "a {connector} source with columns other than one varchar column (declare (line varchar))"
        ))),
    }
}

/// The lines, and for a second column the time they arrived.
fn batch(schema: &SchemaRef, lines: Vec<String>) -> EngineResult<RecordBatch> {
    let rows = lines.len();
    let column: ArrayRef = Arc::new(StringArray::from(lines));
    let mut columns = vec![datafusion::arrow::compute::cast(
        &column,
        schema.field(0).data_type(),
    )?];
    if let Some(field) = schema.fields().get(1) {
        let now = chrono::Utc::now().timestamp_micros();
        let arrived: ArrayRef = Arc::new(
            datafusion::arrow::array::TimestampMicrosecondArray::from(vec![now; rows]),
        );
        columns.push(datafusion::arrow::compute::cast(
            &arrived,
            field.data_type(),
        )?);
    }
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

fn trim_newline(line: &mut String) {
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
}

/// The lines of a local file.
pub(crate) struct FileLines {
    path: PathBuf,
    schema: SchemaRef,
    reader: BufReader<std::fs::File>,
    /// The line the reader is at.
    next: u64,
}

impl FileLines {
    pub(crate) fn new(
        options: &mut Options<'_>,
        schema: &SchemaRef,
    ) -> Result<Self, ConnectorError> {
        check_schema("file", schema)?;
        let path = PathBuf::from(options.required("path")?);
        match options.get("format") {
            None => {}
            Some(f) if f.eq_ignore_ascii_case("text") => {}
            Some(other) => {
                return Err(ConnectorError::BadValue {
                    key: "format".into(),
                    value: other.into(),
                    reason: "only 'text' (one row per line) is supported so far".into(),
                });
            }
        }
        let reader = Self::open(&path)?;
        Ok(Self {
            path,
            schema: Arc::clone(schema),
            reader,
            next: 0,
        })
    }

    fn open(path: &PathBuf) -> Result<BufReader<std::fs::File>, ConnectorError> {
        std::fs::File::open(path)
            .map(BufReader::new)
            .map_err(|e| ConnectorError::BadValue {
                key: "path".into(),
                value: path.display().to_string(),
                reason: format!("cannot be read: {e}"),
            })
    }

    fn read_line(&mut self) -> EngineResult<Option<String>> {
        let mut bytes = vec![];
        let read = self
            .reader
            .read_until(b'\n', &mut bytes)
            .map_err(|e| EngineError::Internal(format!("reading {}: {e}", self.path.display())))?;
        if read == 0 {
            return Ok(None);
        }
        self.next += 1;
        let mut line = String::from_utf8_lossy(&bytes).into_owned();
        trim_newline(&mut line);
        Ok(Some(line))
    }
}

impl RowGenerator for FileLines {
    fn generate(&mut self, from: u64, max_rows: usize) -> EngineResult<Option<RecordBatch>> {
        if from < self.next {
            self.reader =
                Self::open(&self.path).map_err(|e| EngineError::Internal(e.to_string()))?;
            self.next = 0;
        }
        while self.next < from {
            if self.read_line()?.is_none() {
                return Ok(None);
            }
        }
        let mut lines = vec![];
        while lines.len() < max_rows {
            match self.read_line()? {
                Some(line) => lines.push(line),
                None => break,
            }
        }
        if lines.is_empty() {
            return Ok(None);
        }
        Ok(Some(batch(&self.schema, lines)?))
    }

    fn rows_per_second(&self) -> Option<f64> {
        None
    }

    fn bounded(&self) -> bool {
        true
    }
}

/// The lines a TCP server sends.
pub(crate) struct SocketLines {
    address: String,
    schema: SchemaRef,
    stream: TcpStream,
    /// Bytes of a line not yet complete.
    partial: Vec<u8>,
    closed: bool,
}

impl SocketLines {
    pub(crate) fn new(
        options: &mut Options<'_>,
        schema: &SchemaRef,
    ) -> Result<Self, ConnectorError> {
        match schema.fields().as_ref() {
            [line] if is_text(line) => {}
            [line, arrived]
                if is_text(line) && matches!(arrived.data_type(), DataType::Timestamp(..)) => {}
            _ => {
                return Err(ConnectorError::Unsupported(
                    "a socket source with columns other than a varchar line and, optionally, a timestamp of its arrival (declare (line varchar[, arrived timestamp]))"
                        .into(),
                ));
            }
        }
        let host = options.get("hostname").unwrap_or("127.0.0.1");
        let port: u16 = options
            .parse("port")?
            .ok_or_else(|| ConnectorError::Missing("port".into()))?;
        let address = format!("{host}:{port}");
        let unreachable = |e: std::io::Error| ConnectorError::BadValue {
            key: "hostname".into(),
            value: address.clone(),
            reason: format!("cannot connect: {e} (is a server listening, e.g. nc -lk {port}?)"),
        };
        let stream = TcpStream::connect(&address).map_err(unreachable)?;
        stream.set_nonblocking(true).map_err(unreachable)?;
        Ok(Self {
            address,
            schema: Arc::clone(schema),
            stream,
            partial: vec![],
            closed: false,
        })
    }
}

impl RowGenerator for SocketLines {
    /// The complete lines that arrived; an empty batch when none did yet,
    /// None once the server closed the connection.
    fn generate(&mut self, _from: u64, max_rows: usize) -> EngineResult<Option<RecordBatch>> {
        let mut buffer = [0u8; 64 * 1024];
        let mut complete = self.partial.iter().filter(|&&b| b == b'\n').count();
        while !self.closed && complete < max_rows {
            match self.stream.read(&mut buffer) {
                Ok(0) => self.closed = true,
                Ok(n) => {
                    complete += buffer[..n].iter().filter(|&&b| b == b'\n').count();
                    self.partial.extend_from_slice(&buffer[..n]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(EngineError::Internal(format!(
                        "reading from {}: {e}",
                        self.address
                    )));
                }
            }
        }
        // Complete lines (up to max_rows) leave the buffer in one drain.
        let mut lines = vec![];
        let mut consumed = 0;
        for (at, _) in self
            .partial
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
        {
            if lines.len() == max_rows {
                break;
            }
            let mut line = String::from_utf8_lossy(&self.partial[consumed..=at]).into_owned();
            trim_newline(&mut line);
            lines.push(line);
            consumed = at + 1;
        }
        self.partial.drain(..consumed);
        if lines.is_empty() && self.closed {
            if self.partial.is_empty() {
                return Ok(None);
            }
            lines.push(String::from_utf8_lossy(&std::mem::take(&mut self.partial)).into_owned());
        }
        Ok(Some(batch(&self.schema, lines)?))
    }

    fn rows_per_second(&self) -> Option<f64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Write;

    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("line", DataType::Utf8, true)]))
    }

    fn lines(batch: &RecordBatch) -> Vec<String> {
        batch
            .column(0)
            .as_string::<i32>()
            .iter()
            .map(|l| l.unwrap_or_default().to_string())
            .collect()
    }

    fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_file_is_read_by_line_number_and_resumes_anywhere() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, "one two\r\nthree\n\nfour").unwrap();
        let values = options(&[("path", path.to_str().unwrap())]);
        let mut source = FileLines::new(&mut Options::new(&values), &schema()).unwrap();
        assert_eq!(
            lines(&source.generate(0, 2).unwrap().unwrap()),
            ["one two", "three"]
        );
        assert_eq!(
            lines(&source.generate(2, 10).unwrap().unwrap()),
            ["", "four"]
        );
        assert!(source.generate(4, 10).unwrap().is_none());
        // A restart asks for an earlier position: the file is read again.
        assert_eq!(lines(&source.generate(1, 1).unwrap().unwrap()), ["three"]);
        let missing = options(&[("path", "/nonexistent/in.txt")]);
        let error = FileLines::new(&mut Options::new(&missing), &schema())
            .err()
            .unwrap();
        assert!(error.to_string().contains("/nonexistent/in.txt"), "{error}");
    }

    #[test]
    fn a_socket_gives_complete_lines_as_they_arrive() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        let values = options(&[("port", &port)]);
        let mut source = SocketLines::new(&mut Options::new(&values), &schema()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        // Nothing sent yet: an empty batch, not the end.
        assert_eq!(source.generate(0, 10).unwrap().unwrap().num_rows(), 0);
        server.write_all(b"hello world\nhal").unwrap();
        let mut got = vec![];
        while got.is_empty() {
            got = lines(&source.generate(0, 10).unwrap().unwrap());
        }
        assert_eq!(got, ["hello world"]);
        server.write_all(b"f\n").unwrap();
        drop(server);
        let mut rest = vec![];
        while let Some(batch) = source.generate(0, 10).unwrap() {
            rest.extend(lines(&batch));
        }
        assert_eq!(rest, ["half"]);
        // Nobody listening: the error names the address.
        drop(listener);
        let error = SocketLines::new(&mut Options::new(&values), &schema())
            .err()
            .unwrap();
        assert!(
            error.to_string().contains(&format!("127.0.0.1:{port}")),
            "{error}"
        );
    }
}
