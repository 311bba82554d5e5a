//! Sequences: `CREATE SEQUENCE`, `nextval` / `currval` / `setval`, and
//! the sequences behind `SERIAL` columns.
//!
//! The catalog holds the sequences (creating and dropping one is part of a
//! transaction block like other DDL). As in Postgres, their counters are
//! not transactional (a rolled-back block does not give its numbers back)
//! and are logged ahead: every
//! [`LOG_AHEAD`] values (or once per batch of rows, for a larger batch)
//! one catalog record saying how far numbers were handed out is written,
//! so after a crash numbering resumes past every value handed out,
//! possibly skipping some.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, AsArray, Int64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;
use runnel_planner::catalog::RelationName;
use runnel_storage::{Store, WriteSet};
use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::error::{ServerError, ServerResult};

/// Values handed out between two writes of a sequence's record.
pub const LOG_AHEAD: i64 = 32;

const PREFIX: &str = "sequence/";

/// A sequence's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceDef {
    pub name: RelationName,
    pub increment: i64,
    pub min: i64,
    pub max: i64,
    pub start: i64,
    pub cycle: bool,
    /// The column a `SERIAL` made it for: dropped with its table.
    pub owned_by: Option<(RelationName, String)>,
    /// `AS smallint | integer | bigint` (a SERIAL's: its column's type).
    #[serde(default)]
    pub data_type: SequenceType,
}

/// The integer type a sequence's values have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SequenceType {
    Smallint,
    Integer,
    #[default]
    Bigint,
}

impl SequenceType {
    /// Postgres's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            Self::Smallint => "smallint",
            Self::Integer => "integer",
            Self::Bigint => "bigint",
        }
    }

    /// The type's oid in `pg_type`.
    pub fn oid(self) -> i32 {
        match self {
            Self::Smallint => 21,
            Self::Integer => 23,
            Self::Bigint => 20,
        }
    }
}

/// What is stored per sequence.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    def: SequenceDef,
    /// The last value handed out (or logged ahead), when `is_called`.
    last_value: i64,
    is_called: bool,
}

#[derive(Debug)]
struct Counter {
    last_value: i64,
    is_called: bool,
    /// How far the stored record covers values handed out (None: it
    /// covers none yet).
    logged_to: Option<i64>,
    /// False for a sequence created by an open transaction block: its
    /// record is written when the block commits, not by `nextval`.
    persisted: bool,
}

/// One sequence: its definition and its counter. The catalog holds the
/// cells; a block's draft catalog shares the committed ones, so `nextval`
/// inside a block advances the same counter (sequences are not
/// transactional).
#[derive(Debug)]
pub struct SequenceCell {
    def: SequenceDef,
    counter: Mutex<Counter>,
}

/// The catalog key of sequence `name`'s record.
pub(crate) fn record_key(name: &RelationName) -> Vec<u8> {
    format!("{PREFIX}{}.{}", name.schema, name.name).into_bytes()
}

fn record_bytes(record: &Record) -> ServerResult<Vec<u8>> {
    serde_json::to_vec(record).map_err(|e| ServerError::Internal(format!("sequence record: {e}")))
}

/// Every stored sequence.
pub(crate) fn load(store: &Store) -> ServerResult<Vec<SequenceCell>> {
    let mut cells = vec![];
    for (_, bytes) in store.meta_scan(PREFIX.as_bytes())? {
        let record: Record = serde_json::from_slice(&bytes)
            .map_err(|e| ServerError::Internal(format!("stored sequence: {e}")))?;
        cells.push(SequenceCell {
            counter: Mutex::new(Counter {
                last_value: record.last_value,
                is_called: record.is_called,
                logged_to: record.is_called.then_some(record.last_value),
                persisted: true,
            }),
            def: record.def,
        });
    }
    Ok(cells)
}

