//! The safety guards: a pure verdict on a plan before it is applied. A tripped guard means the
//! run stores its plan as awaiting approval and applies nothing.
//!
//! Two kinds of guard: the read-health guard (after a read that may have missed users, nothing
//! may be removed at all) and the limits of `[connections.guards]` (too much removed at once).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::plan::{Action, Plan};
use crate::policy::Policy;
use crate::target::TargetState;

/// How the read that fed the plan went, as the service saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadHealth {
    /// The read was a full round (first run, or after a delta reset): the snapshot holds exactly
    /// what it read.
    pub full_round: bool,
    /// Graph reset the delta links (410) during this read.
    pub delta_reset: bool,
    /// Every page was read; `false` when a page failed and the read stopped short.
    pub complete: bool,
    /// Users present in the source snapshot after the read.
    pub users_read: usize,
}

/// A guard that can stop a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guard {
    /// The read stopped short (a page failed).
    IncompleteRead,
    /// Graph reset the delta links: the whole tenant was re-read.
    DeltaReset,
    /// The read returned no users at all.
    NoUsers,
    /// The read returned too many users fewer than the last good read (`max_source_drop_percent`).
    MaxSourceDropPercent,
    /// Too many deprovisions in one run (`max_deprovisions`).
    MaxDeprovisions,
    /// Too many deprovisions for the number of linked users (`max_deprovision_percent`).
    MaxDeprovisionPercent,
    /// Too many membership removals for the memberships the sync made
    /// (`max_membership_removals_percent`).
    MaxMembershipRemovalsPercent,
}

/// One tripped guard: which one, and by how much.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tripped {
    pub guard: Guard,
    pub message: String,
}

/// The guards' verdict on one plan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardVerdict {
    /// Empty when the plan may be applied.
    pub tripped: Vec<Tripped>,
    /// Disables, soft-deletes and deletes the plan holds.
    pub deprovisions: usize,
    /// Membership removals the plan holds.
    pub membership_removals: usize,
}

impl GuardVerdict {
    /// Whether the plan must wait for approval instead of being applied.
    pub fn blocked(&self) -> bool {
        !self.tripped.is_empty()
    }
}

