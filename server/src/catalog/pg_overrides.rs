//! Corrections to `datafusion-pg-catalog`'s `pg_catalog` where Arrow types
//! alone cannot say what the column is: `pg_attribute` gets the Postgres
//! type (json, jsonb, varchar), the type modifier (`numeric(p,s)`,
//! `varchar(n)`) and `atthasdef` from our catalog, `pg_attrdef` lists the
//! DEFAULT expressions, and `pg_get_expr` returns the expression text. So
//! `psql`'s `\d` prints the declared types and defaults.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int16Array, Int32Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Int32Type, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_plan::{ExecutionPlan, collect};
use runnel_planner::catalog::{RelationName, TableDef};
use runnel_planner::types::ColumnType;

use super::Catalog;

/// The `pg_catalog` schema with our corrections in front of the original.
#[derive(Debug)]
pub struct PgCatalogOverrides {
    inner: Arc<dyn SchemaProvider>,
    catalog: Arc<Catalog>,
}

impl PgCatalogOverrides {
    /// Wraps the `pg_catalog` schema `inner`.
    pub fn new(inner: Arc<dyn SchemaProvider>, catalog: Arc<Catalog>) -> Self {
        Self { inner, catalog }
    }
}

#[async_trait]
impl SchemaProvider for PgCatalogOverrides {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(table) = self.inner.table(name).await? else {
            return Ok(None);
        };
        let kind = match name.to_ascii_lowercase().as_str() {
            "pg_attribute" => Fix::Attribute,
            "pg_attrdef" => Fix::AttrDef,
            "pg_class" => Fix::Class,
            _ => return Ok(Some(table)),
        };
        Ok(Some(Arc::new(CorrectedTable {
            kind,
            inner: table,
            pg_catalog: Arc::clone(&self.inner),
            catalog: Arc::clone(&self.catalog),
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

#[derive(Debug, Clone, Copy)]
enum Fix {
    Attribute,
    AttrDef,
    Class,
}

/// A `pg_catalog` table whose rows are corrected when scanned.
#[derive(Debug)]
struct CorrectedTable {
    kind: Fix,
    inner: Arc<dyn TableProvider>,
    pg_catalog: Arc<dyn SchemaProvider>,
    catalog: Arc<Catalog>,
}

async fn scan_all(table: &Arc<dyn TableProvider>, state: &dyn Session) -> Result<Vec<RecordBatch>> {
    let plan = table.scan(state, None, &[], None).await?;
    collect(plan, state.task_ctx()).await
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| DataFusionError::Internal(format!("pg_catalog column {name} missing")))
}

impl CorrectedTable {
    /// Our tables by the oid `pg_class` gave them.
    async fn tables_by_oid(&self, state: &dyn Session) -> Result<HashMap<i32, Arc<TableDef>>> {
        let table = |name: &'static str| async move {
            self.pg_catalog
                .table(name)
                .await?
                .ok_or_else(|| DataFusionError::Internal(format!("{name} missing")))
        };
        let mut schemas = HashMap::new();
        for batch in scan_all(&table("pg_namespace").await?, state).await? {
            let oids = column(&batch, "oid")?.as_primitive::<Int32Type>();
            let names = column(&batch, "nspname")?.as_string::<i32>();
            for row in 0..batch.num_rows() {
                schemas.insert(oids.value(row), names.value(row).to_string());
            }
        }
        let mut out = HashMap::new();
        for batch in scan_all(&table("pg_class").await?, state).await? {
            let oids = column(&batch, "oid")?.as_primitive::<Int32Type>();
            let names = column(&batch, "relname")?.as_string::<i32>();
            let spaces = column(&batch, "relnamespace")?.as_primitive::<Int32Type>();
            for row in 0..batch.num_rows() {
                let Some(schema) = schemas.get(&spaces.value(row)) else {
                    continue;
                };
                let relation = RelationName::new(schema.clone(), names.value(row));
                if let Some(def) = self.catalog.table(&relation) {
                    out.insert(oids.value(row), def);
                }
            }
        }
        Ok(out)
    }

    async fn corrected_attributes(&self, state: &dyn Session) -> Result<Vec<RecordBatch>> {
        let tables = self.tables_by_oid(state).await?;
        let mut out = vec![];
        for batch in scan_all(&self.inner, state).await? {
            let relids = column(&batch, "attrelid")?.as_primitive::<Int32Type>();
            let names = column(&batch, "attname")?.as_string::<i32>();
            let mut types: Vec<i32> = column(&batch, "atttypid")?
                .as_primitive::<Int32Type>()
                .values()
                .to_vec();
            let mut mods: Vec<i32> = column(&batch, "atttypmod")?
                .as_primitive::<Int32Type>()
                .values()
                .to_vec();
            let mut has_default: Vec<bool> = column(&batch, "atthasdef")?
                .as_boolean()
                .iter()
                .map(|b| b.unwrap_or(false))
                .collect();
            for row in 0..batch.num_rows() {
                let Some(def) = tables.get(&relids.value(row)) else {
                    continue;
                };
                let Some(column) = def.columns.iter().find(|c| c.name == names.value(row)) else {
                    continue;
                };
                let (oid, typmod) = pg_type_of(&column.column_type);
                types[row] = oid;
                mods[row] = typmod;
                has_default[row] = column.default.is_some();
            }
            let schema = batch.schema();
            let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
            for (name, array) in [
                ("atttypid", Arc::new(Int32Array::from(types)) as ArrayRef),
                ("atttypmod", Arc::new(Int32Array::from(mods))),
                ("atthasdef", Arc::new(BooleanArray::from(has_default))),
            ] {
                let index = schema.index_of(name)?;
                columns[index] = array;
            }
            out.push(RecordBatch::try_new(schema, columns)?);
        }
        Ok(out)
    }

    /// Materialized views are relkind `m` (psql's `\dm` lists those).
    async fn corrected_classes(&self, state: &dyn Session) -> Result<Vec<RecordBatch>> {
        let mut schemas = HashMap::new();
        let namespaces = self
            .pg_catalog
            .table("pg_namespace")
            .await?
            .ok_or_else(|| DataFusionError::Internal("pg_namespace missing".into()))?;
        for batch in scan_all(&namespaces, state).await? {
            let oids = column(&batch, "oid")?.as_primitive::<Int32Type>();
            let names = column(&batch, "nspname")?.as_string::<i32>();
            for row in 0..batch.num_rows() {
                schemas.insert(oids.value(row), names.value(row).to_string());
            }
        }
        let mut out = vec![];
        for batch in scan_all(&self.inner, state).await? {
            let schema = batch.schema();
            let index = schema.index_of("relkind")?;
            if batch.column(index).data_type() != &DataType::Utf8 {
                out.push(batch);
                continue;
            }
            let names = column(&batch, "relname")?.as_string::<i32>();
            let spaces = column(&batch, "relnamespace")?.as_primitive::<Int32Type>();
            let kinds = batch.column(index).as_string::<i32>();
            let corrected: StringArray = (0..batch.num_rows())
                .map(|row| {
                    let materialized = schemas.get(&spaces.value(row)).is_some_and(|schema| {
                        matches!(
                            self.catalog.relation(&RelationName::new(schema.clone(), names.value(row))),
                            Some(super::Relation::View(v)) if v.is_materialized()
                        )
                    });
                    if materialized {
                        Some("m")
                    } else if kinds.is_null(row) {
                        None
                    } else {
                        Some(kinds.value(row))
                    }
                })
                .collect();
            let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
            columns[index] = Arc::new(corrected);
            out.push(RecordBatch::try_new(schema, columns)?);
        }
        Ok(out)
    }

    async fn attribute_defaults(&self, state: &dyn Session) -> Result<Vec<RecordBatch>> {
        let tables = self.tables_by_oid(state).await?;
        let (mut oids, mut relids, mut nums, mut exprs) = (vec![], vec![], vec![], vec![]);
        let mut ordered: Vec<_> = tables.iter().collect();
        ordered.sort_by_key(|(oid, _)| **oid);
        for (relid, def) in ordered {
            for (index, column) in def.columns.iter().enumerate() {
                if let Some(sql) = &column.default {
                    // Oids of defaults only need to be distinct per table column.
                    oids.push(relid.saturating_mul(1000).saturating_add(index as i32 + 1));
                    relids.push(*relid);
                    nums.push(index as i16 + 1);
                    exprs.push(sql.clone());
                }
            }
        }
        let schema: SchemaRef = self.inner.schema();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(oids)),
                Arc::new(Int32Array::from(relids)),
                Arc::new(Int16Array::from(nums)),
                Arc::new(StringArray::from(exprs)),
            ],
        )?;
        Ok(vec![batch])
    }
}

