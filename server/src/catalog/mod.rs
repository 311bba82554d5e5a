//! The live catalog: schemas, tables and views, kept in memory and persisted
//! in the store as JSON records, each change in one atomic write together
//! with the rows it drops.

mod definitions;
mod draft;
mod functions;
mod indexes;
mod information_schema;
mod json_build;
mod pg_keys;
mod pg_listings;
mod pg_objects;
mod pg_overrides;
mod pg_relations;
mod pg_rows;
mod provider;
mod regclass;
mod regtype;
mod sequences;
mod single_value;
mod sinks;
mod subscripts;

pub use definitions::definition_functions;
pub use functions::{current_setting, fixed_functions, pg_type_name};
pub use pg_listings::{ListedSetting, SessionSettings};
pub use provider::{DML_PREFIX, ROW_KEY_COLUMN, RunnelCatalogProvider, plan_defaults};
pub use regclass::regclass_functions;
pub use regtype::{function_result, to_regtype};
pub use single_value::single_value;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use runnel_planner::catalog::{DEFAULT_SCHEMA, RelationName, SchemaDef, TableDef, ViewDef};
use runnel_storage::{Store, WriteSet};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ServerError, ServerResult};
use crate::sequences::SequenceCell;

const NEXT_ID: &[u8] = b"next_id";

/// A relation found by name.
#[derive(Debug, Clone)]
pub enum Relation {
    Table(Arc<TableDef>),
    View(Arc<ViewDef>),
}

#[derive(Debug, Default, Clone)]
struct CatalogState {
    schemas: BTreeSet<String>,
    tables: BTreeMap<RelationName, Arc<TableDef>>,
    views: BTreeMap<RelationName, Arc<ViewDef>>,
    sinks: BTreeMap<RelationName, Arc<runnel_planner::catalog::SinkDef>>,
    sequences: BTreeMap<RelationName, Arc<SequenceCell>>,
    next_id: u64,
    /// Counts changes, so a transaction block's draft can tell at COMMIT
    /// whether the catalog changed since it was taken.
    version: u64,
}

/// Schemas, tables, views, sinks and sequences. Reads are cheap snapshots
/// of `Arc`s; every change is persisted before it becomes visible.
///
/// A transaction block that runs DDL works on a draft ([`Catalog::draft`]):
/// a copy whose changes are collected instead of written, and that
/// [`Catalog::commit_draft`] makes the live catalog in one write.
#[derive(Debug)]
pub struct Catalog {
    store: Store,
    state: RwLock<CatalogState>,
    /// Set for a block's draft: what its changes will write.
    draft: Option<std::sync::Mutex<draft::Draft>>,
}

fn schema_key(name: &str) -> Vec<u8> {
    format!("schema/{name}").into_bytes()
}

fn table_key(id: u64) -> Vec<u8> {
    format!("table/{id:020}").into_bytes()
}

fn view_key(id: u64) -> Vec<u8> {
    format!("view/{id:020}").into_bytes()
}

fn encode<T: Serialize>(value: &T) -> ServerResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| ServerError::Internal(format!("encoding catalog: {e}")))
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> ServerResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| ServerError::Internal(format!("corrupt catalog record {what}: {e}")))
}