/// Checks a plan against the read it came from and the policy's limits.
///
/// - Read health: after a read that was incomplete, a delta reset, returned zero users, or lost
///   more than `max_source_drop_percent` against `last_good_source_users`, the plan may remove
///   nothing: any deprovision (disable, soft-delete, delete), membership removal, group or
///   department deletion trips the guard. A plan that only adds and updates proceeds, except
///   after an incomplete read: without the rounds' delta links the run cannot finish, so its
///   plan always waits for approval (and a later run reads the same changes again).
/// - Limits: more deprovisions than `max_deprovisions`, or more than `max_deprovision_percent`
///   of the linked users, or membership removals beyond `max_membership_removals_percent` of the
///   memberships the sync made. A limit is exceeded when the count is strictly greater.
///
/// Purges are not deprovisions: they finish a soft-delete whose retention is over.
pub fn check(
    plan: &Plan,
    read: &ReadHealth,
    target: &TargetState,
    last_good_source_users: Option<usize>,
    policy: &Policy,
) -> GuardVerdict {
    let guards = &policy.guards;
    let mut verdict = GuardVerdict::default();
    let mut deletions = 0;
    for action in &plan.actions {
        match action {
            Action::DisableUser { .. } | Action::SoftDeleteUser { .. } | Action::DeleteUser { .. } => {
                verdict.deprovisions += 1;
            }
            Action::RemoveMembership { .. } => verdict.membership_removals += 1,
            Action::DeleteGroup { .. } | Action::DeleteDepartment { .. } => deletions += 1,
            _ => {}
        }
    }
    let removals = verdict.deprovisions + verdict.membership_removals + deletions;
    let held_back = format!(
        "{} deprovisions, {} membership removals and {deletions} group or department deletions held back",
        verdict.deprovisions, verdict.membership_removals
    );
    if !read.complete {
        verdict.tripped.push(Tripped {
            guard: Guard::IncompleteRead,
            message: format!(
                "{}: the read stopped short (a page failed); {held_back}",
                Guard::IncompleteRead.as_str()
            ),
        });
    }
    let mut unhealthy: Vec<(Guard, String)> = Vec::new();
    if read.delta_reset {
        unhealthy.push((
            Guard::DeltaReset,
            "Graph reset the delta links and the tenant was read again".to_owned(),
        ));
    }
    if read.users_read == 0 {
        unhealthy.push((Guard::NoUsers, "the read returned no users".to_owned()));
    } else if let Some(last) = last_good_source_users.filter(|&last| last > read.users_read) {
        let drop = percent(last - read.users_read, last);
        if drop > f64::from(guards.max_source_drop_percent) {
            unhealthy.push((
                Guard::MaxSourceDropPercent,
                format!(
                    "the read returned {} users against {last} in the last good read, a drop of {drop:.0}% over the limit of {}%",
                    read.users_read, guards.max_source_drop_percent
                ),
            ));
        }
    }
    if removals > 0 {
        for (guard, what) in unhealthy {
            verdict.tripped.push(Tripped {
                guard,
                message: format!("{}: {what}; {held_back}", guard.as_str()),
            });
        }
    }
    if verdict.deprovisions > guards.max_deprovisions {
        verdict.tripped.push(Tripped {
            guard: Guard::MaxDeprovisions,
            message: format!(
                "{}: {} deprovisions, {} over the limit of {}",
                Guard::MaxDeprovisions.as_str(),
                verdict.deprovisions,
                verdict.deprovisions - guards.max_deprovisions,
                guards.max_deprovisions
            ),
        });
    }
    let linked =
        target.users.iter().filter(|user| user.entra_id.is_some()).count() + target.settled.linked_users;
    let deprovision_percent = percent(verdict.deprovisions, linked);
    if verdict.deprovisions > 0 && deprovision_percent > f64::from(guards.max_deprovision_percent) {
        verdict.tripped.push(Tripped {
            guard: Guard::MaxDeprovisionPercent,
            message: format!(
                "{}: {} of {linked} linked users ({deprovision_percent:.0}%), over the limit of {}%",
                Guard::MaxDeprovisionPercent.as_str(),
                verdict.deprovisions,
                guards.max_deprovision_percent
            ),
        });
    }
    let memberships = target.memberships.len() + target.settled.memberships;
    let removal_percent = percent(verdict.membership_removals, memberships);
    if verdict.membership_removals > 0 && removal_percent > f64::from(guards.max_membership_removals_percent)
    {
        verdict.tripped.push(Tripped {
            guard: Guard::MaxMembershipRemovalsPercent,
            message: format!(
                "{}: {} of {memberships} memberships ({removal_percent:.0}%), over the limit of {}%",
                Guard::MaxMembershipRemovalsPercent.as_str(),
                verdict.membership_removals,
                guards.max_membership_removals_percent
            ),
        });
    }
    verdict
}

/// `part` as a percentage of `whole`; everything is 100% of nothing.
fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        return 100.0;
    }
    part as f64 * 100.0 / whole as f64
}

impl Guard {
    /// The guard's name as the config file and the history write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Guard::IncompleteRead => "read_health (incomplete read)",
            Guard::DeltaReset => "read_health (delta reset)",
            Guard::NoUsers => "read_health (no users)",
            Guard::MaxSourceDropPercent => "max_source_drop_percent",
            Guard::MaxDeprovisions => "max_deprovisions",
            Guard::MaxDeprovisionPercent => "max_deprovision_percent",
            Guard::MaxMembershipRemovalsPercent => "max_membership_removals_percent",
        }
    }
}

