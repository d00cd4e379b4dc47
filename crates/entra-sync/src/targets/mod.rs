//! Targets: where a plan is applied. Each target is a folder; the embedded directory is the
//! first (SCIM, webhooks and PostgreSQL come later, each behind the same trait).

pub mod directory;

use std::future::Future;

use chrono::{DateTime, Utc};
use entra_sync_core::plan::Action;
use entra_sync_core::target::TargetState;

use crate::store::StoreError;

/// A target failure that stops the batch (a per-action problem is an outcome instead).
#[derive(Debug, thiserror::Error)]
#[error("target {target}: {source}")]
pub struct TargetError {
    pub target: &'static str,
    #[source]
    pub source: StoreError,
}

/// The outcome of one action: `None` when applied, else why not.
pub type Outcome = Option<String>;

/// Something a plan can be applied to.
pub trait Target: Send + Sync {
    /// The target's current state, as the planner needs it.
    fn load(&self) -> impl Future<Output = Result<TargetState, TargetError>> + Send;

    /// Applies actions in order, idempotently, and reports one outcome per action.
    fn apply(
        &self,
        actions: &[Action],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<Outcome>, TargetError>> + Send;
}
