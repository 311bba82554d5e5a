//! `CREATE SINK` and `DROP SINK`: a job that writes a query's changes to
//! an outside system through a connector (see the engine's sink delivery
//! for when and how often).

use datafusion::sql::sqlparser::ast::{ObjectName, Query, Statement};
use runnel_engine::runtime::{JobSpec, JobState};
use runnel_planner::catalog::SinkDef;

use super::{Session, StatementResult};
use crate::error::{ServerError, ServerResult};
use crate::streaming::plan_sink_job;

impl Session {
    pub(super) async fn create_sink(
        &mut self,
        name: &ObjectName,
        if_not_exists: bool,
        query: &Query,
        options: &std::collections::BTreeMap<String, String>,
        emit_on_window_close: bool,
    ) -> ServerResult<StatementResult> {
        const TAG: &str = "CREATE SINK";
        self.refuse_in_block(TAG)?;
        let name = self.resolve(name)?;
        if self.catalog().relation(&name).is_some() || self.catalog().sink(&name).is_some() {
            if if_not_exists {
                let mut result = StatementResult::command(TAG, None);
                result.notices.push((
                    "NOTICE",
                    format!("sink \"{}\" already exists, skipping", name.name),
                ));
                return Ok(result);
            }
            return Err(ServerError::DuplicateTable(name.name));
        }
        let statement = Statement::Query(Box::new(query.clone()));
        let sql = statement.to_string();
        let plan = self.plan(statement).await?;
        let depends_on = self.referenced_relations(&plan)?;
        let mut def = SinkDef {
            id: 0,
            name: name.clone(),
            sql,
            options: options.clone(),
            depends_on,
            search_schema: self.current_schema(),
            parallelism: self.parallelism(),
            emit_on_window_close,
        };
        let state = self.ctx.state();
        // Plan once before anything is written: a query the sink cannot
        // write, or options the connector refuses, change nothing.
        let checked = plan_sink_job(&self.db, &state, &plan, &def)?;
        runnel_connectors::Connectors::validate_sink(
            options,
            &checked.written,
            checked.key.as_deref(),
        )
        .map_err(|e| ServerError::from_connector(&format!("sink {name}"), e))?;
        let mut planned = None;
        let sink = self.catalog().create_sink(&name, |id| {
            def.id = id;
            planned = Some(plan_sink_job(&self.db, &state, &plan, &def)?);
            Ok(def)
        })?;
        let planned =
            planned.ok_or_else(|| ServerError::Internal("sink planned without a plan".into()))?;
        let started = async {
            {
                let _write = self.db.write_lock.lock().await;
                self.db
                    .runtime
                    .create_job(JobSpec {
                        id: sink.id,
                        graph: planned.graph,
                    })
                    .await?;
            }
            self.db.runtime.flush().await?;
            ServerResult::Ok(())
        };
        let failed = match started.await {
            Err(e) => Some(e),
            Ok(()) => match self.db.runtime.job_state(sink.id) {
                Some(JobState::Failed(error)) => Some(ServerError::JobFailed {
                    job: format!("sink {name}"),
                    error,
                }),
                _ => None,
            },
        };
        if let Some(error) = failed {
            let _ = self.db.runtime.drop_job(sink.id).await;
            let _ = self.catalog().drop_sink(&name);
            return Err(error);
        }
        Ok(StatementResult::command(TAG, None))
    }

    pub(super) async fn drop_sink(
        &mut self,
        name: &ObjectName,
        if_exists: bool,
    ) -> ServerResult<StatementResult> {
        const TAG: &str = "DROP SINK";
        self.refuse_in_block(TAG)?;
        let name = self.resolve(name)?;
        let Some(sink) = self.catalog().sink(&name) else {
            if if_exists {
                let mut result = StatementResult::command(TAG, None);
                result.notices.push((
                    "NOTICE",
                    format!("sink \"{}\" does not exist, skipping", name.name),
                ));
                return Ok(result);
            }
            return Err(ServerError::UndefinedObject(format!(
                "sink \"{}\" does not exist",
                name.name
            )));
        };
        self.db.runtime.drop_job(sink.id).await?;
        self.catalog().drop_sink(&name)?;
        Ok(StatementResult::command(TAG, None))
    }
}
