//! One sync run of one connection: fetch the users and groups delta rounds side by side, fold
//! them into the source snapshot, plan, apply in batches, then advance the snapshot and the
//! delta links together and record the run.

use std::collections::BTreeSet;
use std::time::Instant;

use entra_sync_core::delta::{GroupDelta, UserDelta};
use entra_sync_core::fold::{Touched, fold_groups, fold_users};
use entra_sync_core::guard::{self, ReadHealth};
use entra_sync_core::model::{EntraGroup, EntraId, EntraUser, IdList, Presence, SourceSnapshot};
use entra_sync_core::plan::{
    Conflict, Plan, PlanCounts, match_values, plan_after_read, plan_after_read_taking,
};
use entra_sync_core::policy::{MatchBy, Policy};
use entra_sync_core::scope::ScopeIndex;
use entra_sync_core::target::TargetState;
use serde::Serialize;

use crate::clock;
use crate::config::{Connection, SecretSource};
use crate::graph::{Credential, DeltaStart, GraphClient, GraphSettings};
use crate::mail::Welcome;
use crate::store::{
    ConnectionState, DeltaLinks, PlanState, RunEnd, RunMark, SourceUsersWriter, SourceWrite, Store,
    StoreError, Trigger,
};
use crate::targets::directory::Directory;
use crate::targets::{Target, TargetError};

/// The outcome recorded for the actions of a plan a guard stopped, until it is approved.
const AWAITING_APPROVAL: &str = "not applied: awaiting approval";

/// How many of `users` are present in Entra.
fn present_users<'a>(users: impl IntoIterator<Item = &'a EntraUser>) -> usize {
    users
        .into_iter()
        .filter(|user| user.presence == Presence::Present)
        .count()
}

/// How a run was asked for.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Read everything instead of continuing from the stored delta links.
    pub full: bool,
    /// Plan and record, apply nothing, advance nothing.
    pub dry_run: bool,
    pub trigger: Trigger,
}

/// Progress of a run, for progress bars and logs.
#[derive(Debug, Clone, Copy)]
pub enum ProgressEvent {
    /// Entries read from Graph so far.
    Fetched { users: u64, groups: u64, pages: u64 },
    /// The plan is ready.
    Planned { actions: u64 },
    /// Actions applied so far.
    Applied { done: u64, total: u64 },
}

/// The run summary of the `sync --json` contract.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run_id: i64,
    pub connection: String,
    /// `full` or `delta`; `approved` for the summary of `approve`.
    pub mode: &'static str,
    /// `succeeded`, `failed`, `blocked` (a safety guard stopped it; see `guards`) or `dry_run`.
    pub status: &'static str,
    #[serde(flatten)]
    pub counts: PlanCounts,
    pub graph_requests: u64,
    pub duration_ms: u64,
    /// The delta links were rejected (expired or reset) and the run fell back to a full round.
    pub delta_reset: bool,
    /// Actions the target refused; they are retried by the next run.
    pub failed_actions: usize,
    pub conflict_details: Vec<Conflict>,
    /// The safety guards that stopped the run (status `blocked`), each saying by how much.
    pub guards: Vec<String>,
    /// What the run could not do but did not fail for, such as Microsoft data the tenant refused.
    pub warnings: Vec<String>,
    /// Why the run failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The plan, for `--dry-run`.
    #[serde(skip)]
    pub plan: Option<Plan>,
}

impl RunSummary {
    /// The summary of a run just begun: succeeded until something says otherwise.
    pub(crate) fn begun(run_id: i64, connection: &str, mode: &'static str) -> RunSummary {
        RunSummary {
            run_id,
            connection: connection.to_owned(),
            mode,
            status: "succeeded",
            counts: PlanCounts::default(),
            graph_requests: 0,
            duration_ms: 0,
            delta_reset: false,
            failed_actions: 0,
            conflict_details: Vec::new(),
            guards: Vec::new(),
            warnings: Vec::new(),
            error: None,
            plan: None,
        }
    }

    /// Stores the plan a guard stopped, records its actions as awaiting approval, and marks the
    /// run `blocked`: nothing of it is applied.
    pub(crate) async fn hold_for_approval(
        &mut self,
        store: &Store,
        connection_id: i64,
        plan: Plan,
    ) -> Result<(), StoreError> {
        let outcomes = vec![Some(AWAITING_APPROVAL.to_owned()); plan.actions.len()];
        store
            .record_actions(self.run_id, 0, &plan.actions, &outcomes)
            .await?;
        store
            .store_plan(self.run_id, connection_id, &plan, &self.guards)
            .await?;
        self.status = "blocked";
        self.plan = Some(plan);
        Ok(())
    }

