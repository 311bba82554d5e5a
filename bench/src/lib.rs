//! The Nexmark benchmark harness of Runnel (arrives with the streaming core):
//! events per second per core and peak memory, beside DataFusion's batch
//! execution of the same query over the same events.
