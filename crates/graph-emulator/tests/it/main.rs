//! Acceptance tests of the Graph emulator, each against a server started on loopback.
#![allow(clippy::unwrap_used)]

mod application;
mod batch;
mod collections;
mod control;
mod delta;
mod reports;
mod shapes;
mod support;
mod tenant;
mod throttle;
mod token;
