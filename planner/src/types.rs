//! The SQL types a Runnel column can have, their Arrow representation and
//! their Postgres names.
//!
//! Everything time-related is microsecond precision, as in Postgres;
//! `timestamptz` is stored as a UTC instant. `json` and `jsonb` are UTF-8
//! text tagged with Arrow's canonical `arrow.json` extension (and, for
//! `jsonb`, [`PG_TYPE_KEY`]) so the wire layer reports the right type.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef, IntervalUnit, TimeUnit};
use datafusion::sql::sqlparser::ast::{
    CharacterLength, DataType as SqlDataType, ExactNumberInfo, TimezoneInfo,
};
use serde::{Deserialize, Serialize};

use crate::{PlanError, PlanResult};

/// Arrow field metadata naming the Postgres type of a text column when the
/// Arrow type alone does not say it (`jsonb`).
pub const PG_TYPE_KEY: &str = "runnel.pg_type";
/// Arrow's extension-name metadata key.
pub const EXTENSION_NAME_KEY: &str = "ARROW:extension:name";
/// Arrow's canonical JSON extension name.
pub const JSON_EXTENSION: &str = "arrow.json";
/// The time zone `timestamptz` values are stored in.
pub const UTC: &str = "+00:00";
/// Precision and scale of `numeric` without a declared precision, as
/// DataFusion plans it.
pub const DEFAULT_NUMERIC: (u8, i8) = (38, 10);

/// A column type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    Boolean,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric { precision: u8, scale: i8 },
    Text,
    Varchar { max_length: Option<u32> },
    Bytea,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Interval,
    Json,
    Jsonb,
}

