//! `CREATE SEQUENCE`, `DROP SEQUENCE` and the `SERIAL` column types, which
//! become an integer column with a `nextval` default and a sequence the
//! table owns.

use datafusion::sql::sqlparser::ast::{
    ColumnOption, ColumnOptionDef, CreateTable, DataType, Expr, ObjectName, SequenceOptions,
    Statement,
};
use runnel_planner::catalog::RelationName;

use super::{Session, StatementResult};
use crate::error::{ServerError, ServerResult};
use crate::sequences::SequenceDef;

/// The value an option expression gives (a possibly negative integer).
fn integer(expr: &Expr) -> ServerResult<i64> {
    let text = expr.to_string();
    text.replace(' ', "").parse().map_err(|_| {
        ServerError::InvalidParameter(format!("sequence option {text} is not an integer"))
    })
}

/// The largest value of a sequence or serial type.
fn type_max(data_type: Option<&DataType>) -> ServerResult<i64> {
    match data_type {
        None | Some(DataType::BigInt(_) | DataType::Int8(_)) => Ok(i64::MAX),
        Some(DataType::Int(_) | DataType::Integer(_) | DataType::Int4(_)) => Ok(i32::MAX.into()),
        Some(DataType::SmallInt(_) | DataType::Int2(_)) => Ok(i16::MAX.into()),
        Some(other) => Err(ServerError::InvalidParameter(format!(
            "sequence type must be smallint, integer, or bigint, not {other}"
        ))),
    }
}

/// The integer type and maximum of a `SERIAL` type name, None for others.
fn serial_type(data_type: &DataType) -> Option<(DataType, i64)> {
    let DataType::Custom(name, modifiers) = data_type else {
        return None;
    };
    if !modifiers.is_empty() {
        return None;
    }
    match name.to_string().to_ascii_lowercase().as_str() {
        "serial" | "serial4" => Some((DataType::Integer(None), i32::MAX.into())),
        "bigserial" | "serial8" => Some((DataType::BigInt(None), i64::MAX)),
        "smallserial" | "serial2" => Some((DataType::SmallInt(None), i16::MAX.into())),
        _ => None,
    }
}

impl Session {
    pub(super) fn create_sequence(
        &mut self,
        statement: &Statement,
    ) -> ServerResult<StatementResult> {
        let Statement::CreateSequence {
            temporary,
            if_not_exists,
            name,
            data_type,
            sequence_options,
            owned_by,
        } = statement
        else {
            return Err(ServerError::Internal(format!(
                "CREATE SEQUENCE expected: {statement}"
            )));
        };
        if *temporary {
            return Err(ServerError::NotSupported("TEMPORARY sequences".into()));
        }
        if owned_by.is_some() {
            return Err(ServerError::NotSupported(
                "CREATE SEQUENCE … OWNED BY".into(),
            ));
        }
        let name = self.resolve(name)?;
        let mut result = StatementResult::command("CREATE SEQUENCE", None);
        if self.db.sequences.exists(&name) || self.db.catalog.relation(&name).is_some() {
            if *if_not_exists {
                result.notices.push((
                    "NOTICE",
                    format!("relation \"{}\" already exists, skipping", name.name),
                ));
                return Ok(result);
            }
            return Err(ServerError::DuplicateTable(name.name));
        }
        let type_max = type_max(data_type.as_ref())?;
        let mut increment = 1;
        let (mut min, mut max, mut start, mut cycle) = (None, None, None, false);
        for option in sequence_options {
            match option {
                SequenceOptions::IncrementBy(expr, _) => increment = integer(expr)?,
                SequenceOptions::MinValue(Some(expr)) => min = Some(integer(expr)?),
                SequenceOptions::MaxValue(Some(expr)) => max = Some(integer(expr)?),
                SequenceOptions::MinValue(None) | SequenceOptions::MaxValue(None) => {}
                SequenceOptions::StartWith(expr, _) => start = Some(integer(expr)?),
                SequenceOptions::Cache(_) => {}
                SequenceOptions::Cycle(no) => cycle = !*no,
            }
        }
        let type_min = if type_max == i64::MAX {
            i64::MIN
        } else {
            -type_max - 1
        };
        let min = min.unwrap_or(if increment > 0 { 1 } else { type_min });
        let max = max.unwrap_or(if increment > 0 { type_max } else { -1 });
        let start = start.unwrap_or(if increment > 0 { min } else { max });
        self.db.sequences.create(SequenceDef {
            name,
            increment,
            min,
            max,
            start,
            cycle,
            owned_by: None,
        })?;
        Ok(result)
    }

    pub(super) fn drop_sequences(
        &mut self,
        names: &[ObjectName],
        if_exists: bool,
    ) -> ServerResult<StatementResult> {
        let mut result = StatementResult::command("DROP SEQUENCE", None);
        for name in names {
            let name = self.resolve(name)?;
            if !self.db.sequences.remove(&name)? {
                if !if_exists {
                    return Err(ServerError::UndefinedTable(name.name));
                }
                result.notices.push((
                    "NOTICE",
                    format!("sequence \"{}\" does not exist, skipping", name.name),
                ));
            }
        }
        Ok(result)
    }

    /// Turns the `SERIAL` columns of `create` into integer columns with a
    /// `nextval` default; returns the sequences to create with the table.
    pub(super) fn take_serials(
        &self,
        create: &mut CreateTable,
        table: &RelationName,
    ) -> ServerResult<Vec<SequenceDef>> {
        let mut sequences = vec![];
        for column in &mut create.columns {
            let Some((data_type, max)) = serial_type(&column.data_type) else {
                continue;
            };
            let column_name = runnel_planner::ddl::normalize_ident(&column.name);
            let sequence = RelationName::new(
                table.schema.clone(),
                format!("{}_{}_seq", table.name, column_name),
            );
            if self.db.sequences.exists(&sequence) || self.db.catalog.relation(&sequence).is_some()
            {
                return Err(ServerError::DuplicateTable(sequence.name));
            }
            column.data_type = data_type;
            let default = format!(
                "nextval('{}.{}')",
                quote_ident(&sequence.schema),
                quote_ident(&sequence.name)
            );
            let default = runnel_planner::parser::parse_sql(&format!("SELECT {default}"))?
                .into_iter()
                .next()
                .and_then(|s| match s {
                    Statement::Query(q) => match *q.body {
                        datafusion::sql::sqlparser::ast::SetExpr::Select(select) => {
                            match select.projection.into_iter().next() {
                                Some(
                                    datafusion::sql::sqlparser::ast::SelectItem::UnnamedExpr(e)
                                    | datafusion::sql::sqlparser::ast::SelectItem::ExprWithAlias {
                                        expr: e,
                                        ..
                                    },
                                ) => Some(e),
                                _ => None,
                            }
                        }
                        _ => None,
                    },
                    _ => None,
                })
                .ok_or_else(|| ServerError::Internal("serial default".into()))?;
            column.options.push(ColumnOptionDef {
                name: None,
                option: ColumnOption::NotNull,
            });
            column.options.push(ColumnOptionDef {
                name: None,
                option: ColumnOption::Default(default),
            });
            let mut def = SequenceDef::ascending(sequence, max);
            def.owned_by = Some((table.clone(), column_name));
            sequences.push(def);
        }
        Ok(sequences)
    }
}

/// `name` quoted when Postgres would need it.
fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}
