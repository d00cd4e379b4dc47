//! The entra-sync service: configuration, the Graph client, the sync run, the state store and
//! the targets, the welcome-email outbox and the change feed. `main.rs` is the command line on top.

pub mod api;
pub mod bench;
pub mod changes;
pub mod clock;
pub mod config;
pub mod connections;
pub mod demo;
pub mod graph;
pub mod health;
pub mod live;
pub mod mail;
pub mod metrics;
pub mod microsoft;
pub mod progress;
pub mod schedule;
pub mod secrets;
pub mod serve;
pub mod store;
pub mod sync;
pub mod targeted;
pub mod targets;
pub mod ui;
