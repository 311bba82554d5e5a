//! `connector = 'datagen'`: rows made column by column, each column a
//! `sequence` (start, start + 1, … up to an optional end, which ends the
//! source) or `random` (numbers in [min, max], strings of a length,
//! booleans, timestamps within a day of a start), at `rows.per.second`.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array,
    RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use runnel_engine::EngineResult;
use runnel_engine::runtime::connector::RowGenerator;

use crate::options::{ConnectorError, Options};
use crate::random;

/// 2024-01-01 00:00:00 UTC in microseconds, where timestamps start unless
/// told otherwise.
const DEFAULT_START_MICROS: i64 = 1_704_067_200_000_000;
const DAY_MICROS: i64 = 86_400_000_000;

#[derive(Debug, Clone)]
enum Kind {
    Sequence {
        start: i64,
        end: Option<i64>,
    },
    Random {
        min: i64,
        max: i64,
        length: usize,
        seed: u64,
    },
}

#[derive(Debug, Clone)]
struct Column {
    data_type: DataType,
    kind: Kind,
}

/// A datagen source.
#[derive(Debug)]
pub(crate) struct DatagenGenerator {
    schema: SchemaRef,
    columns: Vec<Column>,
    rate: f64,
    total: Option<u64>,
}

fn bad(column: &str, reason: impl Into<String>) -> ConnectorError {
    ConnectorError::Column {
        column: column.into(),
        reason: reason.into(),
    }
}

impl DatagenGenerator {
    pub(crate) fn new(
        options: &mut Options<'_>,
        schema: &SchemaRef,
    ) -> Result<Self, ConnectorError> {
        let rate = options
            .parse::<f64>("rows.per.second")?
            .or(options.parse::<f64>("datagen.rows.per.second")?)
            .unwrap_or(1000.0);
        if rate.is_nan() || rate <= 0.0 {
            return Err(ConnectorError::BadValue {
                key: "rows.per.second".into(),
                value: rate.to_string(),
                reason: "must be positive".into(),
            });
        }
        let total = options
            .parse::<u64>("number-of-rows")?
            .or(options.parse::<u64>("datagen.rows.total")?);
        let mut columns = vec![];
        for (index, field) in schema.fields().iter().enumerate() {
            let name = field.name();
            let key = |k: &str| format!("fields.{name}.{k}");
            let data_type = field.data_type().clone();
            let supported = matches!(
                data_type,
                DataType::Int16
                    | DataType::Int32
                    | DataType::Int64
                    | DataType::Float32
                    | DataType::Float64
                    | DataType::Utf8
                    | DataType::Boolean
                    | DataType::Timestamp(TimeUnit::Microsecond, _)
            );
            if !supported {
                return Err(bad(
                    name,
                    format!("datagen cannot make values of type {data_type}"),
                ));
            }
            let kind = match options.get(&key("kind")).unwrap_or("random") {
                "sequence" => {
                    let start = options
                        .parse::<i64>(&key("start"))?
                        .unwrap_or(match data_type {
                            DataType::Timestamp(..) => DEFAULT_START_MICROS,
                            _ => 1,
                        });
                    let end = options.parse::<i64>(&key("end"))?;
                    if matches!(data_type, DataType::Boolean) {
                        return Err(bad(name, "a boolean cannot be a sequence"));
                    }
                    Kind::Sequence { start, end }
                }
                "random" => {
                    let (default_min, default_max) = match data_type {
                        DataType::Timestamp(..) => {
                            (DEFAULT_START_MICROS, DEFAULT_START_MICROS + DAY_MICROS)
                        }
                        _ => (0, 1000),
                    };
                    let min = options.parse::<i64>(&key("min"))?.unwrap_or(default_min);
                    let max = options.parse::<i64>(&key("max"))?.unwrap_or(default_max);
                    if min > max {
                        return Err(bad(name, format!("min {min} is above max {max}")));
                    }
                    let length = options.parse::<usize>(&key("length"))?.unwrap_or(10);
                    let seed = options.parse::<u64>(&key("seed"))?.unwrap_or(index as u64);
                    Kind::Random {
                        min,
                        max,
                        length,
                        seed,
                    }
                }
                other => {
                    return Err(bad(
                        name,
                        format!("kind '{other}' (use 'sequence' or 'random')"),
                    ));
                }
            };
            columns.push(Column { data_type, kind });
        }
        Ok(Self {
            schema: Arc::clone(schema),
            columns,
            rate,
            total,
        })
    }

    /// Rows the source has in all (sequences with an end, a row count).
    fn rows(&self) -> Option<u64> {
        let ends = self.columns.iter().filter_map(|c| match c.kind {
            Kind::Sequence {
                start,
                end: Some(end),
            } => Some((end - start + 1).max(0) as u64),
            _ => None,
        });
        ends.chain(self.total).min()
    }

    fn value(column: &Column, stream: u64, position: u64) -> i64 {
        match column.kind {
            Kind::Sequence { start, .. } => start + position as i64,
            Kind::Random { min, max, seed, .. } => {
                let span = (max - min) as u64 + 1;
                let h = random::hash(seed, stream, position);
                min + if span == 0 {
                    h as i64
                } else {
                    (h % span) as i64
                }
            }
        }
    }

    fn array(&self, index: usize, column: &Column, from: u64, rows: u64) -> ArrayRef {
        let stream = index as u64;
        let positions = from..from + rows;
        let ints = || positions.clone().map(|p| Self::value(column, stream, p));
        match column.data_type {
            DataType::Int16 => Arc::new(Int16Array::from_iter_values(ints().map(|v| v as i16))),
            DataType::Int32 => Arc::new(Int32Array::from_iter_values(ints().map(|v| v as i32))),
            DataType::Int64 => Arc::new(Int64Array::from_iter_values(ints())),
            DataType::Float32 => Arc::new(Float32Array::from_iter_values(ints().map(|v| v as f32))),
            DataType::Float64 => Arc::new(Float64Array::from_iter_values(ints().map(|v| v as f64))),
            DataType::Boolean => {
                Arc::new(BooleanArray::from_iter(ints().map(|v| Some(v % 2 == 1))))
            }
            DataType::Timestamp(_, ref tz) => Arc::new(
                TimestampMicrosecondArray::from_iter_values(ints().map(|v| match column.kind {
                    // A timestamp sequence steps a second at a time.
                    Kind::Sequence { start, .. } => start + (v - start) * 1_000_000,
                    Kind::Random { .. } => v,
                }))
                .with_timezone_opt(tz.clone()),
            ),
            _ => Arc::new(StringArray::from_iter_values(positions.map(
                |p| match column.kind {
                    Kind::Sequence { .. } => Self::value(column, stream, p).to_string(),
                    Kind::Random { length, seed, .. } => random::letters(seed, stream, p, length),
                },
            ))),
        }
    }
}

impl RowGenerator for DatagenGenerator {
    fn generate(&mut self, from: u64, max_rows: usize) -> EngineResult<Option<RecordBatch>> {
        let end = self.rows().unwrap_or(u64::MAX);
        if from >= end {
            return Ok(None);
        }
        let rows = (max_rows as u64).min(end - from);
        let columns = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| self.array(i, c, from, rows))
            .collect();
        Ok(Some(RecordBatch::try_new(
            Arc::clone(&self.schema),
            columns,
        )?))
    }

    fn rows_per_second(&self) -> Option<f64> {
        Some(self.rate)
    }

    fn bounded(&self) -> bool {
        self.rows().is_some()
    }
}