/// Checks a new sequence's options against each other.
pub(crate) fn validate(def: &SequenceDef) -> ServerResult<()> {
    if def.increment == 0 {
        return Err(ServerError::InvalidOption(
            "INCREMENT must not be zero".into(),
        ));
    }
    if def.min >= def.max {
        return Err(ServerError::InvalidOption(format!(
            "MINVALUE ({}) must be less than MAXVALUE ({})",
            def.min, def.max
        )));
    }
    if def.start < def.min || def.start > def.max {
        return Err(ServerError::InvalidOption(format!(
            "START value ({}) must lie between MINVALUE ({}) and MAXVALUE ({})",
            def.start, def.min, def.max
        )));
    }
    Ok(())
}

impl SequenceCell {
    /// A new sequence, not yet called; `persisted` when its record is
    /// written with its creation (false inside a transaction block).
    pub(crate) fn new(def: SequenceDef, persisted: bool) -> Self {
        Self {
            counter: Mutex::new(Counter {
                last_value: def.start,
                is_called: false,
                logged_to: None,
                persisted,
            }),
            def,
        }
    }

    /// The sequence's definition.
    pub fn def(&self) -> &SequenceDef {
        &self.def
    }

    /// The same sequence, owned by the column of the same name in table
    /// `table` (the owning table was renamed); the counter goes along.
    pub(crate) fn with_owner_table(&self, table: RelationName) -> Self {
        let counter = self.lock();
        let mut def = self.def.clone();
        if let Some((owner, _)) = &mut def.owned_by {
            *owner = table;
        }
        Self {
            def,
            counter: Mutex::new(Counter {
                last_value: counter.last_value,
                is_called: counter.is_called,
                logged_to: counter.logged_to,
                persisted: counter.persisted,
            }),
        }
    }