    /// Ends the run in the history with its status, counts, requests and duration; a failure
    /// after the run started is recorded there and in the summary (status `failed`), not returned.
    pub(crate) async fn record_end<E: std::fmt::Display>(
        &mut self,
        store: &Store,
        result: Result<(), E>,
        graph_requests: u64,
        started: Instant,
    ) -> Result<(), StoreError> {
        if let Err(error) = result {
            // The caller reports the failure; the history keeps it.
            tracing::info!(connection = %self.connection, run_id = self.run_id, %error, "sync run failed");
            self.status = "failed";
            self.error = Some(error.to_string());
        }
        self.graph_requests = graph_requests;
        self.duration_ms = started.elapsed().as_millis() as u64;
        let end = RunEnd {
            mode: self.mode,
            status: self.status,
            counts: Some(&self.counts),
            graph_requests: self.graph_requests,
            duration_ms: self.duration_ms,
            error: self.error.as_deref(),
            warnings: &self.warnings,
        };
        store.finish_run(self.run_id, &end, clock::now()).await
    }
}

/// A problem found before the run could start: the configuration needs fixing.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("connection {connection:?}: {message}")]
    Credential { connection: String, message: String },
    #[error(transparent)]
    Graph(#[from] crate::graph::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a started run failed; recorded in the history.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(transparent)]
    Graph(#[from] crate::graph::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("a task of the run stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Reads the connection's credential from where the config says it is.
pub fn resolve_credential(connection: &Connection) -> Result<Credential, SyncError> {
    let failure = |message: String| SyncError::Credential {
        connection: connection.name.clone(),
        message,
    };
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read_to_string(path)
            .map_err(|error| failure(format!("cannot read the {what} {}: {error}", path.display())))
    };
    match &connection.secret {
        SecretSource::Inline(secret) => Ok(Credential::Secret(secret.clone())),
        SecretSource::Env(name) => match std::env::var(name) {
            Ok(secret) if !secret.trim().is_empty() => Ok(Credential::Secret(secret.trim().to_owned())),
            _ => Err(failure(format!(
                "the environment variable {name} (client_secret_env) is not set: export it with the client secret's Value"
            ))),
        },
        SecretSource::File(path) => Ok(Credential::Secret(
            read(path, "client secret file")?.trim().to_owned(),
        )),
        SecretSource::Certificate {
            certificate_file,
            private_key_file,
        } => Ok(Credential::Certificate {
            certificate_pem: read(certificate_file, "certificate_file")?,
            private_key_pem: read(private_key_file, "private_key_file")?,
        }),
    }
}

/// A Graph client for a connection.
pub fn graph_client(connection: &Connection) -> Result<GraphClient, SyncError> {
    graph_client_with(connection, resolve_credential(connection)?)
}

/// A Graph client for a connection whose credential the caller already read.
pub fn graph_client_with(connection: &Connection, credential: Credential) -> Result<GraphClient, SyncError> {
    Ok(GraphClient::new(GraphSettings {
        authority_url: connection.authority_url.clone(),
        graph_url: connection.graph_url.clone(),
        tenant_id: connection.tenant_id.clone(),
        client_id: connection.client_id.clone(),
        credential,
    })?)
}

/// Runs one sync of `connection` and records it. A failure after the run started is reported in
/// the summary (status `failed`) and the history, not as `Err`.
pub async fn run(
    store: &Store,
    connection: &Connection,
    options: RunOptions,
    progress: &(dyn Fn(ProgressEvent) + Sync),
) -> Result<RunSummary, SyncError> {
    let started = Instant::now();
    let client = graph_client(connection)?;
    let state = store
        .connection_state(&connection.name, &connection.organization, clock::now())
        .await?;
    store.mark_interrupted_runs(state.id).await?;
    let want_full = options.full || state.users_delta_link.is_none() || state.groups_delta_link.is_none();
    let run_id = store
        .begin_run(state.id, options.trigger, mode_name(want_full), clock::now())
        .await?;
    let mut summary = RunSummary::begun(run_id, &connection.name, mode_name(want_full));
    let result = execute(
        store,
        connection,
        &client,
        &state,
        options,
        want_full,
        &mut summary,
        progress,
    )
    .await;
    summary
        .record_end(store, result, client.requests(), started)
        .await?;
    Ok(summary)
}

fn mode_name(full: bool) -> &'static str {
    if full { "full" } else { "delta" }
}

