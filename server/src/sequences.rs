//! Sequences: `CREATE SEQUENCE`, `nextval` / `currval` / `setval`, and
//! the sequences behind `SERIAL` columns.
//!
//! As in Postgres, sequences are not transactional (a rolled-back block
//! does not give its numbers back) and are logged ahead: every
//! [`LOG_AHEAD`] values (or once per batch of rows, for a larger batch)
//! one catalog record saying how far numbers were handed out is written,
//! so after a crash numbering resumes past every value handed out,
//! possibly skipping some.

use std::collections::{BTreeMap, HashMap};
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
struct Live {
    record: Record,
    /// How far the stored record covers values handed out (None: it
    /// covers none yet).
    logged_to: Option<i64>,
}

/// Every sequence of the database.
#[derive(Debug)]
pub struct Sequences {
    store: Store,
    live: Mutex<BTreeMap<RelationName, Live>>,
}

fn key(name: &RelationName) -> Vec<u8> {
    format!("{PREFIX}{}.{}", name.schema, name.name).into_bytes()
}

impl Sequences {
    /// Loads the stored sequences.
    pub fn open(store: &Store) -> ServerResult<Self> {
        let mut live = BTreeMap::new();
        for (_, bytes) in store.meta_scan(PREFIX.as_bytes())? {
            let record: Record = serde_json::from_slice(&bytes)
                .map_err(|e| ServerError::Internal(format!("stored sequence: {e}")))?;
            let logged_to = record.is_called.then_some(record.last_value);
            live.insert(record.def.name.clone(), Live { record, logged_to });
        }
        Ok(Self {
            store: store.clone(),
            live: Mutex::new(live),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<RelationName, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, record: &Record) -> ServerResult<()> {
        let mut writes = WriteSet::new();
        let bytes = serde_json::to_vec(record)
            .map_err(|e| ServerError::Internal(format!("sequence record: {e}")))?;
        writes.put_meta(&key(&record.def.name), &bytes);
        Ok(self.store.write(writes)?)
    }

    /// Whether sequence `name` exists.
    pub fn exists(&self, name: &RelationName) -> bool {
        self.lock().contains_key(name)
    }

    /// Creates a sequence.
    pub fn create(&self, def: SequenceDef) -> ServerResult<()> {
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
        let mut live = self.lock();
        if live.contains_key(&def.name) {
            return Err(ServerError::DuplicateTable(def.name.name.clone()));
        }
        let record = Record {
            last_value: def.start,
            is_called: false,
            def,
        };
        self.write(&record)?;
        live.insert(
            record.def.name.clone(),
            Live {
                logged_to: None,
                record,
            },
        );
        Ok(())
    }

    /// Drops a sequence; false when there was none.
    pub fn remove(&self, name: &RelationName) -> ServerResult<bool> {
        let mut live = self.lock();
        if live.remove(name).is_none() {
            return Ok(false);
        }
        let mut writes = WriteSet::new();
        writes.delete_meta(&key(name));
        self.store.write(writes)?;
        Ok(true)
    }

    /// The sequences a `SERIAL` column of `table` owns.
    pub fn owned_by(&self, table: &RelationName) -> Vec<RelationName> {
        self.lock()
            .values()
            .filter(|l| {
                l.record
                    .def
                    .owned_by
                    .as_ref()
                    .is_some_and(|(t, _)| t == table)
            })
            .map(|l| l.record.def.name.clone())
            .collect()
    }

    /// The sequence owned by `table.column`, if any.
    pub fn serial_of(&self, table: &RelationName, column: &str) -> Option<RelationName> {
        self.lock()
            .values()
            .find(|l| {
                l.record
                    .def
                    .owned_by
                    .as_ref()
                    .is_some_and(|(t, c)| t == table && c == column)
            })
            .map(|l| l.record.def.name.clone())
    }

    /// Every sequence with its last value (None before the first nextval).
    pub fn list(&self) -> Vec<(SequenceDef, Option<i64>)> {
        self.lock()
            .values()
            .map(|l| {
                (
                    l.record.def.clone(),
                    l.record.is_called.then_some(l.record.last_value),
                )
            })
            .collect()
    }

    /// `nextval`: the next value of sequence `name`; `coming` more calls
    /// are expected right after (a batch of rows), so the record logs at
    /// least that far ahead in one write.
    pub fn next(&self, name: &RelationName, coming: i64) -> ServerResult<i64> {
        let mut live = self.lock();
        let seq = live
            .get_mut(name)
            .ok_or_else(|| ServerError::UndefinedTable(name.name.clone()))?;
        let def = &seq.record.def;
        let mut cycled = false;
        let value = if !seq.record.is_called {
            seq.record.last_value
        } else {
            match seq.record.last_value.checked_add(def.increment) {
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
                        name.name,
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
        if !covered {
            let ahead = value
                .saturating_add(def.increment.saturating_mul(LOG_AHEAD.max(coming) - 1))
                .clamp(def.min, def.max);
            self.write(&Record {
                def: def.clone(),
                last_value: ahead,
                is_called: true,
            })?;
            seq.logged_to = Some(ahead);
        }
        seq.record.last_value = value;
        seq.record.is_called = true;
        Ok(value)
    }

    /// `setval(name, value, is_called)`.
    pub fn set(&self, name: &RelationName, value: i64, is_called: bool) -> ServerResult<i64> {
        let mut live = self.lock();
        let seq = live
            .get_mut(name)
            .ok_or_else(|| ServerError::UndefinedTable(name.name.clone()))?;
        let def = &seq.record.def;
        if value < def.min || value > def.max {
            return Err(ServerError::SequenceLimit(format!(
                "setval: value {value} is out of bounds for sequence \"{}\" ({}..{})",
                name.name, def.min, def.max
            )));
        }
        let record = Record {
            def: def.clone(),
            last_value: value,
            is_called,
        };
        self.write(&record)?;
        seq.logged_to = is_called.then_some(value);
        seq.record = record;
        Ok(value)
    }
}

/// The functions over sequences as one session sees them: unqualified
/// names resolve in `schema`, and `currval` answers what this session's
/// `nextval` last got.
pub fn sequence_functions(
    sequences: &Arc<Sequences>,
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
                sequences: Arc::clone(sequences),
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
    sequences: Arc<Sequences>,
    schema: String,
    session_values: Arc<Mutex<HashMap<RelationName, i64>>>,
}

impl PartialEq for SequenceFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.schema == other.schema
            && Arc::ptr_eq(&self.sequences, &other.sequences)
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
        let invalid = || DataFusionError::Plan(format!("invalid sequence name \"{text}\""));
        let name = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(text)
            .and_then(|mut p| {
                let name = p.parse_object_name(false)?;
                p.expect_token(&Token::EOF)?;
                Ok(name)
            })
            .map_err(|_| invalid())?;
        let parts = runnel_planner::ddl::name_parts(&name).map_err(|_| invalid())?;
        match parts.as_slice() {
            [name] => Ok(RelationName::new(self.schema.clone(), name.clone())),
            [schema, name] => Ok(RelationName::new(schema.clone(), name.clone())),
            _ => Err(invalid()),
        }
    }

    fn call(&self, name: &RelationName, row: usize, args: &[Arc<dyn Array>]) -> DfResult<i64> {
        let external = |e: ServerError| DataFusionError::External(Box::new(e));
        match self.name {
            "nextval" => {
                let coming = (args[0].len() - row) as i64;
                let value = self.sequences.next(name, coming).map_err(external)?;
                self.session_values
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.clone(), value);
                Ok(value)
            }
            "currval" => {
                if !self.sequences.exists(name) {
                    return Err(external(ServerError::UndefinedTable(name.name.clone())));
                }
                self.session_values
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(name)
                    .copied()
                    .ok_or_else(|| {
                        external(ServerError::NotInPrerequisiteState(format!(
                            "currval of sequence \"{}\" is not yet defined in this session",
                            name.name
                        )))
                    })
            }
            _ => {
                let value = args[1].as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                let is_called = args
                    .get(2)
                    .map(|a| a.as_boolean().value(row))
                    .unwrap_or(true);
                let value = value.value(row);
                let set = self
                    .sequences
                    .set(name, value, is_called)
                    .map_err(external)?;
                if is_called {
                    self.session_values
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(name.clone(), value);
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