    /// Whether the sequence's record is in the store (false while only a
    /// transaction block's draft has it).
    pub(crate) fn is_persisted(&self) -> bool {
        self.lock().persisted
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counter> {
        self.counter.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last value handed out, None before the first `nextval`.
    pub fn last_value(&self) -> Option<i64> {
        let counter = self.lock();
        counter.is_called.then_some(counter.last_value)
    }

    /// The key and bytes of the sequence's record as it stands now.
    pub(crate) fn record(&self) -> ServerResult<(Vec<u8>, Vec<u8>)> {
        let counter = self.lock();
        let record = Record {
            def: self.def.clone(),
            last_value: counter.last_value,
            is_called: counter.is_called,
        };
        Ok((record_key(&self.def.name), record_bytes(&record)?))
    }

    /// For a sequence its block created: the record to commit with the
    /// block; from then on `nextval` writes its own records.
    pub(crate) fn take_unpersisted_record(&self) -> ServerResult<Option<(Vec<u8>, Vec<u8>)>> {
        if self.lock().persisted {
            return Ok(None);
        }
        let record = self.record()?;
        let mut counter = self.lock();
        counter.persisted = true;
        counter.logged_to = counter.is_called.then_some(counter.last_value);
        Ok(Some(record))
    }

    fn write(&self, store: &Store, last_value: i64, is_called: bool) -> ServerResult<()> {
        let mut writes = WriteSet::new();
        let bytes = record_bytes(&Record {
            def: self.def.clone(),
            last_value,
            is_called,
        })?;
        writes.put_meta(&record_key(&self.def.name), &bytes);
        Ok(store.write(writes)?)
    }

    /// `nextval`: the next value; `coming` more calls are expected right
    /// after (a batch of rows), so the record logs at least that far ahead
    /// in one write.
    pub fn next(&self, store: &Store, coming: i64) -> ServerResult<i64> {
        let def = &self.def;
        let mut seq = self.lock();
        let mut cycled = false;
        let value = if !seq.is_called {
            seq.last_value
        } else {
            match seq.last_value.checked_add(def.increment) {
                Some(v) if v >= def.min && v <= def.max => v,
                _ if def.cycle => {
                    cycled = true;
                    if def.increment > 0 { def.min } else { def.max }
                }
                _ => {
                    return Err(ServerError::SequenceLimit(format!(
                        "nextval: reached {} value of sequence \"{}\" ({})",
                        if def.increment > 0 {
                            "maximum"
                        } else {
                            "minimum"
                        },
                        def.name.name,
                        if def.increment > 0 { def.max } else { def.min }
                    )));
                }
            }
        };
        let covered = !cycled
            && seq.logged_to.is_some_and(|logged| {
                if def.increment > 0 {
                    value <= logged
                } else {
                    value >= logged
                }
            });
        if !covered && seq.persisted {
            let ahead = value
                .saturating_add(def.increment.saturating_mul(LOG_AHEAD.max(coming) - 1))
                .clamp(def.min, def.max);
            self.write(store, ahead, true)?;
            seq.logged_to = Some(ahead);
        }
        seq.last_value = value;
        seq.is_called = true;
        Ok(value)
    }

    /// `setval(name, value, is_called)`.
    pub fn set(&self, store: &Store, value: i64, is_called: bool) -> ServerResult<i64> {
        let def = &self.def;
        if value < def.min || value > def.max {
            return Err(ServerError::SequenceLimit(format!(
                "setval: value {value} is out of bounds for sequence \"{}\" ({}..{})",
                def.name.name, def.min, def.max
            )));
        }
        let mut seq = self.lock();
        if seq.persisted {
            self.write(store, value, is_called)?;
            seq.logged_to = is_called.then_some(value);
        }
        seq.last_value = value;
        seq.is_called = is_called;
        Ok(value)
    }
}

/// The relation a `'name'` or `'schema.name'` text argument names (SQL
/// rules: unquoted parts fold to lower case), unqualified ones in
/// `schema`.
fn relation_name(text: &str, schema: &str) -> Option<RelationName> {
    let name = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .and_then(|mut p| {
            let name = p.parse_object_name(false)?;
            p.expect_token(&Token::EOF)?;
            Ok(name)
        })
        .ok()?;
    let parts = runnel_planner::ddl::name_parts(&name).ok()?;
    match parts.as_slice() {
        [name] => Some(RelationName::new(schema, name.clone())),
        [schema, name] => Some(RelationName::new(schema.clone(), name.clone())),
        _ => None,
    }
}

/// `pg_get_serial_sequence(table, column)`: the sequence a SERIAL or
/// identity column takes its values from, as `schema.name`; NULL for
/// another column. Unqualified tables resolve in `schema`.
pub fn serial_sequence_function(catalog: &Arc<Catalog>, schema: &str) -> ScalarUDF {
    let catalog = Arc::clone(catalog);
    let schema = schema.to_string();
    datafusion::logical_expr::create_udf(
        "pg_get_serial_sequence",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let (tables, columns) = (arrays[0].as_string::<i32>(), arrays[1].as_string::<i32>());
            let mut out = Vec::with_capacity(tables.len());
            for row in 0..tables.len() {
                if tables.is_null(row) || columns.is_null(row) {
                    out.push(None);
                    continue;
                }
                let text = tables.value(row);
                let table = relation_name(text, &schema)
                    .filter(|t| catalog.table(t).is_some())
                    .ok_or_else(|| {
                        DataFusionError::External(Box::new(ServerError::UndefinedTable(
                            text.to_string(),
                        )))
                    })?;
                let owner = (table, columns.value(row).to_string());
                out.push(
                    catalog
                        .sequences()
                        .into_iter()
                        .find(|s| s.def().owned_by.as_ref() == Some(&owner))
                        .map(|s| format!("{}.{}", s.def().name.schema, s.def().name.name)),
                );
            }
            Ok(ColumnarValue::Array(Arc::new(
                datafusion::arrow::array::StringArray::from(out),
            )))
        }),
    )
}

