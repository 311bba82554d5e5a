//! Analysis of DDL statements into catalog definitions.

use datafusion::sql::sqlparser::ast::{
    ColumnDef as SqlColumnDef, ColumnOption, CreateTable, Expr, Ident, ObjectName, ObjectNamePart,
    TableConstraint,
};

use crate::catalog::{CheckDef, ColumnDef, IndexDef, RelationName, TableDef, default_index_name};
use crate::types::ColumnType;
use crate::{PlanError, PlanResult};

/// The name an identifier denotes: unquoted identifiers fold to lower case,
/// quoted ones keep their spelling (as in Postgres).
pub fn normalize_ident(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

/// The normalised parts of a possibly qualified name.
pub fn name_parts(name: &ObjectName) -> PlanResult<Vec<String>> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(ident) => Ok(normalize_ident(ident)),
            other => Err(PlanError::NotSupported(format!("the name part {other}"))),
        })
        .collect()
}

/// What a column's options declare beyond its definition.
#[derive(Debug, Default)]
pub struct ColumnConstraints {
    /// `PRIMARY KEY`.
    pub primary: bool,
    /// `UNIQUE`, with the constraint's name if given.
    pub unique: Option<Option<String>>,
    /// `CHECK (expr)`s, with the constraints' names if given.
    pub checks: Vec<(Option<String>, String)>,
}

/// The definition of one column, and whether it declares itself the
/// primary key (`id int PRIMARY KEY`).
pub fn column_def(column: &SqlColumnDef) -> PlanResult<(ColumnDef, bool)> {
    let (def, constraints) = column_def_with_constraints(column)?;
    if constraints.unique.is_some() || !constraints.checks.is_empty() {
        return Err(PlanError::NotSupported(
            "a UNIQUE or CHECK column here (add the constraint to the table)".into(),
        ));
    }
    Ok((def, constraints.primary))
}

/// The definition of one column and the constraints its options declare.
pub fn column_def_with_constraints(
    column: &SqlColumnDef,
) -> PlanResult<(ColumnDef, ColumnConstraints)> {
    let name = normalize_ident(&column.name);
    let column_type = ColumnType::from_sql(&column.data_type)?;
    let mut def = ColumnDef {
        name,
        column_type,
        not_null: false,
        default: None,
    };
    let mut constraints = ColumnConstraints::default();
    for option in &column.options {
        match &option.option {
            ColumnOption::Null => def.not_null = false,
            ColumnOption::NotNull => def.not_null = true,
            ColumnOption::Default(expr) => def.default = Some(default_sql(expr)),
            ColumnOption::PrimaryKey(_) => {
                constraints.primary = true;
                def.not_null = true;
            }
            ColumnOption::Unique(unique) if unique.columns.is_empty() => {
                check_unique_options(unique)?;
                constraints.unique = Some(option.name.as_ref().map(normalize_ident));
            }
            ColumnOption::Check(check) => {
                if check.enforced == Some(false) {
                    return Err(PlanError::NotSupported("NOT ENFORCED constraints".into()));
                }
                let name = option
                    .name
                    .as_ref()
                    .or(check.name.as_ref())
                    .map(normalize_ident);
                constraints.checks.push((name, check.expr.to_string()));
            }
            other => {
                return Err(PlanError::NotSupported(format!(
                    "the column constraint {other} (only NOT NULL, NULL, DEFAULT, PRIMARY KEY, UNIQUE and CHECK are)"
                )));
            }
        }
    }
    let primary = constraints.primary;
    if (primary || constraints.unique.is_some()) && !def.column_type.can_be_key() {
        return Err(PlanError::InvalidDefinition(format!(
            "column \"{}\" of type {} cannot be a key",
            def.name,
            def.column_type.pg_name()
        )));
    }
    Ok((def, constraints))
}

/// The unqualified name of the table `create` makes.
fn name_of(create: &CreateTable) -> String {
    create
        .name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .map(normalize_ident)
        .unwrap_or_default()
}

/// Postgres's name for an unnamed CHECK: `table_column_check` (the first
/// column it reads) or `table_check`, numbered when taken.
pub fn check_name(table: &str, column: Option<&str>, taken: &[CheckDef]) -> String {
    let columns: Vec<&str> = column.into_iter().collect();
    let base = if columns.is_empty() {
        format!("{table}_check")
    } else {
        default_index_name(table, &columns, "check")
    };
    let mut name = base.clone();
    let mut n = 1;
    while taken.iter().any(|c| c.name == name) {
        name = format!("{base}{n}");
        n += 1;
    }
    name
}

/// The first of `columns` that `expr` names.
pub fn first_column(expr: &Expr, columns: &[ColumnDef]) -> Option<String> {
    let mut found = None;
    let _ = datafusion::sql::sqlparser::ast::visit_expressions(expr, |e| {
        let ident = match e {
            Expr::Identifier(ident) => Some(ident),
            Expr::CompoundIdentifier(parts) => parts.last(),
            _ => None,
        };
        if let Some(ident) = ident {
            let name = normalize_ident(ident);
            if columns.iter().any(|c| c.name == name) {
                found = Some(name);
                return std::ops::ControlFlow::Break(());
            }
        }
        std::ops::ControlFlow::Continue(())
    });
    found
}