/// What the users and groups rounds brought.
struct Fetched {
    /// A full round folds users as pages arrive; a delta round keeps the entries until it knows
    /// whether anything changed at all.
    full_snapshot: Option<SourceSnapshot>,
    users: Vec<UserDelta>,
    groups: Vec<GroupDelta>,
    links: DeltaLinks,
    /// Why a round stopped short after pages had been read: the read is incomplete, its plan
    /// waits for approval and nothing advances.
    stopped: Option<crate::graph::Error>,
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    store: &Store,
    connection: &Connection,
    client: &GraphClient,
    state: &ConnectionState,
    options: RunOptions,
    want_full: bool,
    summary: &mut RunSummary,
    progress: &(dyn Fn(ProgressEvent) + Sync),
) -> Result<(), RunError> {
    let policy_json = serde_json::to_string(&connection.policy).unwrap_or_default();
    let mut full = want_full;
    let phase = Instant::now();
    let directory = Directory::new(store, state.organization_id)
        .with_welcome(Welcome::for_connection(connection, Some(summary.run_id)));
    let delta_reset = &mut summary.delta_reset;
    let fetching = async {
        loop {
            // A full round stores its users as they arrive; a dry run advances nothing.
            let writer = (full && !options.dry_run).then(|| SourceUsersWriter::start(store, state.id));
            let fetched = fetch(client, state, full, writer.as_ref(), progress).await;
            if let Some(writer) = writer {
                writer.finish().await?;
            }
            match fetched {
                Ok(fetched) => return Ok::<_, RunError>(fetched),
                Err(error) if !full && error.is_delta_reset() => {
                    tracing::warn!(connection = %connection.name, %error, "delta links rejected; reading everything again");
                    *delta_reset = true;
                    full = true;
                }
                Err(error) => return Err(error.into()),
            }
        }
    };
    // A full run plans against the whole directory: it is read while Graph is.
    let preloading = async {
        match want_full {
            true => Some(directory.load().await),
            false => None,
        }
    };
    let (fetched, preloaded) = tokio::join!(fetching, preloading);
    let fetched = fetched?;
    summary.mode = mode_name(full);
    tracing::debug!(
        elapsed_ms = phase.elapsed().as_millis() as u64,
        "fetched and folded the users round"
    );
    let mut touched = Touched::default();
    let (mut snapshot, target_state, users_read) = match fetched.full_snapshot {
        Some(mut snapshot) => {
            // Rebuilt from its sorted entries: a B-tree filled one user at a time leaves its
            // nodes between half and two thirds full, and a node slot holds a whole user.
            snapshot.users = std::mem::take(&mut snapshot.users).into_iter().collect();
            fold_groups(&mut snapshot, fetched.groups, &mut touched);
            let users_read = present_users(snapshot.users.values());
            let target_state = match preloaded {
                Some(loaded) => loaded?,
                None => directory.load().await?,
            };
            (snapshot, target_state, users_read)
        }
        None => {
            let policy_changed = state.applied_policy.as_deref() != Some(policy_json.as_str());
            if fetched.stopped.is_none()
                && fetched.users.is_empty()
                && fetched.groups.is_empty()
                && !state.needs_replan
                && !policy_changed
                && store.soft_deleted_user_count(state.organization_id).await? == 0
            {
                // Nothing changed in Entra or in the policy since the last run and no purge can
                // fall due: the plan would be empty, so skip loading the snapshot and the
                // directory (a no-change run costs a few milliseconds). Drift made by hand in the
                // directory is corrected by the next full run.
                summary.counts.unchanged = store.linked_user_count(state.organization_id).await? as usize;
                if !options.dry_run {
                    store
                        .commit_source(
                            state.id,
                            &SourceSnapshot::default(),
                            SourceWrite::Touched(&touched),
                            &fetched.links,
                            &RunMark::default(),
                            clock::now(),
                        )
                        .await?;
                } else {
                    summary.status = "dry_run";
                    summary.plan = Some(Plan::default());
                }
                return Ok(());
            }
            let phase = Instant::now();
            let partial = fetched.stopped.is_none()
                && !state.needs_replan
                && !policy_changed
                && state
                    .last_good_users
                    .is_some_and(|users| fetched.users.len() <= users / PARTIAL_READ_SHARE)
                && std::env::var(DELTA_READ_VAR).as_deref() != Ok("whole");
            let (snapshot, target_state, users_read) = if partial {
                read_reach(
                    store,
                    &directory,
                    state,
                    connection,
                    fetched.users,
                    fetched.groups,
                    &mut touched,
                )
                .await?
            } else {
                // The snapshot and the directory are independent reads: the snapshot is read and
                // decoded on another task (so another core) while this one loads the directory.
                let snapshot = tokio::spawn({
                    let store = store.clone();
                    let connection_id = state.id;
                    async move { store.load_snapshot(connection_id).await }
                });
                let target_state = directory.load().await;
                let (mut snapshot, target_state) = (snapshot.await??, target_state?);
                // Groups first: a user removed in the users round also leaves every group.
                fold_groups(&mut snapshot, fetched.groups, &mut touched);
                fold_users(&mut snapshot, fetched.users, &mut touched);
                let users_read = present_users(snapshot.users.values());
                (snapshot, target_state, users_read)
            };
            tracing::debug!(
                elapsed_ms = phase.elapsed().as_millis() as u64,
                users = target_state.users.len(),
                settled = target_state.settled.linked_users,
                "loaded the snapshot and the directory"
            );
            (snapshot, target_state, users_read)
        }
    };
    let phase = Instant::now();
    let read = ReadHealth {
        full_round: full,
        delta_reset: summary.delta_reset,
        complete: fetched.stopped.is_none(),
        users_read,
    };
    // A full round's users are stored already and its commit needs only their ids: the planner
    // takes the users and lets go of each once it is planned, so that they and the plan's copy
    // of their text are never both whole (about half a gigabyte less at a million new users).
    let (plan, read_users) = if full {
        let users = std::mem::take(&mut snapshot.users);
        let (groups, policy) = (&snapshot.groups, &connection.policy);
        plan_after_read_taking(users, groups, &target_state, policy, &read, clock::now())
    } else {
        let plan = plan_after_read(&snapshot, &target_state, &connection.policy, &read, clock::now());
        (plan, IdList::default())
    };
    summary.counts = plan.counts();
    summary.conflict_details = plan.conflicts.clone();
    tracing::debug!(
        elapsed_ms = phase.elapsed().as_millis() as u64,
        actions = plan.actions.len(),
        "planned"
    );
    progress(ProgressEvent::Planned {
        actions: plan.actions.len() as u64,
    });
    store.record_conflicts(summary.run_id, &plan.conflicts).await?;
    let verdict = guard::check(
        &plan,
        &read,
        &target_state,
        state.last_good_users,
        &connection.policy,
    );
    // Not read again: the apply works from the plan.
    drop(target_state);
    summary.guards = verdict
        .tripped
        .iter()
        .map(|tripped| match (&fetched.stopped, tripped.guard) {
            (Some(error), guard::Guard::IncompleteRead) => format!("{}: {error}", tripped.message),
            _ => tripped.message.clone(),
        })
        .collect();
    // Every incomplete read trips a guard, so from here on the read reached both delta links.
    if verdict.blocked() && !options.dry_run {
        summary.hold_for_approval(store, state.id, plan).await?;
        return Ok(());
    }
    if options.dry_run {
        let outcomes = vec![None; plan.actions.len()];
        store
            .record_actions(summary.run_id, 0, &plan.actions, &outcomes)
            .await?;
        summary.status = "dry_run";
        summary.plan = Some(plan);
        return Ok(());
    }
    let total = plan.actions.len() as u64;
    let phase = Instant::now();
    summary.failed_actions = directory
        .apply_plan(plan.actions, summary.run_id, |done| {
            progress(ProgressEvent::Applied {
                done: done as u64,
                total,
            })
        })
        .await?;
    tracing::debug!(
        elapsed_ms = phase.elapsed().as_millis() as u64,
        "applied and recorded the plan"
    );
    let phase = Instant::now();
    let write = if full {
        SourceWrite::WholeRead(&read_users)
    } else {
        SourceWrite::Touched(&touched)
    };
    store
        .commit_source(
            state.id,
            &snapshot,
            write,
            &fetched.links,
            &RunMark {
                needs_replan: summary.failed_actions > 0,
                present_users: Some(read.users_read),
                policy: Some(policy_json),
            },
            clock::now(),
        )
        .await?;
    store.checkpoint_in_background();
    tracing::debug!(
        elapsed_ms = phase.elapsed().as_millis() as u64,
        "committed the snapshot and delta links"
    );
    // After the commit: these slow, throttled reads never hold back what the run applied.
    if full && connection.microsoft_data {
        summary.warnings = crate::microsoft::refresh(store, client, state.id).await?;
    }
    Ok(())
}

