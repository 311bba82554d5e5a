//! A stored table as a DataFusion `TableProvider`, scanning RocksDB on a
//! blocking thread and streaming batches back with backpressure.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BinaryArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use runnel_planner::catalog::{TableDef, ViewDef};
use runnel_storage::row_codec::RowDecoder;
use runnel_storage::{ScanSpec, Store, TableStore};

use super::pending::{BlockWrites, PendingTable};
use crate::catalog::ROW_KEY_COLUMN;

/// Rows per batch a scan produces.
const SCAN_BATCH_ROWS: usize = 4096;

/// A table whose rows live in the store.
#[derive(Debug)]
pub struct StoredTable {
    def: Arc<TableDef>,
    table_schema: SchemaRef,
    /// The schema the provider shows: the table's, plus the row key column
    /// when `with_row_key` (used only by UPDATE and DELETE).
    schema: SchemaRef,
    with_row_key: bool,
    store: TableStore,
    defaults: HashMap<String, Expr>,
}

impl StoredTable {
    /// The provider of `def`, with DEFAULT expressions already planned.
    pub fn new(
        def: Arc<TableDef>,
        store: &Store,
        defaults: HashMap<String, Expr>,
        with_row_key: bool,
    ) -> Self {
        let table_schema = def.arrow_schema();
        let schema = if with_row_key {
            let mut fields: Vec<Field> = table_schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields.push(Field::new(ROW_KEY_COLUMN, DataType::Binary, false));
            Arc::new(Schema::new(fields))
        } else {
            Arc::clone(&table_schema)
        };
        Self {
            store: store.table(def.id),
            def,
            table_schema,
            schema,
            with_row_key,
            defaults,
        }
    }
}

impl StoredTable {
    /// The provider of materialized view `view`: its stored rows, showing
    /// only the visible columns.
    pub fn materialized(view: &ViewDef, store: &Store) -> Result<Self> {
        let m = view.materialized.as_ref().ok_or_else(|| {
            DataFusionError::Internal(format!("{} is not materialized", view.name))
        })?;
        let def = Arc::new(TableDef {
            id: view.id,
            name: view.name.clone(),
            columns: m.columns.clone(),
            primary_key: vec![],
            connector: None,
            watermark: None,
            indexes: vec![],
            checks: vec![],
        });
        let table_schema = def.arrow_schema();
        let schema = Arc::new(table_schema.project(&(0..m.visible).collect::<Vec<_>>())?);
        Ok(Self {
            store: store.table(def.id),
            def,
            table_schema,
            schema,
            with_row_key: false,
            defaults: HashMap::new(),
        })
    }
}

#[async_trait]
impl TableProvider for StoredTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.defaults.get(column)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if self.def.connector.is_some() {
            return Err(DataFusionError::NotImplemented(format!(
                "reading source {} directly; create a materialized view over it",
                self.def.name
            )));
        }
        let table_columns = self.table_schema.fields().len();
        let wanted: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        // The row key is not a stored column; the partition appends it.
        let key_slot = wanted.iter().position(|&i| i == table_columns);
        let stored: Vec<usize> = wanted
            .iter()
            .copied()
            .filter(|&i| i < table_columns)
            .collect();
        // Inside a transaction block the session sees its own pending rows.
        let pending = state
            .config()
            .get_extension::<BlockWrites>()
            .and_then(|block| block.table(self.def.id))
            .filter(|pending| !pending.rows.is_empty())
            .map(Arc::new);
        // Rows stored before an ALTER TABLE inside the block read a NOT NULL
        // column added since as null, until the pending rows that replace
        // them are filtered out: decode them as nullable.
        let table_schema = match &pending {
            Some(_) => super::indexes::all_nullable(&self.table_schema),
            None => Arc::clone(&self.table_schema),
        };
        let partition = ScanPartition {
            store: self.store.clone(),
            spec: ScanSpec {
                table_schema,
                projection: Some(stored),
                batch_size: SCAN_BATCH_ROWS,
                // Pending rows replace some stored ones: a limit on the
                // stored rows could stop short.
                limit: if pending.is_some() { None } else { limit },
            },
            pending,
            schema: Arc::new(self.schema.project(&wanted)?),
            key_slot: if self.with_row_key { key_slot } else { None },
            table: self.def.name.to_string(),
        };
        let schema = Arc::clone(&partition.schema);
        Ok(Arc::new(StreamingTableExec::try_new(
            schema,
            vec![Arc::new(partition)],
            None,
            vec![],
            false,
            limit,
        )?))
    }
}

/// One scan of one table, as a stream DataFusion pulls from.
#[derive(Debug)]
struct ScanPartition {
    store: TableStore,
    spec: ScanSpec,
    schema: SchemaRef,
    /// Where the row key column goes in the output, if wanted.
    key_slot: Option<usize>,
    table: String,
    /// The block's pending rows of this table, replacing stored ones.
    pending: Option<Arc<PendingTable>>,
}

impl PartitionStream for ScanPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
        let store = self.store.clone();
        let spec = self.spec.clone();
        let schema = Arc::clone(&self.schema);
        let key_slot = self.key_slot;
        let table = self.table.clone();
        let pending = self.pending.clone();
        tokio::task::spawn_blocking(move || {
            let shape = |keys: Vec<Vec<u8>>, batch: RecordBatch| match key_slot {
                Some(slot) => with_row_keys(&schema, batch, keys, slot),
                None => RecordBatch::try_new_with_options(
                    Arc::clone(&schema),
                    batch.columns().to_vec(),
                    &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
                )
                .map_err(DataFusionError::from),
            };
            // The block's rows replace stored ones (which may be in the
            // layout before an ALTER TABLE of the block): skip those
            // undecoded.
            let replaced = |key: &[u8]| pending.as_ref().is_some_and(|p| p.rows.contains_key(key));
            let mut result = store.scan_skipping(
                &spec,
                || {},
                replaced,
                // A closed channel means the query stopped reading.
                |keys, batch| tx.blocking_send(shape(keys, batch)).is_ok(),
            );
            if let (Ok(()), Some(pending)) = (&result, &pending) {
                result = pending_rows(&spec, pending).map(|(keys, batch)| {
                    let _ = tx.blocking_send(shape(keys, batch));
                });
            }
            if let Err(e) = result {
                tracing::error!(table = %table, error = %e, "table scan failed");
                let _ = tx.blocking_send(Err(DataFusionError::External(Box::new(e))));
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        ))
    }
}

/// The block's inserted and updated rows, as the scan projects them.
fn pending_rows(
    spec: &ScanSpec,
    pending: &PendingTable,
) -> runnel_storage::StorageResult<(Vec<Vec<u8>>, RecordBatch)> {
    let mut decoder = RowDecoder::new(&spec.table_schema, spec.projection.as_deref())?;
    let mut keys = vec![];
    for (key, value) in &pending.rows {
        if let Some(value) = value {
            decoder.push(value)?;
            keys.push(key.clone());
        }
    }
    Ok((keys, decoder.finish()?))
}

fn with_row_keys(
    schema: &SchemaRef,
    batch: RecordBatch,
    keys: Vec<Vec<u8>>,
    slot: usize,
) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    let keys: ArrayRef = Arc::new(BinaryArray::from_iter_values(keys));
    columns.insert(slot, keys);
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}
