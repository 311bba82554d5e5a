//! `COPY … FROM STDIN` and `COPY … TO STDOUT`: what the statement asks for
//! (table or query, columns, format options) and the insert of the rows a
//! client sent. The wire side (the copy sub-protocol, parsing and writing
//! the text, CSV and binary formats) lives in `pg/copy.rs`.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, new_null_array};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Ident, Statement,
};
use runnel_planner::catalog::TableDef;

use super::{Outcome, Session, StatementResult};
use crate::error::{ServerError, ServerResult};
use crate::tables::insert_rows;

/// The three COPY formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    Text,
    Csv,
    Binary,
}

/// A COPY's format and its options, with Postgres's defaults.
#[derive(Debug, Clone)]
pub struct CopyFormat {
    pub kind: CopyKind,
    pub delimiter: char,
    /// The text that stands for NULL.
    pub null: String,
    /// CSV: the first line names the columns.
    pub header: bool,
    pub quote: char,
    pub escape: char,
}

impl CopyFormat {
    /// `kind` with Postgres's default options.
    pub fn new(kind: CopyKind) -> Self {
        Self {
            kind,
            delimiter: if kind == CopyKind::Csv { ',' } else { '\t' },
            null: if kind == CopyKind::Csv {
                String::new()
            } else {
                "\\N".into()
            },
            header: false,
            quote: '"',
            escape: '"',
        }
    }