impl ColumnType {
    /// The type a SQL type name denotes.
    pub fn from_sql(sql_type: &SqlDataType) -> PlanResult<Self> {
        use SqlDataType as S;
        Ok(match sql_type {
            S::Boolean | S::Bool => Self::Boolean,
            S::SmallInt(_) | S::Int2(_) => Self::Int2,
            S::Int(_) | S::Integer(_) | S::Int4(_) => Self::Int4,
            S::BigInt(_) | S::Int8(_) => Self::Int8,
            S::Real | S::Float4 => Self::Float4,
            S::Float8 | S::DoublePrecision | S::Double(ExactNumberInfo::None) => Self::Float8,
            S::Float(ExactNumberInfo::Precision(p)) if *p <= 24 => Self::Float4,
            S::Float(_) => Self::Float8,
            S::Numeric(info) | S::Decimal(info) => numeric(info)?,
            S::Text | S::String(None) => Self::Text,
            S::Varchar(len) | S::CharacterVarying(len) => Self::Varchar {
                max_length: char_length(len)?,
            },
            S::Char(_) | S::Character(_) => {
                return Err(PlanError::NotSupported(format!(
                    "type {sql_type} (blank-padded character); use varchar or text"
                )));
            }
            S::Bytea => Self::Bytea,
            S::Date => Self::Date,
            S::Time(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => Self::Time,
            S::Timestamp(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => Self::Timestamp,
            S::Timestamp(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => Self::Timestamptz,
            S::Interval { fields: None, .. } => Self::Interval,
            S::JSON => Self::Json,
            S::JSONB => Self::Jsonb,
            S::Custom(name, modifiers) if modifiers.is_empty() => {
                match name.to_string().to_ascii_lowercase().as_str() {
                    "timestamptz" => Self::Timestamptz,
                    "float4" => Self::Float4,
                    "float8" => Self::Float8,
                    "int2" => Self::Int2,
                    "int4" => Self::Int4,
                    "int8" => Self::Int8,
                    "bool" => Self::Boolean,
                    "serial" | "bigserial" | "smallserial" => {
                        return Err(PlanError::NotSupported(format!(
                            "type {name} (sequences); use an integer column and supply the values"
                        )));
                    }
                    _ => return Err(PlanError::UnknownType(name.to_string())),
                }
            }
            other => return Err(PlanError::UnknownType(other.to_string())),
        })
    }

    /// The Arrow type of the column's values.
    pub fn arrow_type(&self) -> DataType {
        match self {
            Self::Boolean => DataType::Boolean,
            Self::Int2 => DataType::Int16,
            Self::Int4 => DataType::Int32,
            Self::Int8 => DataType::Int64,
            Self::Float4 => DataType::Float32,
            Self::Float8 => DataType::Float64,
            Self::Numeric { precision, scale } => DataType::Decimal128(*precision, *scale),
            Self::Text | Self::Varchar { .. } | Self::Json | Self::Jsonb => DataType::Utf8,
            Self::Bytea => DataType::Binary,
            Self::Date => DataType::Date32,
            Self::Time => DataType::Time64(TimeUnit::Microsecond),
            Self::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Self::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            Self::Interval => DataType::Interval(IntervalUnit::MonthDayNano),
        }
    }

    /// The column type that stores values of `field` (whose type a query
    /// computed), if there is one; values may need a cast to
    /// [`ColumnType::arrow_type`].
    pub fn from_arrow(field: &Field) -> Option<Self> {
        let metadata = field.metadata();
        if metadata.get(EXTENSION_NAME_KEY).map(String::as_str) == Some(JSON_EXTENSION) {
            return Some(
                if metadata.get(PG_TYPE_KEY).map(String::as_str) == Some("jsonb") {
                    Self::Jsonb
                } else {
                    Self::Json
                },
            );
        }
        Some(match field.data_type() {
            DataType::Boolean => Self::Boolean,
            DataType::Int8 | DataType::Int16 | DataType::UInt8 => Self::Int2,
            DataType::Int32 | DataType::UInt16 => Self::Int4,
            DataType::Int64 | DataType::UInt32 => Self::Int8,
            DataType::UInt64 => numeric_type(20, 0),
            DataType::Float16 | DataType::Float32 => Self::Float4,
            DataType::Float64 => Self::Float8,
            DataType::Decimal128(p, s) => numeric_type(*p, *s),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
                Self::Text
            }
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Self::Bytea,
            DataType::Date32 => Self::Date,
            DataType::Time64(_) | DataType::Time32(_) => Self::Time,
            DataType::Timestamp(_, None) => Self::Timestamp,
            DataType::Timestamp(_, Some(_)) => Self::Timestamptz,
            DataType::Interval(IntervalUnit::MonthDayNano) => Self::Interval,
            _ => return None,
        })
    }

    /// The Arrow field metadata that marks types Arrow cannot tell apart.
    pub fn field_metadata(&self) -> HashMap<String, String> {
        let mut metadata = HashMap::new();
        match self {
            Self::Json => {
                metadata.insert(EXTENSION_NAME_KEY.into(), JSON_EXTENSION.into());
            }
            Self::Jsonb => {
                metadata.insert(EXTENSION_NAME_KEY.into(), JSON_EXTENSION.into());
                metadata.insert(PG_TYPE_KEY.into(), "jsonb".into());
            }
            _ => {}
        }
        metadata
    }

    /// An Arrow field of this type.
    pub fn field(&self, name: &str, nullable: bool) -> Field {
        Field::new(name, self.arrow_type(), nullable).with_metadata(self.field_metadata())
    }

    /// The Postgres name of the type, as `format_type` prints it.
    pub fn pg_name(&self) -> String {
        match self {
            Self::Boolean => "boolean".into(),
            Self::Int2 => "smallint".into(),
            Self::Int4 => "integer".into(),
            Self::Int8 => "bigint".into(),
            Self::Float4 => "real".into(),
            Self::Float8 => "double precision".into(),
            Self::Numeric { precision, scale } => format!("numeric({precision},{scale})"),
            Self::Text => "text".into(),
            Self::Varchar { max_length: None } => "character varying".into(),
            Self::Varchar {
                max_length: Some(n),
            } => format!("character varying({n})"),
            Self::Bytea => "bytea".into(),
            Self::Date => "date".into(),
            Self::Time => "time without time zone".into(),
            Self::Timestamp => "timestamp without time zone".into(),
            Self::Timestamptz => "timestamp with time zone".into(),
            Self::Interval => "interval".into(),
            Self::Json => "json".into(),
            Self::Jsonb => "jsonb".into(),
        }
    }

    /// True when the type can be part of a primary key.
    pub fn can_be_key(&self) -> bool {
        !matches!(self, Self::Json | Self::Jsonb)
    }
}

fn numeric(info: &ExactNumberInfo) -> PlanResult<ColumnType> {
    let (precision, scale) = match *info {
        ExactNumberInfo::None => return Ok(numeric_type(DEFAULT_NUMERIC.0, DEFAULT_NUMERIC.1)),
        ExactNumberInfo::Precision(p) => (p, 0),
        ExactNumberInfo::PrecisionAndScale(p, s) => (p, s),
    };
    if !(1..=38).contains(&precision) {
        return Err(PlanError::InvalidDefinition(format!(
            "NUMERIC precision {precision} must be between 1 and 38"
        )));
    }
    if scale < 0 || scale as u64 > precision {
        return Err(PlanError::InvalidDefinition(format!(
            "NUMERIC scale {scale} must be between 0 and precision {precision}"
        )));
    }
    Ok(numeric_type(precision as u8, scale as i8))
}

fn numeric_type(precision: u8, scale: i8) -> ColumnType {
    ColumnType::Numeric { precision, scale }
}

fn char_length(len: &Option<CharacterLength>) -> PlanResult<Option<u32>> {
    match len {
        None => Ok(None),
        Some(CharacterLength::IntegerLength { length, .. }) => u32::try_from(*length)
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| {
                PlanError::InvalidDefinition(format!(
                    "length {length} for type varchar is out of range"
                ))
            }),
        Some(CharacterLength::Max) => Ok(None),
    }
}

/// DataFusion type planner that maps SQL type names in expressions
/// (`CAST(x AS timestamptz)`, `'{}'::jsonb`) the same way as table columns,
/// and hands every other type to the planner it wraps.
#[derive(Debug)]
pub struct RunnelTypePlanner {
    inner: Option<Arc<dyn datafusion::logical_expr::planner::TypePlanner>>,
}

impl RunnelTypePlanner {
    /// Wraps `inner` (e.g. the `regclass`-aware planner of `pg_catalog`).
    pub fn new(inner: Option<Arc<dyn datafusion::logical_expr::planner::TypePlanner>>) -> Self {
        Self { inner }
    }
}

impl datafusion::logical_expr::planner::TypePlanner for RunnelTypePlanner {
    fn plan_type_field(
        &self,
        sql_type: &SqlDataType,
    ) -> datafusion::error::Result<Option<FieldRef>> {
        use SqlDataType as S;
        let ours = match sql_type {
            S::Time(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone)
            | S::Timestamp(_, _)
            | S::JSON
            | S::JSONB => ColumnType::from_sql(sql_type).ok(),
            S::Custom(name, m)
                if m.is_empty() && name.to_string().eq_ignore_ascii_case("timestamptz") =>
            {
                Some(ColumnType::Timestamptz)
            }
            _ => None,
        };
        if let Some(column_type) = ours {
            return Ok(Some(Arc::new(column_type.field("", true))));
        }
        match &self.inner {
            Some(inner) => inner.plan_type_field(sql_type),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn parse_type(text: &str) -> SqlDataType {
        Parser::new(&PostgreSqlDialect {})
            .try_with_sql(text)
            .unwrap()
            .parse_data_type()
            .unwrap()
    }

    #[test]
    fn postgres_type_names_map() {
        let cases = [
            ("int", ColumnType::Int4),
            ("bigint", ColumnType::Int8),
            ("smallint", ColumnType::Int2),
            ("double precision", ColumnType::Float8),
            ("real", ColumnType::Float4),
            ("numeric(10,2)", numeric_type(10, 2)),
            (
                "varchar(5)",
                ColumnType::Varchar {
                    max_length: Some(5),
                },
            ),
            ("timestamp with time zone", ColumnType::Timestamptz),
            ("timestamptz", ColumnType::Timestamptz),
            ("timestamp", ColumnType::Timestamp),
            ("jsonb", ColumnType::Jsonb),
            ("bytea", ColumnType::Bytea),
            ("interval", ColumnType::Interval),
        ];
        for (text, expected) in cases {
            assert_eq!(
                ColumnType::from_sql(&parse_type(text)).unwrap(),
                expected,
                "{text}"
            );
        }
    }

    #[test]
    fn unknown_and_unsupported_types_are_refused() {
        assert!(matches!(
            ColumnType::from_sql(&parse_type("widget")),
            Err(PlanError::UnknownType(_))
        ));
        assert!(matches!(
            ColumnType::from_sql(&parse_type("char(3)")),
            Err(PlanError::NotSupported(_))
        ));
        assert!(ColumnType::from_sql(&parse_type("numeric(50,2)")).is_err());
    }

    #[test]
    fn every_type_is_storable() {
        for t in [
            ColumnType::Boolean,
            ColumnType::Int2,
            ColumnType::Float4,
            numeric_type(5, 1),
            ColumnType::Json,
            ColumnType::Time,
            ColumnType::Timestamptz,
            ColumnType::Interval,
            ColumnType::Bytea,
        ] {
            assert!(
                runnel_storage::row_codec::is_storable(&t.arrow_type()),
                "{t:?}"
            );
        }
    }
}