impl Catalog {
    /// Loads the catalog from `store`, creating the `public` schema on first
    /// start.
    pub fn open(store: Store) -> ServerResult<Arc<Self>> {
        let mut state = CatalogState {
            next_id: 1,
            ..Default::default()
        };
        for (key, value) in store.meta_scan(b"schema/")? {
            let def: SchemaDef = decode(&String::from_utf8_lossy(&key), &value)?;
            state.schemas.insert(def.name);
        }
        for (key, value) in store.meta_scan(b"table/")? {
            let def: TableDef = decode(&String::from_utf8_lossy(&key), &value)?;
            state.tables.insert(def.name.clone(), Arc::new(def));
        }
        for (key, value) in store.meta_scan(b"view/")? {
            let def: ViewDef = decode(&String::from_utf8_lossy(&key), &value)?;
            state.views.insert(def.name.clone(), Arc::new(def));
        }
        for (key, value) in store.meta_scan(sinks::SINK_PREFIX)? {
            let def: runnel_planner::catalog::SinkDef =
                decode(&String::from_utf8_lossy(&key), &value)?;
            state.sinks.insert(def.name.clone(), Arc::new(def));
        }
        for cell in crate::sequences::load(&store)? {
            state
                .sequences
                .insert(cell.def().name.clone(), Arc::new(cell));
        }
        if let Some((_, value)) = store.meta_scan(NEXT_ID)?.into_iter().next() {
            state.next_id = decode("next_id", &value)?;
        }
        let catalog = Arc::new(Self {
            store,
            state: RwLock::new(state),
            draft: None,
        });
        if !catalog.has_schema(DEFAULT_SCHEMA) {
            catalog.create_schema(DEFAULT_SCHEMA, false)?;
        }
        Ok(catalog)
    }

    fn read(&self) -> RwLockReadGuard<'_, CatalogState> {
        // A panic while holding the lock cannot leave the maps half-changed
        // (each change is a few inserts after the store write), so a
        // poisoned lock is still consistent.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, CatalogState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The store the catalog lives in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Makes a change persistent: written at once, or (for a draft) kept
    /// for COMMIT. Callers change `state` after this succeeds.
    fn persist(&self, state: &mut CatalogState, writes: WriteSet) -> ServerResult<()> {
        match &self.draft {
            Some(draft) => draft
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .writes
                .extend(writes),
            None => self.store.write(writes)?,
        }
        state.version += 1;
        Ok(())
    }

    /// Names of every user schema.
    pub fn schema_names(&self) -> Vec<String> {
        self.read().schemas.iter().cloned().collect()
    }

    /// True when schema `name` exists.
    pub fn has_schema(&self, name: &str) -> bool {
        self.read().schemas.contains(name)
    }

    /// Names of the tables and views of `schema`.
    pub fn relation_names(&self, schema: &str) -> Vec<String> {
        let state = self.read();
        state
            .tables
            .keys()
            .chain(state.views.keys())
            .filter(|n| n.schema == schema)
            .map(|n| n.name.clone())
            .collect()
    }

    /// The table or view called `name`.
    pub fn relation(&self, name: &RelationName) -> Option<Relation> {
        let state = self.read();
        if let Some(t) = state.tables.get(name) {
            return Some(Relation::Table(Arc::clone(t)));
        }
        state.views.get(name).map(|v| Relation::View(Arc::clone(v)))
    }

    /// Every table and source.
    pub fn tables(&self) -> Vec<Arc<TableDef>> {
        self.read().tables.values().cloned().collect()
    }

    /// Every view, materialized or not.
    pub fn views(&self) -> Vec<Arc<ViewDef>> {
        self.read().views.values().cloned().collect()
    }

    /// The table called `name`.
    pub fn table(&self, name: &RelationName) -> Option<Arc<TableDef>> {
        self.read().tables.get(name).cloned()
    }

    /// The views (materialized or not) that read `name`, directly or
    /// through other views.
    pub fn dependent_views(&self, name: &RelationName) -> Vec<Arc<ViewDef>> {
        let state = self.read();
        let mut out = BTreeSet::new();
        collect_dependants(&state, name, &mut out);
        out.iter()
            .filter_map(|n| state.views.get(n).cloned())
            .collect()
    }

    /// The table with storage id `id`.
    pub fn table_by_id(&self, id: u64) -> Option<Arc<TableDef>> {
        self.read().tables.values().find(|t| t.id == id).cloned()
    }

    /// How many tables and views exist, for the HTTP overview.
    pub fn relation_counts(&self) -> (usize, usize) {
        let state = self.read();
        (state.tables.len(), state.views.len())
    }

