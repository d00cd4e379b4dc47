//! The one integration-test binary of entra-sync: topic modules share the harness in `support`.
//! Every test is hermetic: an emulated tenant on 127.0.0.1, a temp data folder, the real binary.
#![allow(clippy::unwrap_used)]

mod browser;
mod cli;
mod feed;
mod graph;
mod guards;
mod mail;
mod microsoft;
mod serve;
mod support;
mod sync;
mod ui;
