//! The catalog as DataFusion sees it: one `CatalogProvider` for the
//! `runnel` database whose schemas resolve names to stored tables and views.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::common::DFSchema;
use datafusion::datasource::TableType;
use datafusion::datasource::view::ViewTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlanBuilder};
use runnel_planner::catalog::{RelationName, TableDef, ViewDef};

use super::{Catalog, Relation};
use crate::tables::StoredTable;

const INFORMATION_SCHEMA: &str = "information_schema";

/// Name of the hidden column holding a row's storage key, shown only by the
/// `__runnel_dml__<table>` alias that UPDATE and DELETE read through.
pub const ROW_KEY_COLUMN: &str = "__runnel_row_key";
/// Prefix of a table name that asks for the table with its row keys.
pub const DML_PREFIX: &str = "__runnel_dml__";

/// DataFusion's view of the Runnel catalog.
#[derive(Debug)]
pub struct RunnelCatalogProvider {
    catalog: Arc<Catalog>,
    /// A session state to plan view queries and DEFAULT expressions with;
    /// set once the session state that contains this provider exists.
    planner_state: Arc<OnceLock<SessionState>>,
    /// Schemas registered by DataFusion or pg_catalog setup (`pg_catalog`).
    extra: RwLock<HashMap<String, Arc<dyn SchemaProvider>>>,
}

impl RunnelCatalogProvider {
    /// A provider over `catalog`.
    pub fn new(catalog: Arc<Catalog>) -> Self {
        Self {
            catalog,
            planner_state: Arc::new(OnceLock::new()),
            extra: RwLock::new(HashMap::new()),
        }
    }

    /// Puts our corrections in front of the `pg_catalog` schema that
    /// `datafusion-pg-catalog` registered.
    pub fn correct_pg_catalog(&self) {
        let mut extra = self.extra.write().unwrap_or_else(|p| p.into_inner());
        if let Some(inner) = extra.remove("pg_catalog") {
            let corrected =
                super::pg_overrides::PgCatalogOverrides::new(inner, Arc::clone(&self.catalog));
            extra.insert("pg_catalog".into(), Arc::new(corrected));
        }
    }

    /// Registers `information_schema` (DataFusion's over `catalog_list`,
    /// with our corrections in front), which sessions find through this
    /// provider: DataFusion's own is turned off.
    pub fn register_information_schema(
        &self,
        catalog_list: Arc<dyn datafusion::catalog::CatalogProviderList>,
    ) {
        let inner = Arc::new(
            datafusion::catalog::information_schema::InformationSchemaProvider::new(catalog_list),
        );
        let schema = super::information_schema::InformationSchemaOverrides::new(
            inner,
            Arc::clone(&self.catalog),
        );
        self.extra
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(INFORMATION_SCHEMA.into(), Arc::new(schema));
    }

    /// Gives the provider the state to plan views and defaults with.
    pub fn set_planner_state(&self, state: SessionState) {
        let _ = self.planner_state.set(state);
    }
}

impl CatalogProvider for RunnelCatalogProvider {
    fn schema_names(&self) -> Vec<String> {
        let mut names = self.catalog.schema_names();
        // information_schema stays out of listings, as DataFusion's was:
        // its provider lists its own tables.
        names.extend(
            self.extra
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .filter(|name| *name != INFORMATION_SCHEMA)
                .cloned(),
        );
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if let Some(extra) = self
            .extra
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Some(Arc::clone(extra));
        }
        self.catalog.has_schema(name).then(|| {
            Arc::new(RunnelSchemaProvider {
                catalog: Arc::clone(&self.catalog),
                schema: name.to_string(),
                planner_state: Arc::clone(&self.planner_state),
            }) as Arc<dyn SchemaProvider>
        })
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        Ok(self
            .extra
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), schema))
    }
}

/// The DEFAULT expressions of a table, planned and cast to their columns'
/// types; fails for a default that does not plan (checked at CREATE and
/// ALTER so a bad one never reaches the catalog).
pub fn plan_defaults(def: &TableDef, state: &SessionState) -> Result<HashMap<String, Expr>> {
    let empty = DFSchema::empty();
    let mut defaults = HashMap::new();
    for column in &def.columns {
        if let Some(sql) = &column.default {
            let expr: Expr = state.create_logical_expr(sql, &empty)?;
            let expr = expr.cast_to(&column.column_type.arrow_type(), &empty)?;
            defaults.insert(column.name.clone(), expr);
        }
    }
    Ok(defaults)
}

/// One schema of the catalog.
#[derive(Debug)]
struct RunnelSchemaProvider {
    catalog: Arc<Catalog>,
    schema: String,
    planner_state: Arc<OnceLock<SessionState>>,
}

impl RunnelSchemaProvider {
    fn state(&self) -> Result<SessionState> {
        let mut state = self
            .planner_state
            .get()
            .cloned()
            .ok_or_else(|| DataFusionError::Internal("catalog used before start-up".into()))?;
        state.config_mut().options_mut().catalog.default_schema = self.schema.clone();
        Ok(state)
    }

    fn stored_table(
        &self,
        def: Arc<TableDef>,
        with_row_key: bool,
    ) -> Result<Arc<dyn TableProvider>> {
        let defaults = if def.columns.iter().any(|c| c.default.is_some()) {
            plan_defaults(&def, &self.state()?)?
        } else {
            HashMap::new()
        };
        Ok(Arc::new(StoredTable::new(
            def,
            self.catalog.store(),
            defaults,
            with_row_key,
        )))
    }

    async fn view(&self, def: &ViewDef) -> Result<Arc<dyn TableProvider>> {
        let state = self.state()?;
        let mut plan = state.create_logical_plan(&def.sql).await?;
        if !def.column_names.is_empty() {
            let exprs = plan
                .schema()
                .columns()
                .into_iter()
                .zip(&def.column_names)
                .map(|(column, name)| Expr::Column(column).alias(name))
                .collect::<Vec<_>>();
            plan = LogicalPlanBuilder::from(plan).project(exprs)?.build()?;
        }
        Ok(Arc::new(ViewTable::new(plan, Some(def.sql.clone()))))
    }
}

#[async_trait]
impl SchemaProvider for RunnelSchemaProvider {
    fn table_names(&self) -> Vec<String> {
        self.catalog.relation_names(&self.schema)
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(target) = name.strip_prefix(DML_PREFIX) {
            let relation = RelationName::new(self.schema.clone(), target);
            return match self.catalog.table(&relation) {
                Some(def) => self.stored_table(def, true).map(Some),
                None => Ok(None),
            };
        }
        match self
            .catalog
            .relation(&RelationName::new(self.schema.clone(), name))
        {
            Some(Relation::Table(def)) => self.stored_table(def, false).map(Some),
            Some(Relation::View(def)) if def.is_materialized() => Ok(Some(Arc::new(
                StoredTable::materialized(&def, self.catalog.store())?,
            ))),
            Some(Relation::View(def)) => self.view(&def).await.map(Some),
            None => Ok(None),
        }
    }

    async fn table_type(&self, name: &str) -> Result<Option<TableType>> {
        Ok(
            match self
                .catalog
                .relation(&RelationName::new(self.schema.clone(), name))
            {
                Some(Relation::Table(_)) => Some(TableType::Base),
                Some(Relation::View(def)) if def.is_materialized() => Some(TableType::Base),
                Some(Relation::View(_)) => Some(TableType::View),
                None => None,
            },
        )
    }

    fn table_exist(&self, name: &str) -> bool {
        self.catalog
            .relation(&RelationName::new(self.schema.clone(), name))
            .is_some()
    }
}
