//! The streaming engine of Runnel: executing a `StreamGraph` of incremental
//! operators over changelog Arrow batches, with barriers and watermarks as
//! in-band messages (see DESIGN.md, "The contracts").
//!
//! Nothing streams yet: the foundation (issue 2) serves tables and batch
//! queries only. The operator trait, the task runtime and the exchanges land
//! here with the streaming core.
