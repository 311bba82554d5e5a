//! Runnel's catalog objects as Postgres tools see them: the oids they get
//! in `pg_catalog`, the indexes and constraints a table has (its primary
//! key is an index and a constraint, as in Postgres), and the text that
//! `pg_get_indexdef` / `pg_get_constraintdef` give for them.
//!
//! Oids are derived from names, so they are the same in every session, in
//! a transaction block's draft and after a restart, and a client that read
//! one from `pg_class` can hand it back to any function.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, visit_expressions};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use runnel_planner::catalog::TableDef;

/// Oids Runnel derives lie at or above this; `datafusion-pg-catalog`'s
/// own (system relations, schemas) are counted up from 16384.
const FIRST_DERIVED_OID: u32 = 1 << 30;

/// The oid of the superuser role that owns every object (the only role
/// until roles exist), as Postgres's bootstrap superuser.
pub const OWNER_OID: i32 = 10;
/// That role's name.
pub const OWNER_NAME: &str = "runnel";

fn derived_oid(parts: &[&str]) -> i32 {
    // FNV-1a: stable across builds and processes, unlike std's hasher.
    let mut hash: u32 = 0x811c_9dc5;
    for part in parts {
        for byte in part.bytes().chain([0xff]) {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    }
    (FIRST_DERIVED_OID + hash % (i32::MAX as u32 - FIRST_DERIVED_OID)) as i32
}

/// Postgres 15's oids of its system catalogs, which clients compare with
/// (`classoid = 'pg_class'::regclass`, `pg_depend`, `pg_description`).
const SYSTEM_CATALOG_OIDS: &[(&str, i32)] = &[
    ("pg_default_acl", 826),
    ("pg_tablespace", 1213),
    ("pg_shdepend", 1214),
    ("pg_type", 1247),
    ("pg_attribute", 1249),
    ("pg_proc", 1255),
    ("pg_class", 1259),
    ("pg_authid", 1260),
    ("pg_auth_members", 1261),
    ("pg_database", 1262),
    ("pg_foreign_server", 1417),
    ("pg_user_mapping", 1418),
    ("pg_sequence", 2224),
    ("pg_foreign_data_wrapper", 2328),
    ("pg_shdescription", 2396),
    ("pg_aggregate", 2600),
    ("pg_am", 2601),
    ("pg_amop", 2602),
    ("pg_amproc", 2603),
    ("pg_attrdef", 2604),
    ("pg_cast", 2605),
    ("pg_constraint", 2606),
    ("pg_conversion", 2607),
    ("pg_depend", 2608),
    ("pg_description", 2609),
    ("pg_index", 2610),
    ("pg_inherits", 2611),
    ("pg_language", 2612),
    ("pg_largeobject", 2613),
    ("pg_namespace", 2615),
    ("pg_opclass", 2616),
    ("pg_operator", 2617),
    ("pg_rewrite", 2618),
    ("pg_statistic", 2619),
    ("pg_trigger", 2620),
    ("pg_opfamily", 2753),
    ("pg_db_role_setting", 2964),
    ("pg_largeobject_metadata", 2995),
    ("pg_extension", 3079),
    ("pg_foreign_table", 3118),
    ("pg_policy", 3256),
    ("pg_partitioned_table", 3350),
    ("pg_statistic_ext", 3381),
    ("pg_init_privs", 3394),
    ("pg_statistic_ext_data", 3429),
    ("pg_collation", 3456),
    ("pg_event_trigger", 3466),
    ("pg_enum", 3501),
    ("pg_range", 3541),
    ("pg_transform", 3576),
    ("pg_shseclabel", 3592),
    ("pg_seclabel", 3596),
    ("pg_ts_dict", 3600),
    ("pg_ts_parser", 3601),
    ("pg_ts_config", 3602),
    ("pg_ts_config_map", 3603),
    ("pg_ts_template", 3764),
    ("pg_replication_origin", 6000),
    ("pg_subscription", 6100),
    ("pg_subscription_rel", 6102),
    ("pg_publication", 6104),
    ("pg_publication_rel", 6106),
    ("pg_publication_namespace", 6237),
    ("pg_parameter_acl", 6243),
];

/// The oid of relation `schema.name`: Postgres's for a system catalog,
/// else derived from the name (tables, views, sources, indexes and
/// sequences share one name space per schema).
pub fn relation_oid(schema: &str, name: &str) -> i32 {
    if schema == "pg_catalog"
        && let Some((_, oid)) = SYSTEM_CATALOG_OIDS.iter().find(|(n, _)| *n == name)
    {
        return *oid;
    }
    derived_oid(&["relation", schema, name])
}

/// The oid of constraint `name` of table `schema.table`.
pub fn constraint_oid(schema: &str, table: &str, name: &str) -> i32 {
    derived_oid(&["constraint", schema, table, name])
}

/// The oid of the DEFAULT of column `attnum` of relation `relation_oid`.
pub fn default_oid(relation_oid: i32, attnum: usize) -> i32 {
    derived_oid(&["default", &relation_oid.to_string(), &attnum.to_string()])
}

/// An index of a table: its primary key or a secondary index.
#[derive(Debug, Clone)]
pub struct PgIndex {
    pub oid: i32,
    pub name: String,
    /// Indices of the indexed columns.
    pub columns: Vec<usize>,
    pub unique: bool,
    pub primary: bool,
    /// Backs a PRIMARY KEY or UNIQUE constraint of the same name.
    pub constraint: bool,
}

/// The name of a table's primary key (constraint and index).
pub fn primary_key_name(table: &str) -> String {
    let mut name = table.to_string();
    while name.len() > 63 - "_pkey".len() {
        name.pop();
    }
    format!("{name}_pkey")
}

/// The indexes of `def`, its primary key first.
pub fn indexes(def: &TableDef) -> Vec<PgIndex> {
    let schema = def.name.schema.as_str();
    let mut out = vec![];
    if !def.primary_key.is_empty() && def.connector.is_none() {
        let name = primary_key_name(&def.name.name);
        out.push(PgIndex {
            oid: relation_oid(schema, &name),
            name,
            columns: def.primary_key.clone(),
            unique: true,
            primary: true,
            constraint: true,
        });
    }
    out.extend(def.indexes.iter().map(|index| PgIndex {
        oid: relation_oid(schema, &index.name),
        name: index.name.clone(),
        columns: index.columns.clone(),
        unique: index.unique,
        primary: false,
        constraint: index.constraint,
    }));
    out
}

/// What a constraint is.
#[derive(Debug, Clone)]
pub enum ConstraintKind {
    PrimaryKey,
    Unique,
    /// The condition's SQL text.
    Check(String),
}

/// A constraint of a table.
#[derive(Debug, Clone)]
pub struct PgConstraint {
    pub oid: i32,
    pub name: String,
    pub kind: ConstraintKind,
    /// Indices of the constrained (for CHECK: the referenced) columns.
    pub columns: Vec<usize>,
    /// The index behind a key constraint (0 for CHECK).
    pub index_oid: i32,
}

impl PgConstraint {
    /// `pg_constraint.contype`.
    pub fn contype(&self) -> &'static str {
        match self.kind {
            ConstraintKind::PrimaryKey => "p",
            ConstraintKind::Unique => "u",
            ConstraintKind::Check(_) => "c",
        }
    }
}