    /// Creates schema `name`; with `if_not_exists` an existing one is kept.
    /// Returns false when it existed.
    pub fn create_schema(&self, name: &str, if_not_exists: bool) -> ServerResult<bool> {
        let mut state = self.write();
        if state.schemas.contains(name) {
            return if if_not_exists {
                Ok(false)
            } else {
                Err(ServerError::DuplicateSchema(name.into()))
            };
        }
        let mut writes = WriteSet::new();
        writes.put_meta(
            &schema_key(name),
            &encode(&SchemaDef { name: name.into() })?,
        );
        self.persist(&mut state, writes)?;
        state.schemas.insert(name.into());
        Ok(true)
    }

    /// Drops schema `name`; with `cascade` also everything in it.
    pub fn drop_schema(&self, name: &str, cascade: bool) -> ServerResult<()> {
        let mut state = self.write();
        if !state.schemas.contains(name) {
            return Err(ServerError::UndefinedSchema(name.into()));
        }
        let contained: Vec<RelationName> = state
            .tables
            .keys()
            .chain(state.views.keys())
            .filter(|n| n.schema == name)
            .cloned()
            .collect();
        let mut doomed = BTreeSet::new();
        for relation in &contained {
            collect_dependants(&state, relation, &mut doomed);
            doomed.insert(relation.clone());
        }
        if !cascade && !doomed.is_empty() {
            return Err(ServerError::DependentObjects {
                what: format!("schema {name}"),
                dependants: names(&doomed),
            });
        }
        let sequences: Vec<RelationName> = state
            .sequences
            .keys()
            .filter(|n| n.schema == name)
            .cloned()
            .collect();
        if !cascade && !sequences.is_empty() {
            return Err(ServerError::DependentObjects {
                what: format!("schema {name}"),
                dependants: sequences
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let mut writes = WriteSet::new();
        writes.delete_meta(&schema_key(name));
        self.drop_relations(&state, &doomed, &mut writes);
        for sequence in &sequences {
            writes.delete_meta(&crate::sequences::record_key(sequence));
        }
        self.persist(&mut state, writes)?;
        forget_relations(&mut state, &doomed);
        for sequence in &sequences {
            state.sequences.remove(sequence);
        }
        state.schemas.remove(name);
        Ok(())
    }

    /// Takes the next id (a failed write leaves a gap, never a reuse).
    fn take_id(&self, state: &mut CatalogState, writes: &mut WriteSet) -> ServerResult<u64> {
        let id = state.next_id;
        state.next_id = id + 1;
        writes.put_meta(NEXT_ID, &encode(&state.next_id)?);
        Ok(id)
    }

    /// Takes an id for an object to be named `name`, which must be free,
    /// before the object is built (building plans, which reads the
    /// catalog, so the lock is not held meanwhile).
    fn reserve_id(&self, name: &RelationName) -> ServerResult<u64> {
        let mut state = self.write();
        self.check_free(&state, name)?;
        let mut writes = WriteSet::new();
        let id = self.take_id(&mut state, &mut writes)?;
        self.persist(&mut state, writes)?;
        Ok(id)
    }

    fn check_free(&self, state: &CatalogState, name: &RelationName) -> ServerResult<()> {
        if !state.schemas.contains(&name.schema) {
            return Err(ServerError::UndefinedSchema(name.schema.clone()));
        }
        if state.tables.contains_key(name)
            || state.views.contains_key(name)
            || state.sinks.contains_key(name)
            || state.sequences.contains_key(name)
            || indexes::index_named(state, name).is_some()
        {
            return Err(ServerError::DuplicateTable(name.name.clone()));
        }
        Ok(())
    }

    /// Creates a table from `build(id)`, with the sequences its `SERIAL`
    /// columns own.
    pub fn create_table(
        &self,
        name: &RelationName,
        sequences: Vec<crate::sequences::SequenceDef>,
        build: impl FnOnce(u64) -> ServerResult<TableDef>,
    ) -> ServerResult<Arc<TableDef>> {
        let mut state = self.write();
        self.check_free(&state, name)?;
        sequences::check_distinct(&sequences)?;
        let mut writes = WriteSet::new();
        let mut cells = vec![];
        for def in sequences {
            self.check_free(&state, &def.name)?;
            cells.push(self.new_sequence(def, &mut writes)?);
        }
        let id = self.take_id(&mut state, &mut writes)?;
        let mut def = build(id)?;
        for index in &mut def.indexes {
            self.check_free(&state, &RelationName::new(&name.schema, &index.name))?;
            index.id = self.take_id(&mut state, &mut writes)?;
            writes.delete_all_rows(index.id);
        }
        let def = Arc::new(def);
        writes.put_meta(&table_key(id), &encode(def.as_ref())?);
        // A table id is never reused, but clear any rows a crash between
        // writes could have left under it.
        writes.delete_all_rows(id);
        self.persist(&mut state, writes)?;
        state.tables.insert(name.clone(), Arc::clone(&def));
        for cell in cells {
            state.sequences.insert(cell.def().name.clone(), cell);
        }
        Ok(def)
    }

    /// Creates a view (materialized or not) from `build(id)`, which runs
    /// without the catalog locked (planning reads the catalog).
    pub fn create_view(
        &self,
        name: &RelationName,
        build: impl FnOnce(u64) -> ServerResult<ViewDef>,
    ) -> ServerResult<Arc<ViewDef>> {
        let id = self.reserve_id(name)?;
        let def = Arc::new(build(id)?);
        let mut state = self.write();
        self.check_free(&state, name)?;
        let mut writes = WriteSet::new();
        writes.put_meta(&view_key(id), &encode(def.as_ref())?);
        // Ids are never reused, but clear what a crash could have left.
        clear_view_data(id, &mut writes);
        self.persist(&mut state, writes)?;
        state.views.insert(name.clone(), Arc::clone(&def));
        Ok(def)
    }

    /// Replaces view `old` by `new` (same name and id): `CREATE OR REPLACE
    /// VIEW`. Fails when `old` is no longer the view of that name.
    pub fn replace_view(&self, old: &ViewDef, new: ViewDef) -> ServerResult<()> {
        let mut state = self.write();
        match state.views.get(&old.name) {
            Some(current) if current.as_ref() == old => {}
            _ => {
                return Err(ServerError::StalePlan(format!("view {}", old.name)));
            }
        }
        let mut writes = WriteSet::new();
        writes.put_meta(&view_key(old.id), &encode(&new)?);
        self.persist(&mut state, writes)?;
        state.views.insert(old.name.clone(), Arc::new(new));
        Ok(())
    }

    /// The materialized views a drop of `name` (with `cascade`) would drop,
    /// `name` included; the same checks as [`Catalog::drop_relation`].
    pub fn materialized_in_drop(
        &self,
        name: &RelationName,
        kind: RelationKind,
        cascade: bool,
    ) -> ServerResult<Vec<Arc<ViewDef>>> {
        let state = self.read();
        let doomed = doomed_by_drop(&state, name, kind, cascade)?;
        Ok(doomed
            .iter()
            .filter_map(|n| state.views.get(n))
            .filter(|v| v.is_materialized())
            .cloned()
            .collect())
    }

    /// Replaces a table's definition (ALTER TABLE), moving it when its name
    /// changed. Refuses to rename a table views read, since views keep the
    /// name in their text.
    /// `writes` carries row changes that must land atomically with it.
    pub fn replace_table(
        &self,
        old: &RelationName,
        def: TableDef,
        mut writes: WriteSet,
    ) -> ServerResult<()> {
        let mut state = self.write();
        if !state.tables.contains_key(old) {
            return Err(ServerError::UndefinedTable(old.name.clone()));
        }
        if &def.name != old {
            self.check_free(&state, &def.name)?;
            let mut dependants = BTreeSet::new();
            collect_dependants(&state, old, &mut dependants);
            if !dependants.is_empty() {
                return Err(ServerError::NotSupported(format!(
                    "renaming {old} while views depend on it ({})",
                    names(&dependants)
                )));
            }
        }
        let mut dependants = BTreeSet::new();
        if !state
            .tables
            .get(old)
            .is_some_and(|current| same_but_indexes(current, &def))
        {
            collect_dependants(&state, old, &mut dependants);
        }
        let materialized: Vec<&RelationName> = dependants
            .iter()
            .filter(|n| state.views.get(*n).is_some_and(|v| v.is_materialized()))
            .collect();
        if !materialized.is_empty() {
            return Err(ServerError::NotSupported(format!(
                "ALTER TABLE {old} while materialized views read it ({}); drop them first",
                materialized
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        writes.put_meta(&table_key(def.id), &encode(&def)?);
        let moved: Vec<Arc<SequenceCell>> = if &def.name == old {
            vec![]
        } else {
            owned_sequences(&state, old)
                .iter()
                .filter_map(|n| state.sequences.get(n))
                .map(|cell| Arc::new(cell.with_owner_table(def.name.clone())))
                .collect()
        };
        for cell in &moved {
            if cell.is_persisted() {
                let (key, value) = cell.record()?;
                writes.put_meta(&key, &value);
            }
        }
        self.persist(&mut state, writes)?;
        state.tables.remove(old);
        state.tables.insert(def.name.clone(), Arc::new(def));
        for cell in moved {
            state.sequences.insert(cell.def().name.clone(), cell);
        }
        Ok(())
    }

    /// Drops a table, view or materialized view (`kind` says which the
    /// statement named) and, with `cascade`, the views that read it.
    pub fn drop_relation(
        &self,
        name: &RelationName,
        kind: RelationKind,
        cascade: bool,
    ) -> ServerResult<()> {
        let mut state = self.write();
        let doomed = doomed_by_drop(&state, name, kind, cascade)?;
        let mut writes = WriteSet::new();
        self.drop_relations(&state, &doomed, &mut writes);
        self.persist(&mut state, writes)?;
        forget_relations(&mut state, &doomed);
        Ok(())
    }

    fn drop_relations(
        &self,
        state: &CatalogState,
        doomed: &BTreeSet<RelationName>,
        writes: &mut WriteSet,
    ) {
        for name in doomed {
            for sequence in owned_sequences(state, name) {
                writes.delete_meta(&crate::sequences::record_key(&sequence));
            }
            if let Some(table) = state.tables.get(name) {
                for index in &table.indexes {
                    writes.delete_all_rows(index.id);
                }
                writes.delete_meta(&table_key(table.id));
                writes.delete_all_rows(table.id);
                writes.delete_all_changes(table.id);
                writes.delete_meta(&runnel_engine::runtime::table_log_seq_key(table.id));
            }
            if let Some(view) = state.views.get(name) {
                writes.delete_meta(&view_key(view.id));
                clear_view_data(view.id, writes);
            }
        }
    }
}

/// Whether two definitions of a table differ in their indexes at most
/// (what views read is the same).
fn same_but_indexes(a: &TableDef, b: &TableDef) -> bool {
    a.name == b.name
        && a.columns == b.columns
        && a.primary_key == b.primary_key
        && a.connector == b.connector
        && a.watermark == b.watermark
}

/// Which statement named the relation being dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationKind {
    Table,
    View,
    MaterializedView,
}

/// What dropping `name` drops, after checking it is of `kind` and that
/// nothing else depends on it unless `cascade`.
fn doomed_by_drop(
    state: &CatalogState,
    name: &RelationName,
    kind: RelationKind,
    cascade: bool,
) -> ServerResult<BTreeSet<RelationName>> {
    let found = match (state.tables.get(name), state.views.get(name)) {
        (Some(_), _) => RelationKind::Table,
        (None, Some(v)) if v.is_materialized() => RelationKind::MaterializedView,
        (None, Some(_)) => RelationKind::View,
        (None, None) => return Err(ServerError::UndefinedTable(name.name.clone())),
    };
    if found != kind {
        let (is, hint) = match found {
            RelationKind::Table => ("a table", "DROP TABLE"),
            RelationKind::View => ("a view", "DROP VIEW"),
            RelationKind::MaterializedView => ("a materialized view", "DROP MATERIALIZED VIEW"),
        };
        return Err(ServerError::WrongObjectType(format!(
            "\"{}\" is {is}; use {hint}",
            name.name
        )));
    }
    let mut dependants = BTreeSet::new();
    collect_dependants(state, name, &mut dependants);
    sinks::check_no_sink_reads(state, name, &dependants)?;
    if !cascade && !dependants.is_empty() {
        return Err(ServerError::DependentObjects {
            what: name.to_string(),
            dependants: names(&dependants),
        });
    }
    dependants.insert(name.clone());
    Ok(dependants)
}

/// Adds the deletion of a materialized view's rows and its job's state.
fn clear_view_data(id: u64, writes: &mut WriteSet) {
    writes.delete_all_rows(id);
    runnel_storage::state_table::delete_state_tables(id << 12, (id + 1) << 12, writes);
    writes.delete_meta(&runnel_engine::runtime::failed_job_key(id));
}

fn forget_relations(state: &mut CatalogState, doomed: &BTreeSet<RelationName>) {
    for name in doomed {
        for sequence in owned_sequences(state, name) {
            state.sequences.remove(&sequence);
        }
        state.tables.remove(name);
        state.views.remove(name);
    }
}

/// The sequences a `SERIAL` column of table `table` owns.
fn owned_sequences(state: &CatalogState, table: &RelationName) -> Vec<RelationName> {
    state
        .sequences
        .values()
        .filter(|s| s.def().owned_by.as_ref().is_some_and(|(t, _)| t == table))
        .map(|s| s.def().name.clone())
        .collect()
}

/// Adds every view that reads `name`, directly or through other views.
fn collect_dependants(state: &CatalogState, name: &RelationName, out: &mut BTreeSet<RelationName>) {
    for view in state.views.values() {
        if view.depends_on.contains(name) && out.insert(view.name.clone()) {
            collect_dependants(state, &view.name, out);
        }
    }
}

fn names(set: &BTreeSet<RelationName>) -> String {
    set.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_planner::catalog::ColumnDef;
    use runnel_planner::types::ColumnType;
    use runnel_storage::StoreOptions;

    fn table(id: u64, name: &RelationName) -> TableDef {
        TableDef {
            id,
            name: name.clone(),
            columns: vec![ColumnDef {
                name: "a".into(),
                column_type: ColumnType::Int4,
                not_null: false,
                default: None,
            }],
            primary_key: vec![],
            connector: None,
            watermark: None,
            indexes: vec![],
            checks: vec![],
        }
    }

    #[test]
    fn objects_persist_and_dependants_guard_drops() {
        let dir = tempfile::tempdir().unwrap();
        let t = RelationName::new("public", "t");
        let v = RelationName::new("public", "v");
        {
            let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
            let catalog = Catalog::open(store).unwrap();
            catalog
                .create_table(&t, vec![], |id| Ok(table(id, &t)))
                .unwrap();
            catalog
                .create_view(&v, |id| {
                    Ok(ViewDef {
                        id,
                        name: v.clone(),
                        sql: "SELECT a FROM t".into(),
                        column_names: vec![],
                        depends_on: vec![t.clone()],
                        materialized: None,
                    })
                })
                .unwrap();
            assert!(matches!(
                catalog.create_table(&t, vec![], |id| Ok(table(id, &t))),
                Err(ServerError::DuplicateTable(_))
            ));
        }
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let catalog = Catalog::open(store).unwrap();
        assert!(matches!(catalog.relation(&t), Some(Relation::Table(_))));
        assert!(matches!(catalog.relation(&v), Some(Relation::View(_))));
        assert!(matches!(
            catalog.drop_relation(&t, RelationKind::Table, false),
            Err(ServerError::DependentObjects { .. })
        ));
        assert!(matches!(
            catalog.drop_relation(&t, RelationKind::View, false),
            Err(ServerError::WrongObjectType(_))
        ));
        catalog
            .drop_relation(&t, RelationKind::Table, true)
            .unwrap();
        assert!(catalog.relation(&v).is_none());
        let next = catalog
            .create_table(&t, vec![], |id| Ok(table(id, &t)))
            .unwrap();
        assert_eq!(next.id, 3, "ids are never reused");
    }
}
