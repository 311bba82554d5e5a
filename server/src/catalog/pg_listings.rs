//! `pg_views`, `pg_matviews`, `pg_roles`, `pg_user` and `pg_settings`
//! with Runnel's views, its one role and the session's settings (see
//! [`super::pg_overrides`]).

use datafusion::arrow::array::RecordBatch;
use datafusion::error::Result;

use super::pg_objects::{OWNER_NAME, OWNER_OID};
use super::pg_overrides::CorrectedTable;
use super::pg_rows::{boolean, int4, null, text};

/// What Postgres shows for a password to those who may not read it.
const HIDDEN_PASSWORD: &str = "********";

/// One setting of a session, as `pg_settings` lists it.
#[derive(Debug, Clone)]
pub struct ListedSetting {
    pub name: String,
    pub value: String,
    pub default: String,
    pub read_only: bool,
}

/// The session's settings, which the session keeps in its DataFusion
/// configuration for `pg_settings` to read.
#[derive(Debug, Default)]
pub struct SessionSettings(pub Vec<ListedSetting>);

impl datafusion::config::ConfigExtension for SessionSettings {
    const PREFIX: &'static str = "runnel_session_settings";
}

impl datafusion::config::ExtensionOptions for SessionSettings {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn cloned(&self) -> Box<dyn datafusion::config::ExtensionOptions> {
        Box::new(SessionSettings(self.0.clone()))
    }

    fn set(&mut self, key: &str, _value: &str) -> datafusion::error::Result<()> {
        Err(datafusion::error::DataFusionError::Configuration(format!(
            "{key} is set with SET, not through the configuration"
        )))
    }

    fn entries(&self) -> Vec<datafusion::config::ConfigEntry> {
        vec![]
    }
}

impl CorrectedTable {
    /// `pg_settings`: the session's settings (read-only ones as
    /// `internal`, the rest as `user`).
    pub(super) fn setting_rows(
        &self,
        state: &dyn datafusion::catalog::Session,
    ) -> Result<Vec<RecordBatch>> {
        let mut rows = self.new_rows();
        if let Some(settings) = state.config().options().extensions.get::<SessionSettings>() {
            for setting in &settings.0 {
                let changed = setting.value != setting.default;
                rows.push(vec![
                    ("name", text(setting.name.clone())),
                    ("setting", text(setting.value.clone())),
                    ("category", text("Runnel")),
                    ("short_desc", text("")),
                    (
                        "context",
                        text(if setting.read_only {
                            "internal"
                        } else {
                            "user"
                        }),
                    ),
                    ("vartype", text("string")),
                    ("source", text(if changed { "session" } else { "default" })),
                    ("reset_val", text(setting.default.clone())),
                    ("pending_restart", boolean(false)),
                ])?;
            }
        }
        Ok(vec![rows.finish()?])
    }

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
