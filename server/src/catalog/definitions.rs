//! Functions that print catalog objects back as SQL, over the catalog a
//! session sees: `pg_get_indexdef`, `pg_get_constraintdef`,
//! `pg_get_viewdef`, `pg_get_expr` (DEFAULT expressions) and
//! `pg_get_userbyid`. Oids are those `pg_class` and `pg_constraint` show
//! ([`super::pg_objects`]).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use runnel_planner::catalog::RelationName;
use runnel_planner::types::ColumnType;

use super::Catalog;
use super::pg_keys::{constraint_definition_by_oid, index_definition_by_oid};
use super::pg_objects::{OWNER_NAME, OWNER_OID, object_name_parts, quote_ident};
use super::pg_relations::oid_of;

/// Which function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    IndexDef,
    ConstraintDef,
    ViewDef,
    Expr,
    UserById,
}

/// One of the functions, over a session's catalog and search path.
#[derive(Debug)]
struct Definition {
    kind: Kind,
    signature: Signature,
    catalog: Arc<Catalog>,
    /// Schemas whose objects print unqualified.
    search_path: Vec<String>,
}

impl PartialEq for Definition {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && Arc::ptr_eq(&self.catalog, &other.catalog)
            && self.search_path == other.search_path
    }
}

impl Eq for Definition {}

impl std::hash::Hash for Definition {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
        self.search_path.hash(state);
    }
}

/// The functions for a session that sees `catalog` with `search_path`.
pub fn definition_functions(catalog: &Arc<Catalog>, search_path: &[String]) -> Vec<ScalarUDF> {
    [
        Kind::IndexDef,
        Kind::ConstraintDef,
        Kind::ViewDef,
        Kind::Expr,
        Kind::UserById,
    ]
    .into_iter()
    .map(|kind| {
        ScalarUDF::new_from_impl(Definition {
            kind,
            signature: Signature::variadic_any(Volatility::Stable),
            catalog: Arc::clone(catalog),
            search_path: search_path.to_vec(),
        })
    })
    .collect()
}

impl ScalarUDFImpl for Definition {
    fn name(&self) -> &str {
        match self.kind {
            Kind::IndexDef => "pg_get_indexdef",
            Kind::ConstraintDef => "pg_get_constraintdef",
            Kind::ViewDef => "pg_get_viewdef",
            Kind::Expr => "pg_get_expr",
            Kind::UserById => "pg_get_userbyid",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let first = arrays
            .first()
            .ok_or_else(|| DataFusionError::Plan(format!("{} needs an argument", self.name())))?;
        let second = arrays.get(1);
        let third = arrays.get(2);
        let tables = match self.kind {
            Kind::IndexDef | Kind::ConstraintDef => self.catalog.tables(),
            _ => vec![],
        };
        let visible = |schema: &str| self.search_path.iter().any(|s| s == schema);
        let mut out: Vec<Option<String>> = Vec::with_capacity(rows);
        for row in 0..first.len() {
            if first.is_null(row) {
                out.push(None);
                continue;
            }
            out.push(match self.kind {
                Kind::IndexDef => {
                    let column = int_at(second, row)?.unwrap_or(0).max(0) as usize;
                    let pretty = bool_at(third, row)?.unwrap_or(false);
                    index_definition_by_oid(&tables, oid_at(first, row)?, column, |schema| {
                        pretty && visible(schema)
                    })
                }
                Kind::ConstraintDef => constraint_definition_by_oid(
                    &tables,
                    oid_at(first, row)?,
                    bool_at(second, row)?.unwrap_or(false),
                ),
                Kind::ViewDef => self.view_definition(first, row)?,
                Kind::Expr => text_at(Some(first), row)?.map(|sql| display_default(&sql, &visible)),
                Kind::UserById => Some(match oid_at(first, row)? {
                    OWNER_OID => OWNER_NAME.to_string(),
                    other => format!("unknown (OID={other})"),
                }),
            });
        }
        Ok(ColumnarValue::Array(
            Arc::new(StringArray::from(out)) as ArrayRef
        ))
    }
}

impl Definition {
    /// `pg_get_viewdef(oid | name)`: the view's query.
    fn view_definition(&self, first: &ArrayRef, row: usize) -> Result<Option<String>> {
        let views = self.catalog.views();
        if matches!(
            first.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) {
            let Some(name) = text_at(Some(first), row)? else {
                return Ok(None);
            };
            let parts = object_name_parts(&name);
            return Ok(views
                .iter()
                .find(|v| match parts.as_slice() {
                    [name] => v.name.name == *name && self.search_path.contains(&v.name.schema),
                    [schema, name] => v.name == RelationName::new(schema.clone(), name.clone()),
                    _ => false,
                })
                .map(|v| v.sql.clone()));
        }
        let oid = oid_at(first, row)?;
        Ok(views
            .iter()
            .find(|v| oid_of(&v.name) == oid)
            .map(|v| v.sql.clone()))
    }
}

fn oid_at(array: &ArrayRef, row: usize) -> Result<i32> {
    Ok(int_at(Some(array), row)?.unwrap_or(0) as i32)
}

fn int_at(array: Option<&ArrayRef>, row: usize) -> Result<Option<i64>> {
    let Some(array) = array else {
        return Ok(None);
    };
    let ints = cast(array, &DataType::Int64)?;
    let ints = ints.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    Ok((!ints.is_null(row)).then(|| ints.value(row)))
}

fn bool_at(array: Option<&ArrayRef>, row: usize) -> Result<Option<bool>> {
    let Some(array) = array else {
        return Ok(None);
    };
    let bools = cast(array, &DataType::Boolean)?;
    let bools = bools.as_boolean();
    Ok((!bools.is_null(row)).then(|| bools.value(row)))
}

fn text_at(array: Option<&ArrayRef>, row: usize) -> Result<Option<String>> {
    let Some(array) = array else {
        return Ok(None);
    };
    let strings = cast(array, &DataType::Utf8)?;
    let strings = strings.as_string::<i32>();
    Ok((!strings.is_null(row)).then(|| strings.value(row).to_string()))
}

/// A stored DEFAULT as Postgres prints it: a serial's
/// `nextval('"public"."t_id_seq"')` is `nextval('t_id_seq'::regclass)`
/// (qualified when its schema is not on the search path).
fn display_default(sql: &str, visible: &impl Fn(&str) -> bool) -> String {
    let Ok(Expr::Function(function)) = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
    else {
        return sql.to_string();
    };
    let FunctionArguments::List(list) = &function.args else {
        return sql.to_string();
    };
    let is_nextval = function.name.to_string().eq_ignore_ascii_case("nextval");
    let [FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(value)))] = list.args.as_slice()
    else {
        return sql.to_string();
    };
    let Value::SingleQuotedString(name) = &value.value else {
        return sql.to_string();
    };
    if !is_nextval {
        return sql.to_string();
    }
    let parts = object_name_parts(name);
    let shown = match parts.as_slice() {
        [schema, name] if visible(schema) => quote_ident(name),
        [schema, name] => format!("{}.{}", quote_ident(schema), quote_ident(name)),
        _ => name.clone(),
    };
    format!("nextval('{}'::regclass)", shown.replace('\'', "''"))
}

