//! CREATE, DROP and TRUNCATE of schemas, tables and views (ALTER TABLE is
//! in `alter_table.rs`).

use datafusion::common::ParamValues;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::{CreateView, ObjectName, ObjectType, SchemaName, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use runnel_planner::catalog::{RelationName, SYSTEM_SCHEMAS, TableDef, ViewDef};
use runnel_planner::ddl::{name_parts, table_def_from_create};

use super::{Session, StatementResult};
use crate::catalog::{RelationKind, plan_defaults};
use crate::error::{ServerError, ServerResult};

impl Session {
    pub(super) async fn execute_ddl(
        &mut self,
        statement: &Statement,
    ) -> ServerResult<StatementResult> {
        match statement {
            Statement::CreateSchema {
                schema_name,
                if_not_exists,
                ..
            } => {
                let name = match schema_name {
                    SchemaName::Simple(n) | SchemaName::NamedAuthorization(n, _) => single_name(n)?,
                    SchemaName::UnnamedAuthorization(_) => {
                        return Err(ServerError::NotSupported(
                            "CREATE SCHEMA AUTHORIZATION".into(),
                        ));
                    }
                };
                if SYSTEM_SCHEMAS.contains(&name.as_str()) {
                    return Err(ServerError::DuplicateSchema(name));
                }
                let created = self.catalog().create_schema(&name, *if_not_exists)?;
                let mut result = StatementResult::command("CREATE SCHEMA", None);
                if !created {
                    result.notices.push((
                        "NOTICE",
                        format!("schema \"{name}\" already exists, skipping"),
                    ));
                }
                Ok(result)
            }
            Statement::CreateTable(create) if create.query.is_some() => {
                self.create_table_as(create).await
            }
            Statement::CreateTable(create) => self.create_table(create, None),
            Statement::CreateView(create) => self.create_view(create).await,
            Statement::Drop {
                object_type: ObjectType::Sequence,
                if_exists,
                names,
                ..
            } => self.drop_sequences(names, *if_exists),
            Statement::Drop {
                object_type: ObjectType::Index,
                if_exists,
                names,
                ..
            } => self.drop_indexes(names, *if_exists).await,
            Statement::CreateIndex(create) => self.create_index(create).await,
            Statement::Drop {
                object_type,
                if_exists,
                names,
                cascade,
                ..
            } => self.drop(*object_type, *if_exists, names, *cascade).await,
            Statement::AlterTable(alter) => self.alter_table(alter).await,
            Statement::CreateSequence { .. } => self.create_sequence(statement),
            Statement::Truncate(truncate) => {
                let _write = self.db.write_lock.lock().await;
                let mut writes = runnel_storage::WriteSet::new();
                let mut tables = vec![];
                for target in &truncate.table_names {
                    let name = self.resolve(&target.name)?;
                    let def = self
                        .catalog()
                        .table(&name)
                        .ok_or_else(|| ServerError::UndefinedTable(name.name.clone()))?;
                    if self.db.runtime.logs().table_log(def.id).is_some() {
                        return Err(ServerError::NotSupported(format!(
                            "TRUNCATE of {name}, which materialized views read (use DELETE FROM)"
                        )));
                    }
                    writes.delete_all_rows(def.id);
                    for index in &def.indexes {
                        writes.delete_all_rows(index.id);
                    }
                    tables.push(def.id);
                }
                self.db.store.write(writes)?;
                for id in tables {
                    self.db.row_ids.forget(id);
                }
                Ok(StatementResult::command("TRUNCATE TABLE", None))
            }
            other => Err(ServerError::NotSupported(format!("{other}"))),
        }
    }

    /// TRUNCATE inside a block: deletes every row as the block's pending
    /// change, so ROLLBACK undoes it and COMMIT applies it with the rest.
    pub(super) async fn truncate_in_block(
        &mut self,
        truncate: &datafusion::sql::sqlparser::ast::Truncate,
    ) -> ServerResult<StatementResult> {
        self.check_writable("TRUNCATE")?;
        for target in &truncate.table_names {
            let name = self.resolve(&target.name)?;
            if self.catalog().table(&name).is_none() {
                return Err(ServerError::UndefinedTable(name.name));
            }
            let sql = format!(
                "DELETE FROM {}.{}",
                super::dml::quote(&name.schema),
                super::dml::quote(&name.name)
            );
            let statement = Parser::parse_sql(&PostgreSqlDialect {}, &sql)
                .map_err(|e| ServerError::Internal(format!("{sql}: {e}")))?
                .remove(0);
            let prepared = self.prepare(statement, &sql).await?;
            Box::pin(self.execute(&prepared, &ParamValues::List(vec![]))).await?;
        }
        Ok(StatementResult::command("TRUNCATE TABLE", None))
    }

    /// `CREATE TABLE`, with the `WATERMARK FOR` clause taken out of its
    /// columns, if it had one (the table then only takes inserts).
    pub(super) fn create_table(
        &mut self,
        create: &datafusion::sql::sqlparser::ast::CreateTable,
        watermark: Option<&runnel_planner::parser::WatermarkClause>,
    ) -> ServerResult<StatementResult> {
        let name = self.resolve(&create.name)?;
        if create.if_not_exists && self.catalog().relation(&name).is_some() {
            let mut result = StatementResult::command("CREATE TABLE", None);
            result.notices.push((
                "NOTICE",
                format!("relation \"{}\" already exists, skipping", name.name),
            ));
            return Ok(result);
        }
        let mut create = create.clone();
        let serials = self.take_serials(&mut create, &name)?;
        let create = &create;
        // Plan the defaults first so a bad DEFAULT is refused here, not at
        // the first INSERT.
        let mut def = table_def_from_create(create, 0, name.clone())?;
        plan_defaults(&def, &self.ctx.state())?;
        self.validate_checks(&def)?;
        if let Some(w) = watermark {
            let w = runnel_planner::catalog::WatermarkDef {
                column: w.column.clone(),
                expr: w.expr.clone(),
            };
            crate::streaming::plan_watermark(&self.ctx.state(), &def, &w)?;
            def.watermark = Some(w);
        }
        self.catalog()
            .create_table(&name, serials, |id| Ok(TableDef { id, ..def }))?;
        Ok(StatementResult::command("CREATE TABLE", None))
    }

    async fn create_view(&mut self, create: &CreateView) -> ServerResult<StatementResult> {
        if create.materialized {
            return self.create_materialized_view(create, false).await;
        }
        if create.or_alter {
            return Err(ServerError::NotSupported("CREATE OR ALTER VIEW".into()));
        }
        let name = self.resolve(&create.name)?;
        if create.if_not_exists && self.catalog().relation(&name).is_some() {
            return Ok(StatementResult::command("CREATE VIEW", None));
        }
        let replaced = match self.catalog().relation(&name) {
            Some(crate::catalog::Relation::View(old))
                if create.or_replace && !old.is_materialized() =>
            {
                Some(old)
            }
            Some(_) if create.or_replace => {
                return Err(ServerError::WrongObjectType(format!(
                    "\"{}\" is not a view",
                    name.name
                )));
            }
            _ => None,
        };
        let query = Statement::Query(create.query.clone());
        let sql = query.to_string();
        let plan = self.plan(query).await?;
        let column_names: Vec<String> = create
            .columns
            .iter()
            .map(|c| runnel_planner::ddl::normalize_ident(&c.name))
            .collect();
        if !column_names.is_empty() && column_names.len() != plan.schema().fields().len() {
            return Err(ServerError::Plan(
                runnel_planner::PlanError::InvalidDefinition(format!(
                    "view has {} column names but its query returns {} columns",
                    column_names.len(),
                    plan.schema().fields().len()
                )),
            ));
        }
        let depends_on = self.referenced_relations(&plan)?;
        if let Some(old) = replaced {
            self.check_replaceable(&old, &plan, &column_names).await?;
            self.catalog().replace_view(
                &old,
                ViewDef {
                    id: old.id,
                    name: name.clone(),
                    sql,
                    column_names,
                    depends_on,
                    materialized: None,
                },
            )?;
            return Ok(StatementResult::command("CREATE VIEW", None));
        }
        self.catalog().create_view(&name, |id| {
            Ok(ViewDef {
                id,
                name: name.clone(),
                sql,
                column_names,
                depends_on,
                materialized: None,
            })
        })?;
        Ok(StatementResult::command("CREATE VIEW", None))
    }

    /// `CREATE OR REPLACE VIEW` keeps the view's columns (names and types,
    /// in order; more may follow), as Postgres requires, and refuses a view
    /// that materialized views read (their jobs run the old definition).
    async fn check_replaceable(
        &self,
        old: &ViewDef,
        new_plan: &LogicalPlan,
        new_names: &[String],
    ) -> ServerResult<()> {
        let readers: Vec<String> = self
            .catalog()
            .views()
            .into_iter()
            .filter(|v| v.is_materialized() && v.depends_on.contains(&old.name))
            .map(|v| v.name.to_string())
            .collect();
        if !readers.is_empty() {
            return Err(ServerError::NotSupported(format!(
                "CREATE OR REPLACE VIEW of {}, which materialized views read ({}); drop them first",
                old.name,
                readers.join(", ")
            )));
        }
        let statement = runnel_planner::parser::parse_sql(&old.sql)?
            .pop()
            .ok_or_else(|| ServerError::Internal(format!("view {} has no query", old.name)))?;
        let old_plan = self.plan(statement).await?;
        let name_of = |plan: &LogicalPlan, names: &[String], i: usize| -> String {
            names
                .get(i)
                .cloned()
                .unwrap_or_else(|| plan.schema().field(i).name().clone())
        };
        let (old_fields, new_fields) = (old_plan.schema().fields(), new_plan.schema().fields());
        if new_fields.len() < old_fields.len() {
            return Err(ServerError::InvalidObjectDefinition(
                "cannot drop columns from view".into(),
            ));
        }
        for (i, old_field) in old_fields.iter().enumerate() {
            let (old_name, new_name) = (
                name_of(&old_plan, &old.column_names, i),
                name_of(new_plan, new_names, i),
            );
            if old_name != new_name {
                return Err(ServerError::InvalidObjectDefinition(format!(
                    "cannot change name of view column \"{old_name}\" to \"{new_name}\""
                )));
            }
            if old_field.data_type() != new_fields[i].data_type() {
                return Err(ServerError::InvalidObjectDefinition(format!(
                    "cannot change data type of view column \"{old_name}\" from {} to {}",
                    crate::catalog::pg_type_name(old_field.data_type()),
                    crate::catalog::pg_type_name(new_fields[i].data_type())
                )));
            }
        }
        Ok(())
    }

    /// The catalog relations a (not yet analysed) plan scans.
    pub(super) fn referenced_relations(
        &self,
        plan: &LogicalPlan,
    ) -> ServerResult<Vec<RelationName>> {
        let current = self.current_schema();
        let mut out = vec![];
        plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                let schema = scan.table_name.schema().unwrap_or(&current).to_string();
                let relation = RelationName::new(schema, scan.table_name.table());
                if self.catalog().relation(&relation).is_some() && !out.contains(&relation) {
                    out.push(relation);
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        Ok(out)
    }

    async fn drop(
        &mut self,
        object_type: ObjectType,
        if_exists: bool,
        names: &[ObjectName],
        cascade: bool,
    ) -> ServerResult<StatementResult> {
        let tag = match object_type {
            ObjectType::Table => "DROP TABLE",
            ObjectType::View => "DROP VIEW",
            ObjectType::MaterializedView => "DROP MATERIALIZED VIEW",
            ObjectType::Schema => "DROP SCHEMA",
            other => return Err(ServerError::NotSupported(format!("DROP {other}"))),
        };
        let mut result = StatementResult::command(tag, None);
        for name in names {
            let outcome = if object_type == ObjectType::Schema {
                let schema = single_name(name)?;
                self.catalog().drop_schema(&schema, cascade)
            } else {
                let relation = self.resolve(name)?;
                let kind = match object_type {
                    ObjectType::Table => RelationKind::Table,
                    ObjectType::View => RelationKind::View,
                    _ => RelationKind::MaterializedView,
                };
                let table_id = self.catalog().table(&relation).map(|t| t.id);
                let dropped = self.drop_relation(&relation, kind, cascade).await;
                if let (Ok(()), Some(id)) = (&dropped, table_id) {
                    self.db.row_ids.forget(id);
                }
                dropped
            };
            match outcome {
                Err(ServerError::UndefinedTable(n) | ServerError::UndefinedSchema(n))
                    if if_exists =>
                {
                    result
                        .notices
                        .push(("NOTICE", format!("\"{n}\" does not exist, skipping")));
                }
                other => other?,
            }
        }
        Ok(result)
    }

    /// Stops the jobs of the materialized views a drop takes with it, then
    /// drops (rows and state go in the same write as the catalog records).
    async fn drop_relation(
        &self,
        relation: &RelationName,
        kind: RelationKind,
        cascade: bool,
    ) -> ServerResult<()> {
        // Serialised with DML so no statement logs changes for a job that
        // is going away.
        let _write = self.db.write_lock.lock().await;
        let materialized = self
            .catalog()
            .materialized_in_drop(relation, kind, cascade)?;
        if let Some(view) = materialized.first() {
            self.refuse_in_block(&format!(
                "dropping materialized view {} (its job stops)",
                view.name
            ))?;
        }
        for view in materialized {
            self.db.runtime.drop_job(view.id).await?;
        }
        self.catalog().drop_relation(relation, kind, cascade)
    }
}

fn single_name(name: &ObjectName) -> ServerResult<String> {
    let parts = name_parts(name)?;
    match parts.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(ServerError::NotSupported(format!(
            "the qualified schema name {name}"
        ))),
    }
}