/// Set to `whole`, every delta run reads the whole snapshot and directory instead of what its
/// changes can reach: to compare the two plans, or to rule the partial read out.
const DELTA_READ_VAR: &str = "ENTRA_SYNC_DELTA_READ";

/// A delta run reads only what its changes can reach while the users round names at most one in
/// this many of the last good read's users; beyond that, reading everything costs about as much.
const PARTIAL_READ_SHARE: usize = 4;

/// Reads what a delta run's plan can reach, folds the rounds into it, and counts the users the
/// whole snapshot holds present (for the source-drop guard). The snapshot holds every group and
/// the users the plan can reach; the directory those users (see [`Directory::load_reach`]).
/// Reached are: the users the users round names, those the groups round moves in or out of a
/// group (all the members of a group it deletes or restores), those whose scope by groups it
/// changes, every user not linked yet (a newcomer, or one put aside), every soft-deleted one (a
/// purge may fall due) and every linked user holding a newcomer's match key. Every other
/// user is as the last run left it (runs whose actions failed, and policy changes, read
/// everything), so the plan is the whole read's plan (`Settled`).
async fn read_reach(
    store: &Store,
    directory: &Directory,
    state: &ConnectionState,
    connection: &Connection,
    users: Vec<UserDelta>,
    groups: Vec<GroupDelta>,
    touched: &mut Touched,
) -> Result<(SourceSnapshot, TargetState, usize), StoreError> {
    let (stored_groups, soft_deleted, unlinked, present, linked) = tokio::try_join!(
        store.load_source_groups(state.id),
        directory.soft_deleted_entra_ids(),
        store.unlinked_source_users(state.id, state.organization_id),
        store.present_source_users(state.id),
        store.linked_user_count(state.organization_id),
    )?;
    let mut snapshot = SourceSnapshot {
        users: Default::default(),
        groups: stored_groups
            .into_iter()
            .map(|group| (group.id.clone(), group))
            .collect(),
    };
    let groups_before: Vec<(EntraId, Option<EntraGroup>)> = groups
        .iter()
        .map(|entry| (entry.id.clone(), snapshot.groups.get(&entry.id).cloned()))
        .collect();
    let policy = &connection.policy;
    let scope_before = (!policy.scope.groups.is_empty()).then(|| ScopeGroups::of(policy, &snapshot));
    let mut reach: BTreeSet<EntraId> = users
        .iter()
        .map(|entry| entry.id.clone())
        .filter(|id| !id.is_empty())
        .collect();
    // Groups first: a user removed in the users round also leaves every group.
    fold_groups(&mut snapshot, groups, touched);
    for (id, before) in &groups_before {
        let Some(after) = snapshot.groups.get(id) else {
            continue;
        };
        match before {
            // A group that comes or goes (a restore, a deletion) takes all its members with it.
            Some(before) if before.presence == after.presence => {
                reach.extend(
                    before
                        .member_users
                        .symmetric_difference(&after.member_users)
                        .cloned(),
                );
            }
            Some(before) => reach.extend(before.member_users.union(&after.member_users).cloned()),
            None => reach.extend(after.member_users.iter().cloned()),
        }
    }
    // A scope by groups can change for users whose own groups did not: a nested group added, a
    // group renamed into or out of the scope's names. Those users, and every member of a group
    // the scope starts or stops naming (`groups_to_sync = "scoped"` imports its memberships),
    // are reached.
    if let Some(before) = scope_before {
        let after = ScopeGroups::of(policy, &snapshot);
        reach.extend(before.members.symmetric_difference(&after.members).cloned());
        for group in before.named.symmetric_difference(&after.named) {
            if let Some(group) = snapshot.groups.get(group) {
                reach.extend(group.member_users.iter().cloned());
            }
        }
    }
    reach.extend(soft_deleted);
    reach.extend(unlinked);
    let ids: Vec<EntraId> = reach.iter().cloned().collect();
    let stored = store.load_source_users_of(state.id, &ids).await?;
    let mut present_before = present_users(&stored);
    snapshot.users = stored.into_iter().map(|user| (user.id.clone(), user)).collect();
    fold_users(&mut snapshot, users, touched);
    let values: BTreeSet<String> = snapshot
        .users
        .values()
        .flat_map(|user| match_values(user, policy))
        .collect();
    let values: Vec<String> = values.into_iter().collect();
    let by_upn = policy.match_existing_by.contains(&MatchBy::Upn);
    let target = directory
        .load_reach(&ids, &values, by_upn, linked as usize)
        .await?;
    // A linked user found by a match key is planned with its Entra data, as every user read is.
    let found: Vec<EntraId> = target
        .users
        .iter()
        .filter_map(|user| user.entra_id.clone())
        .filter(|id| !reach.contains(id))
        .collect();
    if !found.is_empty() {
        let stored = store.load_source_users_of(state.id, &found).await?;
        present_before += present_users(&stored);
        snapshot
            .users
            .extend(stored.into_iter().map(|user| (user.id.clone(), user)));
    }
    let users_read = (present + present_users(snapshot.users.values())).saturating_sub(present_before);
    Ok((snapshot, target, users_read))
}

