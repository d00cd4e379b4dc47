//! The pure core of entra-sync: the source model, delta folding, mapping and planning.
//!
//! Architecture Invariant: this crate does no I/O, reads no clock and cannot fail. Time comes in
//! as a parameter, problems come out as data (`Plan::conflicts`), never as `Err`. CI proves the
//! dependency tree holds no tokio, reqwest or sqlx.

pub mod assign;
pub mod attributes;
pub mod delta;
pub mod explain;
pub mod fold;
pub mod guard;
pub mod map;
pub mod model;
pub mod narrow;
mod packed;
pub mod plan;
pub mod policy;
pub mod scope;
pub mod target;