/// The functions over sequences as one session sees them: unqualified
/// names resolve in `schema`, and `currval` answers what this session's
/// `nextval` last got.
pub fn sequence_functions(
    catalog: &Arc<Catalog>,
    schema: &str,
    session_values: &Arc<Mutex<HashMap<RelationName, i64>>>,
) -> Vec<ScalarUDF> {
    ["nextval", "currval", "setval"]
        .into_iter()
        .map(|name| {
            let arguments = if name == "setval" {
                vec![
                    TypeSignature::Exact(vec![DataType::Utf8, DataType::Int64]),
                    TypeSignature::Exact(vec![DataType::Utf8, DataType::Int64, DataType::Boolean]),
                ]
            } else {
                vec![TypeSignature::Exact(vec![DataType::Utf8])]
            };
            ScalarUDF::new_from_impl(SequenceFunction {
                name,
                signature: Signature::one_of(arguments, Volatility::Volatile),
                catalog: Arc::clone(catalog),
                schema: schema.to_string(),
                session_values: Arc::clone(session_values),
            })
        })
        .collect()
}

#[derive(Debug)]
struct SequenceFunction {
    name: &'static str,
    signature: Signature,
    catalog: Arc<Catalog>,
    schema: String,
    session_values: Arc<Mutex<HashMap<RelationName, i64>>>,
}

impl PartialEq for SequenceFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.schema == other.schema
            && Arc::ptr_eq(&self.catalog, &other.catalog)
            && Arc::ptr_eq(&self.session_values, &other.session_values)
    }
}

impl Eq for SequenceFunction {}

impl std::hash::Hash for SequenceFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.schema.hash(state);
    }
}

impl SequenceFunction {
    /// The sequence a `'name'` or `'schema.name'` argument names.
    fn resolve(&self, text: &str) -> DfResult<RelationName> {
        relation_name(text, &self.schema)
            .ok_or_else(|| DataFusionError::Plan(format!("invalid sequence name \"{text}\"")))
    }

    fn call(&self, name: &RelationName, row: usize, args: &[Arc<dyn Array>]) -> DfResult<i64> {
        let external = |e: ServerError| DataFusionError::External(Box::new(e));
        let cell = self
            .catalog
            .sequence(name)
            .ok_or_else(|| external(ServerError::UndefinedTable(name.name.clone())))?;
        let store = self.catalog.store();
        let remember = |value: i64| {
            self.session_values
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.clone(), value);
        };
        match self.name {
            "nextval" => {
                let coming = (args[0].len() - row) as i64;
                let value = cell.next(store, coming).map_err(external)?;
                remember(value);
                Ok(value)
            }
            "currval" => self
                .session_values
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(name)
                .copied()
                .ok_or_else(|| {
                    external(ServerError::NotInPrerequisiteState(format!(
                        "currval of sequence \"{}\" is not yet defined in this session",
                        name.name
                    )))
                }),
            _ => {
                let value = args[1].as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                let is_called = args
                    .get(2)
                    .map(|a| a.as_boolean().value(row))
                    .unwrap_or(true);
                let set = cell
                    .set(store, value.value(row), is_called)
                    .map_err(external)?;
                if is_called {
                    remember(set);
                }
                Ok(set)
            }
        }
    }
}

impl ScalarUDFImpl for SequenceFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        // One value per row even when the arguments are constants: each
        // row gets its own nextval.
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<DfResult<Vec<_>>>()?;
        let names = arrays[0].as_string::<i32>();
        let mut out = Vec::with_capacity(rows);
        // The name is nearly always one constant: resolve each text once.
        let mut resolved: HashMap<&str, RelationName> = HashMap::new();
        for row in 0..rows {
            if arrays.iter().any(|a| a.is_null(row)) {
                out.push(None);
                continue;
            }
            let text = names.value(row);
            let name = match resolved.get(text) {
                Some(name) => name.clone(),
                None => {
                    let name = self.resolve(text)?;
                    resolved.insert(text, name.clone());
                    name
                }
            };
            out.push(Some(self.call(&name, row, &arrays)?));
        }
        Ok(ColumnarValue::Array(Arc::new(Int64Array::from(out))))
    }
}
