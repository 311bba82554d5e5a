//! Sources and sinks of Runnel behind the engine's connector traits
//! ([`runnel_engine::runtime::connector`]). Here so far: `datagen` (rows
//! from per-column sequence and random generators), `nexmark` (the
//! Nexmark person, auction and bid events, deterministic from a seed) and
//! `file` (the lines of a local text file): these address rows by position,
//! so a restart resumes exactly where the last committed epoch ended; and
//! `socket` (lines from a TCP server, at most once).

mod datagen;
mod lines;
mod nexmark;
mod options;
mod random;

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::SchemaRef;
use runnel_engine::runtime::connector::{ConnectorFactory, RowGenerator};
use runnel_engine::{EngineError, EngineResult};

pub use nexmark::{NexmarkGenerator, NexmarkTable};
pub use options::ConnectorError;

/// Every connector this build knows.
#[derive(Debug, Default)]
pub struct Connectors;

impl Connectors {
    /// Checks a source definition without opening it (CREATE SOURCE).
    pub fn validate(
        options: &BTreeMap<String, String>,
        schema: &SchemaRef,
    ) -> Result<(), ConnectorError> {
        open(options, schema).map(|_| ())
    }
}

fn open(
    options: &BTreeMap<String, String>,
    schema: &SchemaRef,
) -> Result<Box<dyn RowGenerator>, ConnectorError> {
    let mut options = options::Options::new(options);
    let connector = options.required("connector")?;
    let generator: Box<dyn RowGenerator> = match connector.to_ascii_lowercase().as_str() {
        "datagen" => Box::new(datagen::DatagenGenerator::new(&mut options, schema)?),
        "nexmark" => Box::new(NexmarkGenerator::from_options(&mut options, schema)?),
        "file" => Box::new(lines::FileLines::new(&mut options, schema)?),
        "socket" => Box::new(lines::SocketLines::new(&mut options, schema)?),
        other => {
            return Err(ConnectorError::Unsupported(format!(
                "connector '{other}' (known: datagen, nexmark, file, socket)"
            )));
        }
    };
    options.finish()?;
    Ok(generator)
}

impl ConnectorFactory for Connectors {
    fn open(
        &self,
        options: &BTreeMap<String, String>,
        schema: &SchemaRef,
    ) -> EngineResult<Box<dyn RowGenerator>> {
        // The schema the engine passes ends in the hidden row position.
        let declared = schema.fields().len().saturating_sub(1);
        let declared = std::sync::Arc::new(
            schema
                .project(&(0..declared).collect::<Vec<_>>())
                .map_err(EngineError::from)?,
        );
        open(options, &declared).map_err(|e| EngineError::Internal(e.to_string()))
    }
}