/// Refuses the `UNIQUE` variants Runnel does not keep.
fn check_unique_options(
    unique: &datafusion::sql::sqlparser::ast::UniqueConstraint,
) -> PlanResult<()> {
    use datafusion::sql::sqlparser::ast::NullsDistinctOption;
    if matches!(unique.nulls_distinct, NullsDistinctOption::NotDistinct) {
        return Err(PlanError::NotSupported("UNIQUE NULLS NOT DISTINCT".into()));
    }
    if unique
        .characteristics
        .as_ref()
        .is_some_and(|c| c.deferrable == Some(true) || c.initially.is_some())
    {
        return Err(PlanError::NotSupported("DEFERRABLE constraints".into()));
    }
    Ok(())
}

/// The column indices `names` (an index's or constraint's columns) denote.
pub fn index_columns(
    columns: &[ColumnDef],
    names: &[datafusion::sql::sqlparser::ast::IndexColumn],
) -> PlanResult<Vec<usize>> {
    let mut out = vec![];
    for column in names {
        let Expr::Identifier(ident) = &column.column.expr else {
            return Err(PlanError::NotSupported(format!(
                "an index on the expression {}",
                column.column.expr
            )));
        };
        let name = normalize_ident(ident);
        let index = columns
            .iter()
            .position(|c| c.name == name)
            .ok_or(PlanError::UnknownColumn(name))?;
        if out.contains(&index) {
            return Err(PlanError::DuplicateColumn(columns[index].name.clone()));
        }
        if !columns[index].column_type.can_be_key() {
            return Err(PlanError::InvalidDefinition(format!(
                "column \"{}\" of type {} cannot be indexed",
                columns[index].name,
                columns[index].column_type.pg_name()
            )));
        }
        out.push(index);
    }
    Ok(out)
}

/// A `UNIQUE` constraint's index over `columns` of table `table`.
fn unique_index(
    table: &str,
    all: &[ColumnDef],
    columns: Vec<usize>,
    name: Option<String>,
) -> IndexDef {
    let name = name.unwrap_or_else(|| {
        let names: Vec<&str> = columns.iter().map(|&i| all[i].name.as_str()).collect();
        default_index_name(table, &names, "key")
    });
    IndexDef {
        id: 0,
        name,
        columns,
        unique: true,
        constraint: true,
    }
}

fn default_sql(expr: &Expr) -> String {
    expr.to_string()
}

/// The definition of the table `CREATE TABLE` describes, under `name` and
/// storage id `id`.
pub fn table_def_from_create(
    create: &CreateTable,
    id: u64,
    name: RelationName,
) -> PlanResult<TableDef> {
    if create.temporary {
        return Err(PlanError::NotSupported("CREATE TEMPORARY TABLE".into()));
    }
    if create.query.is_some() {
        return Err(PlanError::NotSupported("CREATE TABLE … AS".into()));
    }
    if create.like.is_some() || create.clone.is_some() {
        return Err(PlanError::NotSupported("CREATE TABLE … LIKE/CLONE".into()));
    }
    if create.columns.is_empty() {
        return Err(PlanError::InvalidDefinition(
            "a table needs at least one column".into(),
        ));
    }
    let mut columns: Vec<ColumnDef> = Vec::with_capacity(create.columns.len());
    let mut primary_key = vec![];
    let mut unique_columns = vec![];
    let mut checks: Vec<CheckDef> = vec![];
    for column in &create.columns {
        let (def, constraints) = column_def_with_constraints(column)?;
        if columns.iter().any(|c| c.name == def.name) {
            return Err(PlanError::DuplicateColumn(def.name));
        }
        if constraints.primary {
            primary_key.push(columns.len());
        }
        if let Some(name) = constraints.unique {
            unique_columns.push((columns.len(), name));
        }
        for (name, expr) in constraints.checks {
            let name =
                name.unwrap_or_else(|| check_name(&name_of(create), Some(&def.name), &checks));
            checks.push(CheckDef { name, expr });
        }
        columns.push(def);
    }
    let mut indexes = vec![];
    for (column, constraint_name) in unique_columns {
        indexes.push(unique_index(
            &name.name,
            &columns,
            vec![column],
            constraint_name,
        ));
    }
    for constraint in &create.constraints {
        match constraint {
            TableConstraint::PrimaryKey(pk) => {
                if !primary_key.is_empty() {
                    return Err(PlanError::InvalidDefinition(
                        "multiple primary keys are not allowed".into(),
                    ));
                }
                for key_column in &pk.columns {
                    let Expr::Identifier(ident) = &key_column.column.expr else {
                        return Err(PlanError::NotSupported(format!(
                            "primary key expression {}",
                            key_column.column.expr
                        )));
                    };
                    let key_name = normalize_ident(ident);
                    let index = columns
                        .iter()
                        .position(|c| c.name == key_name)
                        .ok_or(PlanError::UnknownColumn(key_name))?;
                    if primary_key.contains(&index) {
                        return Err(PlanError::DuplicateColumn(columns[index].name.clone()));
                    }
                    columns[index].not_null = true;
                    primary_key.push(index);
                }
            }
            TableConstraint::Check(check) => {
                if check.enforced == Some(false) {
                    return Err(PlanError::NotSupported("NOT ENFORCED constraints".into()));
                }
                let name = match &check.name {
                    Some(name) => normalize_ident(name),
                    None => {
                        let first = first_column(&check.expr, &columns);
                        check_name(&name.name, first.as_deref(), &checks)
                    }
                };
                checks.push(CheckDef {
                    name,
                    expr: check.expr.to_string(),
                });
            }
            TableConstraint::Unique(unique) => {
                check_unique_options(unique)?;
                let index_columns = index_columns(&columns, &unique.columns)?;
                let constraint_name = unique.name.as_ref().map(normalize_ident);
                indexes.push(unique_index(
                    &name.name,
                    &columns,
                    index_columns,
                    constraint_name,
                ));
            }
            other => {
                return Err(PlanError::NotSupported(format!(
                    "the table constraint {other} (only PRIMARY KEY, UNIQUE and CHECK are)"
                )));
            }
        }
    }
    if primary_key.len() > 1 && create.columns.iter().any(is_column_primary) {
        return Err(PlanError::InvalidDefinition(
            "multiple primary keys are not allowed".into(),
        ));
    }
    for &index in &primary_key {
        if !columns[index].column_type.can_be_key() {
            return Err(PlanError::InvalidDefinition(format!(
                "column \"{}\" of type {} cannot be a primary key",
                columns[index].name,
                columns[index].column_type.pg_name()
            )));
        }
    }
    let mut names: Vec<&str> = indexes.iter().map(|i| i.name.as_str()).collect();
    names.extend(checks.iter().map(|c| c.name.as_str()));
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(PlanError::InvalidDefinition(format!(
                "two constraints are named \"{name}\""
            )));
        }
    }
    Ok(TableDef {
        id,
        name,
        columns,
        primary_key,
        connector: None,
        watermark: None,
        indexes,
        checks,
    })
}

