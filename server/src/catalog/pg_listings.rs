//! `pg_views`, `pg_matviews`, `pg_roles` and `pg_user` with Runnel's
//! views and its one role (see [`super::pg_overrides`]).

use datafusion::arrow::array::RecordBatch;
use datafusion::error::Result;

use super::pg_objects::{OWNER_NAME, OWNER_OID};
use super::pg_overrides::CorrectedTable;
use super::pg_rows::{boolean, int4, null, text};

/// What Postgres shows for a password to those who may not read it.
const HIDDEN_PASSWORD: &str = "********";

impl CorrectedTable {
    /// `pg_views` (`materialized` false) or `pg_matviews`.
    pub(super) fn view_rows(&self, materialized: bool) -> Result<Vec<RecordBatch>> {
        let mut rows = self.new_rows();
        let mut views = self.catalog.views();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        for view in views.iter().filter(|v| v.is_materialized() == materialized) {
            let schema = text(view.name.schema.clone());
            let name = text(view.name.name.clone());
            let definition = text(view.sql.clone());
            rows.push(if materialized {
                vec![
                    ("schemaname", schema),
                    ("matviewname", name),
                    ("matviewowner", text(OWNER_NAME)),
                    ("tablespace", null()),
                    ("hasindexes", boolean(false)),
                    ("ispopulated", boolean(true)),
                    ("definition", definition),
                ]
            } else {
                vec![
                    ("schemaname", schema),
                    ("viewname", name),
                    ("viewowner", text(OWNER_NAME)),
                    ("definition", definition),
                ]
            })?;
        }
        Ok(vec![rows.finish()?])
    }

    /// `pg_roles`: the superuser that owns everything (the only role
    /// until roles exist; every login acts as it).
    pub(super) fn role_rows(&self) -> Result<Vec<RecordBatch>> {
        let mut rows = self.new_rows();
        rows.push(vec![
            ("rolname", text(OWNER_NAME)),
            ("rolsuper", boolean(true)),
            ("rolinherit", boolean(true)),
            ("rolcreaterole", boolean(true)),
            ("rolcreatedb", boolean(true)),
            ("rolcanlogin", boolean(true)),
            ("rolreplication", boolean(true)),
            ("rolconnlimit", int4(-1)),
            ("rolpassword", text(HIDDEN_PASSWORD)),
            ("rolbypassrls", boolean(true)),
            ("oid", int4(OWNER_OID)),
        ])?;
        Ok(vec![rows.finish()?])
    }

    /// `pg_user`: the same role as a user.
    pub(super) fn user_rows(&self) -> Result<Vec<RecordBatch>> {
        let mut rows = self.new_rows();
        rows.push(vec![
            ("usename", text(OWNER_NAME)),
            ("usesysid", int4(OWNER_OID)),
            ("usecreatedb", boolean(true)),
            ("usesuper", boolean(true)),
            ("userepl", boolean(true)),
            ("usebypassrls", boolean(true)),
            ("passwd", text(HIDDEN_PASSWORD)),
        ])?;
        Ok(vec![rows.finish()?])
    }
}