impl fmt::Display for GuardVerdict {
    /// One line per tripped guard, or that the plan may proceed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tripped.is_empty() {
            return writeln!(
                f,
                "guards passed: {} deprovisions, {} membership removals",
                self.deprovisions, self.membership_removals
            );
        }
        for tripped in &self.tripped {
            writeln!(f, "guard {}", tripped.message)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;
    use crate::model::SourceSnapshot;
    use crate::plan::DisableReason;
    use crate::target::DirectoryUser;

    /// A plan with `deprovisions` disables and `removals` membership removals, checked against a
    /// directory of 100 linked users with 100 sync-made memberships, after `read`, with the last
    /// good read at 100 users.
    fn check(deprovisions: usize, removals: usize, read: ReadHealth, expect: Expect) {
        let mut actions: Vec<Action> = (0..deprovisions)
            .map(|n| Action::DisableUser {
                directory_id: n as i64,
                entra_id: format!("u-{n}"),
                reason: DisableReason::DeletedInMicrosoft,
            })
            .collect();
        actions.extend((0..removals).map(|n| Action::RemoveMembership {
            group: "g-1".to_owned(),
            user: format!("u-{n}"),
        }));
        let plan = Plan {
            actions,
            ..Plan::default()
        };
        let target = TargetState {
            users: (0..100)
                .map(|n| DirectoryUser {
                    id: n,
                    entra_id: Some(format!("u-{n}")),
                    ..DirectoryUser::default()
                })
                .collect(),
            memberships: (0..100).map(|n| ("g-1".to_owned(), format!("u-{n}"))).collect(),
            ..TargetState::default()
        };
        let verdict = super::check(&plan, &read, &target, Some(100), &Policy::default());
        expect.assert_eq(&format!("blocked {}\n{verdict}", verdict.blocked()));
    }

    fn healthy(users_read: usize) -> ReadHealth {
        ReadHealth {
            full_round: false,
            delta_reset: false,
            complete: true,
            users_read,
        }
    }

    #[test]
    fn within_the_limits_a_run_proceeds() {
        check(
            20,
            20,
            healthy(98),
            expect![[r#"
                blocked false
                guards passed: 20 deprovisions, 20 membership removals
            "#]],
        );
    }

    #[test]
    fn beyond_the_limits_a_run_is_blocked() {
        check(
            21,
            35,
            healthy(100),
            expect![[r#"
                blocked true
                guard max_deprovision_percent: 21 of 100 linked users (21%), over the limit of 20%
                guard max_membership_removals_percent: 35 of 100 memberships (35%), over the limit of 20%
            "#]],
        );
        let policy = Policy {
            guards: crate::policy::Guards {
                max_deprovisions: 2,
                ..crate::policy::Guards::default()
            },
            ..Policy::default()
        };
        let plan = Plan {
            actions: (0..3)
                .map(|n| Action::DeleteUser {
                    directory_id: n,
                    entra_id: format!("u-{n}"),
                    reason: DisableReason::NotInEntra,
                })
                .collect(),
            ..Plan::default()
        };
        let target = TargetState {
            users: (0..1000)
                .map(|n| DirectoryUser {
                    id: n,
                    entra_id: Some(format!("u-{n}")),
                    ..DirectoryUser::default()
                })
                .collect(),
            ..TargetState::default()
        };
        let verdict = super::check(&plan, &healthy(1000), &target, None, &policy);
        expect![[r#"
            guard max_deprovisions: 3 deprovisions, 1 over the limit of 2
        "#]]
        .assert_eq(&verdict.to_string());
    }

    /// A partial read's percentages are of every linked user and membership, those it left out
    /// included: 30 disables among 40 users read are 75 %, but 3 % of the 1,000 the directory
    /// links; so are 30 membership removals.
    #[test]
    fn the_percentages_count_what_a_partial_read_left_out() {
        let plan = Plan {
            actions: (0..30)
                .flat_map(|n| {
                    [
                        Action::DisableUser {
                            directory_id: n,
                            entra_id: format!("u-{n}"),
                            reason: DisableReason::DeletedInMicrosoft,
                        },
                        Action::RemoveMembership {
                            group: "g-1".to_owned(),
                            user: format!("u-{n}"),
                        },
                    ]
                })
                .collect(),
            ..Plan::default()
        };
        let mut target = TargetState {
            users: (0..40)
                .map(|n| DirectoryUser {
                    id: n,
                    entra_id: Some(format!("u-{n}")),
                    ..DirectoryUser::default()
                })
                .collect(),
            memberships: (0..40).map(|n| ("g-1".to_owned(), format!("u-{n}"))).collect(),
            ..TargetState::default()
        };
        let check =
            |target: &TargetState| super::check(&plan, &healthy(1000), target, None, &Policy::default());
        expect![[r#"
            guard max_deprovision_percent: 30 of 40 linked users (75%), over the limit of 20%
            guard max_membership_removals_percent: 30 of 40 memberships (75%), over the limit of 20%
        "#]]
        .assert_eq(&check(&target).to_string());
        target.settled.linked_users = 960;
        target.settled.memberships = 960;
        assert!(!check(&target).blocked(), "{}", check(&target));
    }

    /// A tenant that suddenly returns no users, read in full with `remove_users_not_in_entra`: the
    /// plan would deprovision everyone, and the guards hold all of it back.
    #[test]
    fn a_tenant_that_returns_no_users_deprovisions_nobody() {
        let policy = Policy {
            remove_users_not_in_entra: true,
            ..Policy::default()
        };
        let target: TargetState = serde_json::from_str(
            r#"{"users": [{"id": 1, "entra_id": "u-1"}, {"id": 2, "entra_id": "u-2"}],
                "groups": [{"id": 10, "entra_id": "g-1", "name": "Sales"}],
                "memberships": [["g-1", "u-1"]]}"#,
        )
        .expect("target parses");
        let read = ReadHealth {
            full_round: true,
            delta_reset: false,
            complete: true,
            users_read: 0,
        };
        let now = chrono::DateTime::from_timestamp(1_795_000_000, 0).expect("valid time");
        let plan = crate::plan::plan_after_read(&SourceSnapshot::default(), &target, &policy, &read, now);
        let verdict = super::check(&plan, &read, &target, Some(2), &policy);
        expect![[r#"
            disable user u-1 #1: Not found in Microsoft
            disable user u-2 #2: Not found in Microsoft
            delete  group g-1 #10
            unchanged 0, skipped 0
            guard read_health (no users): the read returned no users; 2 deprovisions, 0 membership removals and 1 group or department deletions held back
            guard max_deprovision_percent: 2 of 2 linked users (100%), over the limit of 20%
        "#]]
        .assert_eq(&format!("{plan}{verdict}"));
    }

    /// After an unhealthy read nothing may be removed, however few the removals.
    #[test]
    fn an_unhealthy_read_allows_no_deprovisioning() {
        check(
            1,
            0,
            healthy(0),
            expect![[r#"
                blocked true
                guard read_health (no users): the read returned no users; 1 deprovisions, 0 membership removals and 0 group or department deletions held back
            "#]],
        );
        check(
            1,
            1,
            healthy(50),
            expect![[r#"
                blocked true
                guard max_source_drop_percent: the read returned 50 users against 100 in the last good read, a drop of 50% over the limit of 30%; 1 deprovisions, 1 membership removals and 0 group or department deletions held back
            "#]],
        );
        check(
            0,
            1,
            ReadHealth {
                full_round: true,
                delta_reset: true,
                ..healthy(100)
            },
            expect![[r#"
                blocked true
                guard read_health (delta reset): Graph reset the delta links and the tenant was read again; 0 deprovisions, 1 membership removals and 0 group or department deletions held back
            "#]],
        );
        check(
            1,
            0,
            ReadHealth {
                complete: false,
                ..healthy(100)
            },
            expect![[r#"
                blocked true
                guard read_health (incomplete read): the read stopped short (a page failed); 1 deprovisions, 0 membership removals and 0 group or department deletions held back
            "#]],
        );
        // An incomplete read blocks even a plan that removes nothing: the run has no delta
        // links to advance to.
        check(
            0,
            0,
            ReadHealth {
                complete: false,
                ..healthy(100)
            },
            expect![[r#"
                blocked true
                guard read_health (incomplete read): the read stopped short (a page failed); 0 deprovisions, 0 membership removals and 0 group or department deletions held back
            "#]],
        );
        // A drop within the limit is healthy; an otherwise unhealthy read that removes nothing
        // proceeds.
        check(
            1,
            0,
            healthy(75),
            expect![[r#"
                blocked false
                guards passed: 1 deprovisions, 0 membership removals
            "#]],
        );
        check(
            0,
            0,
            healthy(0),
            expect![[r#"
                blocked false
                guards passed: 0 deprovisions, 0 membership removals
            "#]],
        );
    }
}
