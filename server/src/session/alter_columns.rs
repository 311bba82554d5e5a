//! The ALTER TABLE forms that change columns in place: `DROP COLUMN`,
//! `ALTER COLUMN … TYPE`, `SET`/`DROP DEFAULT`, `SET`/`DROP NOT NULL`.
//! Each changes the definition being built; [`ColumnSources`] remembers
//! where each new column's values come from, so the rows are rewritten
//! once for the whole statement.

use datafusion::sql::sqlparser::ast::{AlterColumnOperation, Ident};
use runnel_planner::catalog::{RelationName, TableDef};
use runnel_planner::ddl::normalize_ident;
use runnel_planner::types::ColumnType;

use crate::error::{ServerError, ServerResult};

/// Where a column of the altered table takes its values from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// Column `n` of the table as it was.
    Old(usize),
    /// A column ALTER TABLE adds: its default, or null.
    New,
}

/// Per column of the definition being built, its source; and whether the
/// rows must be rewritten (a column dropped or retyped, NOT NULL to check).
#[derive(Debug)]
pub(super) struct ColumnSources {
    pub sources: Vec<Source>,
    pub rewrite: bool,
    /// Indexes the change dropped (their entries go).
    pub dropped_indexes: Vec<u64>,
    /// Columns dropped or retyped: views must not read them.
    pub touched: Vec<String>,
}

impl ColumnSources {
    /// Every column from itself.
    pub fn new(def: &TableDef) -> Self {
        Self {
            sources: (0..def.columns.len()).map(Source::Old).collect(),
            rewrite: false,
            dropped_indexes: vec![],
            touched: vec![],
        }
    }

    fn index_of(def: &TableDef, column: &Ident) -> ServerResult<usize> {
        let name = normalize_ident(column);
        def.column_index(&name)
            .ok_or(ServerError::UndefinedColumn(name))
    }