    /// The format `COPY … WITH (…)` (or its pre-9.0 spelling) asks for.
    fn from_options(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> ServerResult<Self> {
        let mut kind = CopyKind::Text;
        for option in options {
            if let CopyOption::Format(name) = option {
                kind = match name.value.to_ascii_lowercase().as_str() {
                    "text" => CopyKind::Text,
                    "csv" => CopyKind::Csv,
                    "binary" => CopyKind::Binary,
                    other => {
                        return Err(ServerError::InvalidParameter(format!(
                            "COPY format \"{other}\" not recognized"
                        )));
                    }
                };
            }
        }
        for option in legacy {
            match option {
                CopyLegacyOption::Binary => kind = CopyKind::Binary,
                CopyLegacyOption::Csv(_) => kind = CopyKind::Csv,
                _ => {}
            }
        }
        let mut format = Self::new(kind);
        let mut escape = None;
        for option in options {
            match option {
                CopyOption::Format(_) | CopyOption::Encoding(_) | CopyOption::Freeze(_) => {}
                CopyOption::Delimiter(c) => format.delimiter = *c,
                CopyOption::Null(text) => format.null = text.clone(),
                CopyOption::Header(on) => format.header = *on,
                CopyOption::Quote(c) => format.quote = *c,
                CopyOption::Escape(c) => escape = Some(*c),
                other => {
                    return Err(ServerError::NotSupported(format!(
                        "the COPY option {other}"
                    )));
                }
            }
        }
        for option in legacy {
            match option {
                CopyLegacyOption::Binary => {}
                CopyLegacyOption::Delimiter(c) => format.delimiter = *c,
                CopyLegacyOption::Null(text) => format.null = text.clone(),
                CopyLegacyOption::Header => format.header = true,
                CopyLegacyOption::Csv(csv) => {
                    for option in csv {
                        match option {
                            CopyLegacyCsvOption::Header => format.header = true,
                            CopyLegacyCsvOption::Quote(c) => format.quote = *c,
                            CopyLegacyCsvOption::Escape(c) => escape = Some(*c),
                            other => {
                                return Err(ServerError::NotSupported(format!(
                                    "the COPY option {other}"
                                )));
                            }
                        }
                    }
                }
                other => {
                    return Err(ServerError::NotSupported(format!(
                        "the COPY option {other}"
                    )));
                }
            }
        }
        format.escape = escape.unwrap_or(format.quote);
        if format.header && kind != CopyKind::Csv {
            return Err(ServerError::NotSupported(
                "COPY HEADER outside CSV format".into(),
            ));
        }
        Ok(format)
    }
}

/// Where `COPY … FROM STDIN` puts the rows: a table and the columns the
/// data gives, in the data's order (the others take NULL).
#[derive(Debug, Clone)]
pub struct CopyInto {
    pub table: Arc<TableDef>,
    pub columns: Vec<usize>,
}

impl Session {
    /// Starts a COPY: the rows to send, or the table to fill.
    pub(super) async fn execute_copy(
        &mut self,
        statement: &Statement,
    ) -> ServerResult<StatementResult> {
        let Statement::Copy {
            source,
            to,
            target,
            options,
            legacy_options,
            ..
        } = statement
        else {
            return Err(ServerError::Internal(format!(
                "COPY expected, got {statement}"
            )));
        };
        let format = CopyFormat::from_options(options, legacy_options)?;
        match (target, to) {
            (CopyTarget::Stdout, true) => {}
            (CopyTarget::Stdin, false) => {}
            (CopyTarget::File { .. } | CopyTarget::Program { .. }, _) => {
                return Err(ServerError::NotSupported(
                    "COPY to or from a file or program on the server (use COPY … FROM STDIN / TO STDOUT, or psql's \\copy)"
                        .into(),
                ));
            }
            _ => {
                return Err(ServerError::InvalidParameter(format!(
                    "COPY {} {target}",
                    if *to { "TO" } else { "FROM" }
                )));
            }
        }
        if *to {
            let query = match source {
                CopySource::Query(query) => Statement::Query(query.clone()),
                CopySource::Table {
                    table_name,
                    columns,
                } => {
                    let list = if columns.is_empty() {
                        "*".to_string()
                    } else {
                        columns
                            .iter()
                            .map(Ident::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    runnel_planner::parser::parse_sql(&format!("SELECT {list} FROM {table_name}"))?
                        .remove(0)
                }
            };
            let plan = self.plan(query).await?;
            let frame = self.ctx.execute_logical_plan(plan).await?;
            let schema = Arc::clone(frame.schema().inner());
            let stream = frame.execute_stream().await?;
            return Ok(Outcome::CopyOut {
                schema,
                stream,
                format,
            }
            .into());
        }
        let CopySource::Table {
            table_name,
            columns,
        } = source
        else {
            return Err(ServerError::InvalidParameter(
                "COPY FROM needs a table, not a query".into(),
            ));
        };
        self.check_writable("COPY FROM")?;
        let name = self.resolve(table_name)?;
        let table = self
            .catalog()
            .table(&name)
            .ok_or_else(|| ServerError::UndefinedTable(name.to_string()))?;
        if table.connector.is_some() {
            return Err(ServerError::WrongObjectType(format!(
                "cannot copy to source \"{}\"",
                name.name
            )));
        }
        let columns = if columns.is_empty() {
            (0..table.columns.len()).collect()
        } else {
            columns
                .iter()
                .map(|c| {
                    let c = runnel_planner::ddl::normalize_ident(c);
                    table
                        .columns
                        .iter()
                        .position(|col| col.name == c)
                        .ok_or(ServerError::UndefinedColumn(c))
                })
                .collect::<ServerResult<Vec<_>>>()?
        };
        Ok(Outcome::CopyIn {
            into: CopyInto { table, columns },
            format,
        }
        .into())
    }

    /// Inserts the rows a `COPY … FROM STDIN` received (`columns` holds
    /// the data's columns, as `into.columns` names them), atomically like
    /// one INSERT. Returns the row count.
    pub async fn copy_rows_in(
        &mut self,
        into: &CopyInto,
        columns: Vec<Vec<ArrayRef>>,
    ) -> ServerResult<u64> {
        self.check_writable("COPY FROM")?;
        let def = Arc::clone(&into.table);
        let schema: SchemaRef = def.arrow_schema();
        // Columns the data leaves out take their DEFAULT (a SERIAL's
        // nextval, one per row), as in INSERT.
        let state = self.ctx.state();
        let defaults = crate::catalog::plan_defaults(&def, &state)?;
        // now() and friends are constants of the statement: folded first.
        let simplifier = datafusion::optimizer::simplify_expressions::ExprSimplifier::new(
            datafusion::logical_expr::simplify::SimplifyContext::builder()
                .with_config_options(Arc::new(state.config_options().as_ref().clone()))
                .with_current_time()
                .build(),
        );
        let mut filled = vec![];
        for (slot, column) in def.columns.iter().enumerate() {
            if let (false, Some(expr)) = (into.columns.contains(&slot), defaults.get(&column.name))
            {
                let expr = simplifier.simplify(expr.clone())?;
                let physical = self
                    .ctx
                    .create_physical_expr(expr, &datafusion::common::DFSchema::empty())?;
                filled.push((slot, physical));
            }
        }
        let mut batches = Vec::with_capacity(columns.len());
        for chunk in columns {
            let rows = chunk.first().map_or(0, |c| c.len());
            let mut arrays: Vec<ArrayRef> = schema
                .fields()
                .iter()
                .map(|f| new_null_array(f.data_type(), rows))
                .collect();
            let no_columns = RecordBatch::try_new_with_options(
                Arc::new(datafusion::arrow::datatypes::Schema::empty()),
                vec![],
                &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
            )?;
            for (slot, expr) in &filled {
                arrays[*slot] = expr.evaluate(&no_columns)?.into_array(rows)?;
            }
            for (array, &slot) in chunk.into_iter().zip(&into.columns) {
                arrays[slot] = array;
            }
            batches.push(RecordBatch::try_new(Arc::clone(&schema), arrays)?);
        }
        self.check_rows(&def, &batches)?;
        let db = Arc::clone(&self.db);
        let _write = db.write_lock.lock().await;
        let current = self.catalog().table(&def.name);
        if current.as_deref() != Some(def.as_ref()) {
            return Err(ServerError::StalePlan(format!("table {}", def.name)));
        }
        self.write_table(def, move |def, db, target| {
            insert_rows(def, &db.store, &db.row_ids, &batches, target)
        })
        .await
    }
}
