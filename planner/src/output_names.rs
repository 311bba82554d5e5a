//! Output column names as Postgres gives them. DataFusion names an unnamed
//! select item after its expression (`Int64(1) + Int64(1)`, `count(*)`) and
//! refuses two items of one name; Postgres names it `?column?`, after the
//! function (`count`), the cast's type (`int4`) or the column it reads, and
//! allows duplicates (`SELECT 1, 1`). Every unnamed select item therefore
//! gets Postgres's name as an alias, and a name that comes again within
//! one select list gets an invisible suffix ([`DUPLICATE_MARK`]) that the
//! wire protocol strips ([`display_name`]).
//!
//! Postgres's rules (`FigureColname` in its parser) rank a name's
//! strength: a column or function name beats the type name of a cast
//! around it, which beats `case`, which beats `?column?`.

use std::collections::HashMap;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    CeilFloorKind, DataType, Expr, Ident, ObjectNamePart, Query, SelectItem, SetExpr, Statement,
    TimezoneInfo, VisitMut, VisitorMut,
};

use crate::{PlanError, PlanResult};

/// Separates a duplicate output name from the number that keeps it apart
/// from its namesakes inside the engine; never shown to a client.
pub const DUPLICATE_MARK: char = '\u{1f}';

/// The name a client sees for output column `name`.
pub fn display_name(name: &str) -> &str {
    match name.find(DUPLICATE_MARK) {
        Some(at) => &name[..at],
        None => name,
    }
}

