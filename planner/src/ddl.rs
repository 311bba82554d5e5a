//! Analysis of DDL statements into catalog definitions.

use datafusion::sql::sqlparser::ast::{
    ColumnDef as SqlColumnDef, ColumnOption, CreateTable, Expr, Ident, ObjectName, ObjectNamePart,
    TableConstraint,
};

use crate::catalog::{ColumnDef, RelationName, TableDef};
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

/// The definition of one column, and whether it declares itself the
/// primary key (`id int PRIMARY KEY`).
pub fn column_def(column: &SqlColumnDef) -> PlanResult<(ColumnDef, bool)> {
    let name = normalize_ident(&column.name);
    let column_type = ColumnType::from_sql(&column.data_type)?;
    let mut def = ColumnDef {
        name,
        column_type,
        not_null: false,
        default: None,
    };
    let mut primary = false;
    for option in &column.options {
        match &option.option {
            ColumnOption::Null => def.not_null = false,
            ColumnOption::NotNull => def.not_null = true,
            ColumnOption::Default(expr) => def.default = Some(default_sql(expr)),
            ColumnOption::PrimaryKey(_) => {
                primary = true;
                def.not_null = true;
            }
            other => {
                return Err(PlanError::NotSupported(format!(
                    "the column constraint {other} (only NOT NULL, NULL, DEFAULT and PRIMARY KEY are)"
                )));
            }
        }
    }
    if primary && !def.column_type.can_be_key() {
        return Err(PlanError::InvalidDefinition(format!(
            "column \"{}\" of type {} cannot be a primary key",
            def.name,
            def.column_type.pg_name()
        )));
    }
    Ok((def, primary))
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
    for column in &create.columns {
        let (def, primary) = column_def(column)?;
        if columns.iter().any(|c| c.name == def.name) {
            return Err(PlanError::DuplicateColumn(def.name));
        }
        if primary {
            primary_key.push(columns.len());
        }
        columns.push(def);
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
            other => {
                return Err(PlanError::NotSupported(format!(
                    "the table constraint {other} (only PRIMARY KEY is)"
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
    Ok(TableDef {
        id,
        name,
        columns,
        primary_key,
        connector: None,
        watermark: None,
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
            analyse("CREATE TABLE t (a int UNIQUE)"),
            Err(PlanError::NotSupported(_))
        ));
        assert!(matches!(
            analyse("CREATE TABLE t (a int REFERENCES u (id))"),
            Err(PlanError::NotSupported(_))
        ));
    }
}