/// The constraints of `def`: keys (from its indexes), then CHECKs.
pub fn constraints(def: &TableDef) -> Vec<PgConstraint> {
    let (schema, table) = (def.name.schema.as_str(), def.name.name.as_str());
    let mut out: Vec<PgConstraint> = indexes(def)
        .into_iter()
        .filter(|index| index.constraint)
        .map(|index| PgConstraint {
            oid: constraint_oid(schema, table, &index.name),
            kind: if index.primary {
                ConstraintKind::PrimaryKey
            } else {
                ConstraintKind::Unique
            },
            name: index.name,
            columns: index.columns,
            index_oid: index.oid,
        })
        .collect();
    out.extend(def.checks.iter().map(|check| PgConstraint {
        oid: constraint_oid(schema, table, &check.name),
        name: check.name.clone(),
        kind: ConstraintKind::Check(check.expr.clone()),
        columns: referenced_columns(def, &check.expr),
        index_oid: 0,
    }));
    out
}

/// The columns of `def` that the SQL expression `sql` names, in table order.
fn referenced_columns(def: &TableDef, sql: &str) -> Vec<usize> {
    let Ok(expr) = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
    else {
        return vec![];
    };
    let mut found = BTreeSet::new();
    let _ = visit_expressions(&expr, |e| {
        let name = match e {
            Expr::Identifier(ident) => Some(&ident.value),
            Expr::CompoundIdentifier(parts) => parts.last().map(|p| &p.value),
            _ => None,
        };
        if let Some(name) = name
            && let Some(index) = def.columns.iter().position(|c| &c.name == name)
        {
            found.insert(index);
        }
        ControlFlow::<()>::Continue(())
    });
    found.into_iter().collect()
}

/// The parts of a possibly qualified, possibly quoted name.
pub fn object_name_parts(text: &str) -> Vec<String> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .and_then(|mut p| p.parse_object_name(false))
        .map(|name| {
            name.0
                .iter()
                .filter_map(|part| part.as_ident().map(|i| i.value.clone()))
                .collect()
        })
        .unwrap_or_else(|_| vec![text.to_string()])
}