/// The type oid and modifier Postgres would store for a column type.
fn pg_type_of(column_type: &ColumnType) -> (i32, i32) {
    match column_type {
        ColumnType::Boolean => (16, -1),
        ColumnType::Int2 => (21, -1),
        ColumnType::Int4 => (23, -1),
        ColumnType::Int8 => (20, -1),
        ColumnType::Float4 => (700, -1),
        ColumnType::Float8 => (701, -1),
        ColumnType::Numeric { precision, scale } => (
            1700,
            ((i32::from(*precision) << 16) | i32::from(*scale as u8)) + 4,
        ),
        ColumnType::Text => (25, -1),
        ColumnType::Varchar { max_length } => {
            (1043, max_length.map(|n| n as i32 + 4).unwrap_or(-1))
        }
        ColumnType::Bytea => (17, -1),
        ColumnType::Date => (1082, -1),
        ColumnType::Time => (1083, -1),
        ColumnType::Timestamp => (1114, -1),
        ColumnType::Timestamptz => (1184, -1),
        ColumnType::Interval => (1186, -1),
        ColumnType::Json => (114, -1),
        ColumnType::Jsonb => (3802, -1),
    }
}

#[async_trait]
impl TableProvider for CorrectedTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batches = match self.kind {
            Fix::Attribute => self.corrected_attributes(state).await?,
            Fix::AttrDef => self.attribute_defaults(state).await?,
            Fix::Class => self.corrected_classes(state).await?,
        };
        MemTable::try_new(self.schema(), vec![batches])?
            .scan(state, projection, filters, limit)
            .await
    }
}

/// `pg_get_expr(text, oid [, pretty])`: our defaults are stored as their
/// SQL text, so the text is the answer.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PgGetExpr {
    signature: Signature,
}

impl PgGetExpr {
    /// The function, ready to register.
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            signature: Signature::variadic_any(Volatility::Stable),
        })
    }
}

impl ScalarUDFImpl for PgGetExpr {
    fn name(&self) -> &str {
        "pg_get_expr"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let first = arrays
            .first()
            .ok_or_else(|| DataFusionError::Plan("pg_get_expr needs an expression".into()))?;
        let text = datafusion::arrow::compute::cast(first, &DataType::Utf8)?;
        let strings = text.as_string::<i32>();
        let out: StringArray = (0..strings.len())
            .map(|i| (!strings.is_null(i)).then(|| strings.value(i)))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}
