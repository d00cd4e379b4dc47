//! The entra-sync service: configuration, the Graph client, the sync run, the state store and
//! the targets. `main.rs` is the command line on top.

pub mod api;
pub mod bench;
pub mod clock;
pub mod config;
pub mod demo;
pub mod graph;
pub mod live;
pub mod metrics;
pub mod progress;
pub mod schedule;
pub mod serve;
pub mod store;
pub mod sync;
pub mod targets;
pub mod ui;