/// Words Postgres quotes when they name something: its reserved,
/// column-name and type/function-name keywords (all but the unreserved).
const RESERVED: &[&str] = &[
    "authorization",
    "between",
    "bigint",
    "binary",
    "bit",
    "boolean",
    "char",
    "character",
    "coalesce",
    "collation",
    "concurrently",
    "cross",
    "current_schema",
    "dec",
    "decimal",
    "exists",
    "extract",
    "float",
    "freeze",
    "full",
    "greatest",
    "grouping",
    "ilike",
    "inner",
    "inout",
    "int",
    "integer",
    "interval",
    "is",
    "isnull",
    "join",
    "least",
    "left",
    "like",
    "national",
    "natural",
    "nchar",
    "none",
    "normalize",
    "notnull",
    "nullif",
    "numeric",
    "out",
    "outer",
    "overlaps",
    "overlay",
    "position",
    "precision",
    "real",
    "right",
    "row",
    "setof",
    "similar",
    "smallint",
    "substring",
    "tablesample",
    "time",
    "timestamp",
    "treat",
    "trim",
    "values",
    "varchar",
    "verbose",
    "xmlattributes",
    "xmlconcat",
    "xmlelement",
    "xmlexists",
    "xmlforest",
    "xmlnamespaces",
    "xmlparse",
    "xmlpi",
    "xmlroot",
    "xmlserialize",
    "xmltable",
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "constraint",
    "create",
    "current_date",
    "current_role",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "from",
    "grant",
    "group",
    "having",
    "in",
    "initially",
    "intersect",
    "into",
    "lateral",
    "leading",
    "limit",
    "localtime",
    "not",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "placing",
    "primary",
    "references",
    "returning",
    "select",
    "session_user",
    "some",
    "symmetric",
    "table",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "when",
    "where",
    "window",
    "with",
];

/// `name` as Postgres's `quote_ident` writes it.
pub fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$')
        && !RESERVED.contains(&name);
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

fn column_list(def: &TableDef, columns: &[usize]) -> String {
    columns
        .iter()
        .filter_map(|&i| def.columns.get(i))
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `pg_get_indexdef`: the CREATE INDEX statement, the table qualified
/// unless `unqualified` (pretty output for a table on the search path).
pub fn index_definition(def: &TableDef, index: &PgIndex, unqualified: bool) -> String {
    let table = if unqualified {
        quote_ident(&def.name.name)
    } else {
        format!(
            "{}.{}",
            quote_ident(&def.name.schema),
            quote_ident(&def.name.name)
        )
    };
    format!(
        "CREATE {}INDEX {} ON {table} USING btree ({})",
        if index.unique { "UNIQUE " } else { "" },
        quote_ident(&index.name),
        column_list(def, &index.columns)
    )
}

/// `pg_get_constraintdef`: `PRIMARY KEY (a)`, `UNIQUE (a, b)`,
/// `CHECK ((cond))` (`CHECK (cond)` when `pretty`).
pub fn constraint_definition(def: &TableDef, constraint: &PgConstraint, pretty: bool) -> String {
    match &constraint.kind {
        ConstraintKind::PrimaryKey => {
            format!("PRIMARY KEY ({})", column_list(def, &constraint.columns))
        }
        ConstraintKind::Unique => format!("UNIQUE ({})", column_list(def, &constraint.columns)),
        ConstraintKind::Check(sql) if pretty => format!("CHECK ({sql})"),
        ConstraintKind::Check(sql) => format!("CHECK (({sql}))"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_are_stable_distinct_and_above_the_counted_ones() {
        let a = relation_oid("public", "items");
        assert_eq!(a, relation_oid("public", "items"));
        assert_ne!(a, relation_oid("public", "items_pkey"));
        assert_ne!(a, relation_oid("other", "items"));
        assert_ne!(a, constraint_oid("public", "items", "items"));
        assert!(a >= 1 << 30);
        assert_eq!(relation_oid("pg_catalog", "pg_class"), 1259);
        assert_ne!(relation_oid("public", "pg_class"), 1259);
    }

    #[test]
    fn quotes_as_postgres() {
        assert_eq!(quote_ident("price"), "price");
        assert_eq!(quote_ident("Price"), "\"Price\"");
        assert_eq!(quote_ident("user"), "\"user\"");
        assert_eq!(quote_ident("a b"), "\"a b\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("1a"), "\"1a\"");
        assert_eq!(quote_ident("time"), "\"time\"");
        assert_eq!(quote_ident("name"), "name");
    }

    #[test]
    fn primary_key_names_are_cut_to_63_bytes() {
        assert_eq!(primary_key_name("items"), "items_pkey");
        assert_eq!(primary_key_name(&"t".repeat(70)).len(), 63);
    }
}