/// What a scope by groups selects: the users its groups hold and the groups it names.
struct ScopeGroups {
    members: BTreeSet<EntraId>,
    named: BTreeSet<EntraId>,
}

impl ScopeGroups {
    fn of(policy: &Policy, snapshot: &SourceSnapshot) -> ScopeGroups {
        let index = ScopeIndex::new(&policy.scope, &snapshot.groups);
        ScopeGroups {
            members: index.group_members().iter().map(|id| (*id).to_owned()).collect(),
            named: index.named_groups().iter().map(|id| (*id).to_owned()).collect(),
        }
    }
}

/// Reads the users and groups rounds side by side.
async fn fetch(
    client: &GraphClient,
    state: &ConnectionState,
    full: bool,
    writer: Option<&SourceUsersWriter>,
    progress: &(dyn Fn(ProgressEvent) + Sync),
) -> Result<Fetched, crate::graph::Error> {
    let start = |link: &Option<String>| match (full, link) {
        (false, Some(link)) => DeltaStart::From(link.clone()),
        _ => DeltaStart::Full,
    };
    let counters = Counters::default();
    let mut full_snapshot = full.then(SourceSnapshot::default);
    let mut touched = Touched::default();
    let mut users = Vec::new();
    let mut groups = Vec::new();
    let users_round = client.users_delta(start(&state.users_delta_link), |page| {
        counters.add_users(page.len() as u64, progress);
        match &mut full_snapshot {
            Some(snapshot) => {
                let ids: Vec<EntraId> = writer
                    .map(|_| page.iter().map(|entry| entry.id.clone()).collect())
                    .unwrap_or_default();
                fold_users(snapshot, page, &mut touched);
                if let Some(writer) = writer {
                    writer.write(
                        ids.iter()
                            .filter_map(|id| snapshot.users.get(id))
                            .cloned()
                            .collect(),
                    );
                }
            }
            None => users.extend(page),
        }
    });
    let groups_round = client.groups_delta(start(&state.groups_delta_link), |page| {
        counters.add_groups(page.len() as u64, progress);
        groups.extend(page);
    });
    let (users_end, groups_end) = tokio::join!(users_round, groups_round);
    let (links, stopped) = match (users_end, groups_end) {
        (Ok(users_end), Ok(groups_end)) => (
            DeltaLinks {
                users: Some(users_end.delta_link),
                groups: Some(groups_end.delta_link),
            },
            None,
        ),
        (Err(error), _) | (_, Err(error)) => {
            // A reset needs a full round, and a read that got no page at all (wrong secret,
            // unreachable host) has nothing to plan from: both end the attempt. A round that
            // fails after pages arrived leaves an incomplete read, planned and held for approval.
            let pages = counters.pages.load(std::sync::atomic::Ordering::Relaxed);
            if error.is_delta_reset() || pages == 0 {
                return Err(error);
            }
            tracing::warn!(pages, %error, "a round stopped short; the read is incomplete");
            (DeltaLinks::default(), Some(error))
        }
    };
    Ok(Fetched {
        full_snapshot,
        users,
        groups,
        links,
        stopped,
    })
}