fn is_column_primary(column: &SqlColumnDef) -> bool {
    column
        .options
        .iter()
        .any(|o| matches!(o.option, ColumnOption::PrimaryKey(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::ast::Statement;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn analyse(sql: &str) -> PlanResult<TableDef> {
        let statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        let Statement::CreateTable(create) = statement else {
            panic!("not a CREATE TABLE");
        };
        table_def_from_create(&create, 1, RelationName::new("public", "t"))
    }

    #[test]
    fn columns_keys_and_defaults() {
        let def = analyse(
            "CREATE TABLE t (ID int, \"Name\" text NOT NULL DEFAULT 'x', n numeric(5,2), PRIMARY KEY (id))",
        )
        .unwrap();
        assert_eq!(def.columns[0].name, "id");
        assert_eq!(def.columns[1].name, "Name");
        assert!(def.columns[0].not_null && def.columns[1].not_null && !def.columns[2].not_null);
        assert_eq!(def.columns[1].default.as_deref(), Some("'x'"));
        assert_eq!(def.primary_key, vec![0]);
    }

    #[test]
    fn unique_constraints_become_indexes() {
        let def = analyse(
            "CREATE TABLE t (a int UNIQUE, b text, c int CONSTRAINT c_once UNIQUE, UNIQUE (b, a))",
        )
        .unwrap();
        let names: Vec<(&str, &[usize])> = def
            .indexes
            .iter()
            .map(|i| (i.name.as_str(), i.columns.as_slice()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("t_a_key", &[0][..]),
                ("c_once", &[2][..]),
                ("t_b_a_key", &[1, 0][..])
            ]
        );
        assert!(def.indexes.iter().all(|i| i.unique && i.constraint));
    }

    #[test]
    fn inline_primary_key() {
        let def = analyse("CREATE TABLE t (a int, b text PRIMARY KEY)").unwrap();
        assert_eq!(def.primary_key, vec![1]);
    }

    #[test]
    fn bad_definitions_are_refused() {
        assert!(matches!(
            analyse("CREATE TABLE t (a int, a text)"),
            Err(PlanError::DuplicateColumn(_))
        ));
        assert!(matches!(
            analyse("CREATE TABLE t (a int PRIMARY KEY, b int, PRIMARY KEY (b))"),
            Err(PlanError::InvalidDefinition(_))
        ));
        assert!(matches!(
            analyse("CREATE TABLE t (a int, PRIMARY KEY (zz))"),
            Err(PlanError::UnknownColumn(_))
        ));
        assert!(matches!(
            analyse("CREATE TABLE t (a int, UNIQUE NULLS NOT DISTINCT (a))"),
            Err(PlanError::NotSupported(_))
        ));
        assert!(matches!(
            analyse("CREATE TABLE t (a int REFERENCES u (id))"),
            Err(PlanError::NotSupported(_))
        ));
    }
}