    /// `DROP COLUMN [IF EXISTS] names`: indexes and CHECKs over the column
    /// go with it, as in Postgres; a primary key column is refused.
    pub fn drop_columns(
        &mut self,
        def: &mut TableDef,
        names: &[Ident],
        if_exists: bool,
    ) -> ServerResult<()> {
        for column in names {
            let name = normalize_ident(column);
            let Some(at) = def.column_index(&name) else {
                if if_exists {
                    continue;
                }
                return Err(ServerError::UndefinedColumn(name));
            };
            if def.primary_key.contains(&at) {
                return Err(ServerError::NotSupported(format!(
                    "dropping primary key column \"{name}\""
                )));
            }
            if def.columns.len() == 1 {
                return Err(ServerError::InvalidObjectDefinition(
                    "a table needs at least one column".into(),
                ));
            }
            def.columns.remove(at);
            self.sources.remove(at);
            let shift = |c: usize| if c > at { c - 1 } else { c };
            def.primary_key = def.primary_key.iter().map(|&c| shift(c)).collect();
            let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut def.indexes)
                .into_iter()
                .partition(|i| i.columns.contains(&at));
            self.dropped_indexes.extend(gone.iter().map(|i| i.id));
            def.indexes = kept
                .into_iter()
                .map(|mut i| {
                    i.columns = i.columns.iter().map(|&c| shift(c)).collect();
                    i
                })
                .collect();
            def.checks.retain(|check| !mentions(&check.expr, &name));
            self.rewrite = true;
            self.touched.push(name);
        }
        Ok(())
    }

    /// `ALTER [COLUMN] name op`.
    pub fn alter_column(
        &mut self,
        def: &mut TableDef,
        table: &RelationName,
        column: &Ident,
        op: &AlterColumnOperation,
    ) -> ServerResult<()> {
        let at = Self::index_of(def, column)?;
        let column = &mut def.columns[at];
        match op {
            AlterColumnOperation::SetNotNull => {
                if !column.not_null {
                    column.not_null = true;
                    self.rewrite = true;
                }
            }
            AlterColumnOperation::DropNotNull => {
                if def.primary_key.contains(&at) {
                    return Err(ServerError::InvalidObjectDefinition(format!(
                        "column \"{}\" is in a primary key",
                        def.columns[at].name
                    )));
                }
                def.columns[at].not_null = false;
            }
            AlterColumnOperation::SetDefault { value } => column.default = Some(value.to_string()),
            AlterColumnOperation::DropDefault => column.default = None,
            AlterColumnOperation::SetDataType {
                data_type, using, ..
            } => {
                if using.is_some() {
                    return Err(ServerError::NotSupported(
                        "ALTER COLUMN … TYPE … USING".into(),
                    ));
                }
                let wanted = ColumnType::from_sql(data_type)?;
                if (def.primary_key.contains(&at)
                    || def.indexes.iter().any(|i| i.columns.contains(&at)))
                    && !wanted.can_be_key()
                {
                    return Err(ServerError::InvalidObjectDefinition(format!(
                        "column \"{}\" of {table} is a key and cannot be of type {}",
                        def.columns[at].name,
                        wanted.pg_name()
                    )));
                }
                if def.columns[at].column_type != wanted {
                    def.columns[at].column_type = wanted;
                    self.rewrite = true;
                    self.touched.push(def.columns[at].name.clone());
                }
            }
            AlterColumnOperation::AddGenerated { .. } => {
                return Err(ServerError::NotSupported(
                    "ALTER COLUMN … ADD GENERATED".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Whether SQL `expr` names column `column` (as a whole word).
fn mentions(expr: &str, column: &str) -> bool {
    let Ok(parsed) = datafusion::sql::sqlparser::parser::Parser::new(
        &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
    )
    .try_with_sql(expr)
    .and_then(|mut p| p.parse_expr()) else {
        return true;
    };
    datafusion::sql::sqlparser::ast::visit_expressions(&parsed, |e| {
        let ident = match e {
            datafusion::sql::sqlparser::ast::Expr::Identifier(i) => Some(i),
            datafusion::sql::sqlparser::ast::Expr::CompoundIdentifier(parts) => parts.last(),
            _ => None,
        };
        if ident.is_some_and(|i| normalize_ident(i) == column) {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    })
    .is_break()
}

/// Whether a view's query `sql` reads one of `columns` (by name, or all
/// columns through `*`).
pub(super) fn view_reads(sql: &str, columns: &[String]) -> bool {
    use datafusion::sql::sqlparser::ast::{SelectItem, SetExpr, Visit, Visitor};
    let Ok(statements) = datafusion::sql::sqlparser::parser::Parser::parse_sql(
        &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
        sql,
    ) else {
        return true;
    };
    struct Reads<'a>(&'a [String]);
    impl Visitor for Reads<'_> {
        type Break = ();
        fn pre_visit_query(
            &mut self,
            query: &datafusion::sql::sqlparser::ast::Query,
        ) -> std::ops::ControlFlow<()> {
            if let SetExpr::Select(select) = query.body.as_ref()
                && select.projection.iter().any(|i| {
                    matches!(
                        i,
                        SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
                    )
                })
            {
                return std::ops::ControlFlow::Break(());
            }
            std::ops::ControlFlow::Continue(())
        }
        fn pre_visit_expr(
            &mut self,
            expr: &datafusion::sql::sqlparser::ast::Expr,
        ) -> std::ops::ControlFlow<()> {
            let ident = match expr {
                datafusion::sql::sqlparser::ast::Expr::Identifier(i) => Some(i),
                datafusion::sql::sqlparser::ast::Expr::CompoundIdentifier(parts) => parts.last(),
                _ => None,
            };
            if ident.is_some_and(|i| self.0.contains(&normalize_ident(i))) {
                return std::ops::ControlFlow::Break(());
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    statements
        .iter()
        .any(|s| s.visit(&mut Reads(columns)).is_break())
}