/// Entries and pages read, shared by the two rounds for progress reports.
#[derive(Default)]
struct Counters {
    users: std::sync::atomic::AtomicU64,
    groups: std::sync::atomic::AtomicU64,
    pages: std::sync::atomic::AtomicU64,
}

impl Counters {
    fn add_users(&self, entries: u64, progress: &(dyn Fn(ProgressEvent) + Sync)) {
        self.users
            .fetch_add(entries, std::sync::atomic::Ordering::Relaxed);
        self.report(progress);
    }

    fn add_groups(&self, entries: u64, progress: &(dyn Fn(ProgressEvent) + Sync)) {
        self.groups
            .fetch_add(entries, std::sync::atomic::Ordering::Relaxed);
        self.report(progress);
    }

    fn report(&self, progress: &(dyn Fn(ProgressEvent) + Sync)) {
        use std::sync::atomic::Ordering::Relaxed;
        let pages = self.pages.fetch_add(1, Relaxed) + 1;
        progress(ProgressEvent::Fetched {
            users: self.users.load(Relaxed),
            groups: self.groups.load(Relaxed),
            pages,
        });
    }
}

/// Why a stored plan cannot be approved.
#[derive(Debug, thiserror::Error)]
pub enum ApproveError {
    #[error("run {0} has no plan awaiting approval: `entra-sync history` shows blocked runs")]
    NoPlan(i64),
    #[error("the plan of run {0} was already approved and applied")]
    AlreadyApplied(i64),
    #[error("the plan of run {0} was discarded: run `entra-sync sync` for a fresh plan")]
    Discarded(i64),
    #[error(
        "the source moved on since run {run}: run {later} synced connection {connection:?} after it, so its plan is stale; run `entra-sync sync` for a fresh plan"
    )]
    Stale {
        run: i64,
        later: i64,
        connection: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Target(#[from] TargetError),
}

impl ApproveError {
    /// Whether the user asked for something that cannot be (exit code 2) rather than a failure.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ApproveError::NoPlan(_) | ApproveError::AlreadyApplied(_) | ApproveError::Discarded(_)
        )
    }
}