/// A stored DEFAULT as `pg_get_expr` prints it: constants coerced to the
/// column's type, a serial's sequence as a `regclass` (unqualified when
/// `visible` says its schema is searched).
pub fn shown_default(
    sql: &str,
    column_type: &ColumnType,
    visible: &impl Fn(&str) -> bool,
) -> String {
    display_default(&coerced_default(sql, column_type), visible)
}

/// A stored DEFAULT of a column of `column_type` as Postgres stores it
/// after coercing constants to the column's type: `'0'` on an integer
/// column is `0`, `'x'` on a text column `'x'::text`, `-1` `'-1'::integer`.
/// Other expressions stay as written.
pub fn coerced_default(sql: &str, column_type: &ColumnType) -> String {
    let Ok(expr) = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
    else {
        return sql.to_string();
    };
    let constant = match &expr {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.clone(),
            Value::SingleQuotedString(s) => s.clone(),
            Value::Boolean(b) => b.to_string(),
            _ => return sql.to_string(),
        },
        Expr::UnaryOp {
            op: datafusion::sql::sqlparser::ast::UnaryOperator::Minus,
            expr,
        } => match expr.as_ref() {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => format!("-{n}"),
                _ => return sql.to_string(),
            },
            _ => return sql.to_string(),
        },
        _ => return sql.to_string(),
    };
    let quoted = |type_name: &str| format!("'{}'::{type_name}", constant.replace('\'', "''"));
    match column_type {
        ColumnType::Int2 | ColumnType::Int4 | ColumnType::Int8 | ColumnType::Numeric { .. } => {
            let number = constant.trim();
            let valid = number.parse::<f64>().is_ok() && !number.contains(['e', 'E']);
            if !valid {
                sql.to_string()
            } else if number.starts_with('-') {
                quoted(&super::pg_type_name(&column_type.arrow_type()))
            } else {
                number.to_string()
            }
        }
        ColumnType::Boolean => match constant.to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "on" | "1" => "true".into(),
            "false" | "f" | "no" | "off" | "0" => "false".into(),
            _ => sql.to_string(),
        },
        ColumnType::Text => quoted("text"),
        ColumnType::Varchar { .. } => quoted("character varying"),
        _ => sql.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_defaults_print_as_postgres() {
        let public = |s: &str| s == "public";
        assert_eq!(
            display_default("nextval('\"public\".\"items_id_seq\"')", &public),
            "nextval('items_id_seq'::regclass)"
        );
        assert_eq!(
            display_default("nextval('\"app\".\"Items_id_seq\"')", &public),
            "nextval('app.\"Items_id_seq\"'::regclass)"
        );
        assert_eq!(display_default("0", &public), "0");
        assert_eq!(coerced_default("'0'", &ColumnType::Int4), "0");
        assert_eq!(coerced_default("-1", &ColumnType::Int8), "'-1'::bigint");
        assert_eq!(coerced_default("'x'", &ColumnType::Text), "'x'::text");
        assert_eq!(
            coerced_default(
                "'it''s'",
                &ColumnType::Varchar {
                    max_length: Some(3)
                }
            ),
            "'it''s'::character varying"
        );
        assert_eq!(coerced_default("'t'", &ColumnType::Boolean), "true");
        assert_eq!(coerced_default("now()", &ColumnType::Timestamptz), "now()");
        assert_eq!(display_default("now()", &public), "now()");
    }
}
