//! Sources and sinks of Runnel behind the engine's reader and writer traits:
//! datagen and Nexmark, Kafka, files on object stores. One folder per
//! connector; none exists yet (they arrive with the streaming issues).