/// Applies exactly the plan a guard stopped in run `run_id`. It refuses when a later run of the
/// connection succeeded, because that run read a newer source and the stored plan may undo it.
/// The delta links are not advanced: the next run reads the same changes again and, the plan
/// being applied, finds nothing left to do. `connections` are the config's, for the welcome
/// emails of the users the plan creates.
pub async fn approve(
    store: &Store,
    run_id: i64,
    connections: &[Connection],
) -> Result<RunSummary, ApproveError> {
    let started = Instant::now();
    let stored = store
        .stored_plan(run_id)
        .await?
        .ok_or(ApproveError::NoPlan(run_id))?;
    match stored.state {
        PlanState::Awaiting => {}
        PlanState::Applied => return Err(ApproveError::AlreadyApplied(run_id)),
        PlanState::Discarded => return Err(ApproveError::Discarded(run_id)),
    }
    if let Some(later) = stored.later_run {
        return Err(ApproveError::Stale {
            run: run_id,
            later,
            connection: stored.connection,
        });
    }
    let welcome = connections
        .iter()
        .find(|connection| connection.name == stored.connection)
        .and_then(|connection| Welcome::for_connection(connection, Some(run_id)));
    let directory = Directory::new(store, stored.organization_id).with_welcome(welcome);
    directory.load().await?;
    let counts = stored.plan.counts();
    let failed_actions = directory.apply_plan(stored.plan.actions, run_id, |_| {}).await?;
    store.mark_approved(run_id, clock::now()).await?;
    Ok(RunSummary {
        run_id,
        connection: stored.connection,
        mode: "approved",
        status: "succeeded",
        counts,
        graph_requests: 0,
        duration_ms: started.elapsed().as_millis() as u64,
        delta_reset: false,
        failed_actions,
        conflict_details: stored.plan.conflicts,
        guards: Vec::new(),
        warnings: Vec::new(),
        error: None,
        plan: None,
    })
}