/// Names the output columns of every query in `statement` as Postgres
/// does. The select list of a view's own query (`CREATE [MATERIALIZED]
/// VIEW` without a column list) may not name a column twice, as in
/// Postgres; elsewhere duplicates are kept apart.
pub fn name_output_columns(statement: &mut Statement) -> PlanResult<()> {
    if let Statement::CreateView(create) = statement
        && create.columns.is_empty()
    {
        name_query(&mut create.query, Duplicates::Refuse)?;
    }
    let mut namer = Namer { error: None };
    let _ = statement.visit(&mut namer);
    match namer.error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Duplicates {
    Refuse,
    Mark,
}

struct Namer {
    error: Option<PlanError>,
}

impl VisitorMut for Namer {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if let Err(e) = name_query(query, Duplicates::Mark) {
            self.error = Some(e);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

fn name_query(query: &mut Query, duplicates: Duplicates) -> PlanResult<()> {
    name_set_expr(&mut query.body, duplicates)
}

fn name_set_expr(body: &mut SetExpr, duplicates: Duplicates) -> PlanResult<()> {
    match body {
        SetExpr::Select(select) => name_items(&mut select.projection, duplicates),
        SetExpr::Query(query) => name_query(query, duplicates),
        // The left branch names the result; the right one only needs names
        // DataFusion accepts.
        SetExpr::SetOperation { left, right, .. } => {
            name_set_expr(left, duplicates)?;
            name_set_expr(right, Duplicates::Mark)
        }
        _ => Ok(()),
    }
}

fn name_items(items: &mut [SelectItem], duplicates: Duplicates) -> PlanResult<()> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for item in items.iter_mut() {
        let (expr, name, plain_column) = match item {
            SelectItem::UnnamedExpr(expr) => {
                let plain = matches!(expr, Expr::Identifier(_) | Expr::CompoundIdentifier(_));
                let name = column_name(expr).map_or_else(|| "?column?".to_string(), |(n, _)| n);
                (expr, name, plain)
            }
            SelectItem::ExprWithAlias { alias, .. } => {
                let name = crate::ddl::normalize_ident(alias);
                let count = seen.entry(name.clone()).or_default();
                *count += 1;
                if *count > 1 {
                    if duplicates == Duplicates::Refuse {
                        return Err(PlanError::DuplicateColumn(name));
                    }
                    *alias = Ident::with_quote('"', format!("{name}{DUPLICATE_MARK}{count}"));
                }
                continue;
            }
            _ => continue,
        };
        let count = seen.entry(name.clone()).or_default();
        *count += 1;
        let alias = if *count > 1 {
            if duplicates == Duplicates::Refuse {
                return Err(PlanError::DuplicateColumn(name));
            }
            format!("{name}{DUPLICATE_MARK}{count}")
        } else if plain_column {
            continue;
        } else {
            name
        };
        let expr = std::mem::replace(
            expr,
            Expr::value(datafusion::sql::sqlparser::ast::Value::Null),
        );
        *item = SelectItem::ExprWithAlias {
            expr,
            alias: Ident::with_quote('"', alias),
        };
    }
    Ok(())
}

/// How sure a name is: Postgres keeps the strongest one found.
#[derive(Clone, Copy, PartialEq, PartialOrd)]
enum Strength {
    /// `case`, or a cast's type name.
    Weak,
    /// A column, function or subquery column name.
    Strong,
}

/// Postgres's name for an unnamed select item, None for `?column?`.
fn column_name(expr: &Expr) -> Option<(String, Strength)> {
    let strong = |name: &str| Some((name.to_string(), Strength::Strong));
    match expr {
        Expr::Identifier(ident) => strong(&crate::ddl::normalize_ident(ident)),
        Expr::CompoundIdentifier(parts) => parts
            .last()
            .and_then(|ident| strong(&crate::ddl::normalize_ident(ident))),
        Expr::Function(function) => match function.name.0.last() {
            Some(ObjectNamePart::Identifier(ident)) => strong(&crate::ddl::normalize_ident(ident)),
            _ => None,
        },
        Expr::Nested(inner) | Expr::Collate { expr: inner, .. } => column_name(inner),
        Expr::Cast {
            expr, data_type, ..
        } => match column_name(expr) {
            Some(named @ (_, Strength::Strong)) => Some(named),
            _ => Some((type_name(data_type), Strength::Weak)),
        },
        Expr::TypedString(typed) => Some((type_name(&typed.data_type), Strength::Weak)),
        Expr::Interval(_) => Some(("interval".into(), Strength::Weak)),
        Expr::Case { else_result, .. } => match else_result.as_deref().and_then(column_name) {
            Some(named @ (_, Strength::Strong)) => Some(named),
            _ => Some(("case".into(), Strength::Weak)),
        },
        Expr::Subquery(query) => match query.body.as_ref() {
            SetExpr::Select(select) => match select.projection.first() {
                Some(SelectItem::ExprWithAlias { alias, .. }) => {
                    strong(&crate::ddl::normalize_ident(alias))
                }
                Some(SelectItem::UnnamedExpr(inner)) => column_name(inner),
                _ => None,
            },
            _ => None,
        },
        Expr::Exists { .. } => strong("exists"),
        Expr::Array(_) => strong("array"),
        Expr::Tuple(_) => strong("row"),
        Expr::Extract { .. } => strong("extract"),
        Expr::Substring { .. } => strong("substring"),
        Expr::Trim { .. } => strong("btrim"),
        Expr::Position { .. } => strong("position"),
        Expr::Overlay { .. } => strong("overlay"),
        Expr::AtTimeZone { .. } => strong("timezone"),
        Expr::Ceil { field, .. } => match field {
            CeilFloorKind::DateTimeField(_) | CeilFloorKind::Scale(_) => strong("ceil"),
        },
        Expr::Floor { .. } => strong("floor"),
        _ => None,
    }
}

/// The type name Postgres shows for a cast to `data_type`.
fn type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Int(_) | DataType::Integer(_) | DataType::Int4(_) => "int4".into(),
        DataType::BigInt(_) | DataType::Int8(_) => "int8".into(),
        DataType::SmallInt(_) | DataType::Int2(_) => "int2".into(),
        DataType::Real | DataType::Float4 => "float4".into(),
        DataType::Double(_) | DataType::DoublePrecision | DataType::Float8 => "float8".into(),
        DataType::Float(info) => match info {
            datafusion::sql::sqlparser::ast::ExactNumberInfo::Precision(p)
            | datafusion::sql::sqlparser::ast::ExactNumberInfo::PrecisionAndScale(p, _)
                if *p <= 24 =>
            {
                "float4".into()
            }
            _ => "float8".into(),
        },
        DataType::Bool | DataType::Boolean => "bool".into(),
        DataType::Varchar(_) | DataType::CharacterVarying(_) | DataType::CharVarying(_) => {
            "varchar".into()
        }
        DataType::Char(_) | DataType::Character(_) => "bpchar".into(),
        DataType::Numeric(_) | DataType::Decimal(_) | DataType::Dec(_) => "numeric".into(),
        DataType::Time(_, TimezoneInfo::Tz | TimezoneInfo::WithTimeZone) => "timetz".into(),
        DataType::Time(..) => "time".into(),
        DataType::Timestamp(_, TimezoneInfo::Tz | TimezoneInfo::WithTimeZone) => {
            "timestamptz".into()
        }
        DataType::Timestamp(..) => "timestamp".into(),
        DataType::Interval { .. } => "interval".into(),
        DataType::JSON => "json".into(),
        DataType::JSONB => "jsonb".into(),
        DataType::Array(element) => match element {
            datafusion::sql::sqlparser::ast::ArrayElemTypeDef::AngleBracket(t)
            | datafusion::sql::sqlparser::ast::ArrayElemTypeDef::SquareBracket(t, _)
            | datafusion::sql::sqlparser::ast::ArrayElemTypeDef::Parenthesis(t) => type_name(t),
            datafusion::sql::sqlparser::ast::ArrayElemTypeDef::None => "anyarray".into(),
        },
        DataType::Custom(name, _) => match name.0.last() {
            Some(ObjectNamePart::Identifier(ident)) => crate::ddl::normalize_ident(ident),
            _ => name.to_string().to_ascii_lowercase(),
        },
        other => other.to_string().to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn named(sql: &str) -> PlanResult<String> {
        let mut statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .map_err(|e| PlanError::Internal(e.to_string()))?
            .remove(0);
        name_output_columns(&mut statement)?;
        Ok(statement.to_string().replace(DUPLICATE_MARK, "|"))
    }

    #[test]
    fn unnamed_items_get_postgres_names() {
        assert_eq!(
            named("SELECT 1 + 1, count(*), x::int, 'a'::text, a.b, CASE WHEN true THEN 1 END, COUNT(y) FROM t").unwrap(),
            "SELECT 1 + 1 AS \"?column?\", count(*) AS \"count\", x::INT AS \"x\", 'a'::TEXT AS \"text\", a.b, \
             CASE WHEN true THEN 1 END AS \"case\", COUNT(y) AS \"count|2\" FROM t"
        );
    }

    #[test]
    fn duplicates_are_marked_in_queries_and_refused_in_views() {
        assert_eq!(
            named("SELECT 1, 1, a, a AS a FROM t").unwrap(),
            "SELECT 1 AS \"?column?\", 1 AS \"?column?|2\", a, a AS \"a|2\" FROM t"
        );
        assert!(matches!(
            named("CREATE VIEW v AS SELECT 1, 1"),
            Err(PlanError::DuplicateColumn(name)) if name == "?column?"
        ));
        assert!(named("CREATE VIEW v (a, b) AS SELECT 1, 1").is_ok());
    }

    #[test]
    fn subqueries_and_set_operations_are_named() {
        assert_eq!(
            named("SELECT (SELECT max(x) FROM t) FROM (SELECT 1, 1) s UNION SELECT 2").unwrap(),
            "SELECT (SELECT max(x) AS \"max\" FROM t) AS \"max\" FROM (SELECT 1 AS \"?column?\", 1 AS \"?column?|2\") s \
             UNION SELECT 2 AS \"?column?\""
        );
    }

    #[test]
    fn display_name_strips_the_mark() {
        assert_eq!(display_name("?column?\u{1f}2"), "?column?");
        assert_eq!(display_name("count"), "count");
    }
}
