//! The spine's acceptance: full and delta runs against the emulator, throttling, delta resets and
//! crashes, each checked against what the tenant really holds.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::support::{Tenant, Workspace, assert_directory_matches_tenant, count, directory_state};

const CHANGE_COUNTS: [&str; 14] = [
    "created",
    "updated",
    "disabled",
    "soft_deleted",
    "deleted",
    "restored",
    "skipped",
    "conflicts",
    "groups_created",
    "groups_updated",
    "groups_deleted",
    "memberships_added",
    "memberships_removed",
    "unchanged",
];

fn user_ids(users: &[Value]) -> Vec<String> {
    users
        .iter()
        .map(|user| user["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Moves `member` from one Entra group to another.
async fn move_member(tenant: &Tenant, member: &str, from: &str, to: &str) {
    tenant
        .control(
            reqwest::Method::DELETE,
            &format!("groups/{from}/members/{member}"),
            None,
        )
        .await;
    tenant
        .post(&format!("groups/{to}/members"), json!({"id": member}))
        .await;
}

/// Groups that have at least one user among their direct members.
async fn groups_with_user_members(tenant: &Tenant) -> usize {
    let users: BTreeSet<String> = user_ids(&tenant.users().await).into_iter().collect();
    tenant
        .groups()
        .await
        .iter()
        .filter(|group| {
            group["memberIds"]
                .as_array()
                .expect("memberIds")
                .iter()
                .any(|member| users.contains(member.as_str().expect("id")))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_creates_everyone_and_a_second_run_changes_nothing_in_three_requests() {
    let tenant = Tenant::start(2_000, 50).await;
    let workspace = Workspace::new(&tenant.connection("contoso"));

    let (first, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{first}");
    assert_eq!(first["status"], "succeeded");
    assert_eq!(first["mode"], "full");
    assert_eq!(count(&first, "created"), 2_000, "{first}");
    assert_eq!(count(&first, "conflicts"), 0, "{first}");
    assert_eq!(
        count(&first, "groups_created") as usize,
        groups_with_user_members(&tenant).await
    );
    assert_directory_matches_tenant(&workspace, &tenant).await;
    assert_eq!(workspace.users().await.len(), 2_000);

    tenant.control(reqwest::Method::DELETE, "stats", None).await;
    let (second, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{second}");
    assert_eq!(second["mode"], "delta");
    for name in CHANGE_COUNTS.iter().filter(|name| **name != "unchanged") {
        assert_eq!(count(&second, name), 0, "{name} in {second}");
    }
    assert_eq!(count(&second, "unchanged"), 2_000);
    assert!(count(&second, "graph_requests") <= 3, "{second}");
    let served = tenant.get("stats").await;
    assert!(
        served["total"].as_u64().expect("total") <= 3,
        "the emulator served {served}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_one_delta_run_reports_exactly_the_changes_made_in_entra() {
    let tenant = Tenant::start(400, 12).await;
    let workspace = Workspace::new(&tenant.connection("contoso"));
    let (first, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{first}");

    // Disjoint sets of active, enabled users for each kind of change.
    let users = tenant.users().await;
    let candidates: Vec<String> = users
        .iter()
        .filter(|user| user["state"] == "active" && user["accountEnabled"] == true)
        .map(|user| user["id"].as_str().expect("id").to_owned())
        .collect();
    let groups = tenant.groups().await;
    let member_of = |id: &str| {
        groups
            .iter()
            .filter(|group| {
                group["memberIds"]
                    .as_array()
                    .expect("members")
                    .iter()
                    .any(|m| m == id)
            })
            .count() as u64
    };
    let in_group: Vec<(String, String)> = groups
        .iter()
        .flat_map(|group| {
            let group_id = group["id"].as_str().expect("id").to_owned();
            group["memberIds"]
                .as_array()
                .expect("members")
                .iter()
                .map(move |member| (group_id.clone(), member.as_str().expect("id").to_owned()))
        })
        .collect();
    let (updated, rest) = candidates.split_at(10);
    let (disabled, rest) = rest.split_at(5);
    let (soft_deleted, rest) = rest.split_at(5);
    let (hard_deleted, rest) = rest.split_at(5);
    let untouched: BTreeSet<&String> = rest.iter().collect();
    let moves: Vec<&(String, String)> = in_group
        .iter()
        .filter(|(_, member)| untouched.contains(member))
        .take(5)
        .collect();
    assert_eq!(moves.len(), 5);

    for index in 0..10 {
        tenant
            .post(
                "users",
                json!({
                    "displayName": format!("New Hire {index}"), "givenName": "New", "surname": format!("Hire {index}"),
                    "userPrincipalName": format!("new.hire{index}@contoso.example"), "mail": format!("new.hire{index}@contoso.example"),
                    "jobTitle": "Support Analyst", "department": "Support", "accountEnabled": true, "userType": "Member",
                }),
            )
            .await;
    }
    for id in updated {
        tenant
            .control(
                reqwest::Method::PATCH,
                &format!("users/{id}"),
                Some(json!({"jobTitle": "Senior Support Analyst", "department": "Customer Care"})),
            )
            .await;
    }
    for id in disabled {
        tenant.post(&format!("users/{id}/disable"), json!({})).await;
    }
    for id in soft_deleted {
        tenant.post(&format!("users/{id}/soft-delete"), json!({})).await;
    }
    for id in hard_deleted {
        tenant
            .control(reqwest::Method::DELETE, &format!("users/{id}"), None)
            .await;
    }
    let target_group = groups
        .iter()
        .map(|group| group["id"].as_str().expect("id").to_owned())
        .find(|group_id| {
            moves.iter().all(|(from, member)| {
                from != group_id && !in_group.contains(&(group_id.clone(), member.clone()))
            })
        })
        .expect("a group to move people to");
    for (from, member) in &moves {
        move_member(&tenant, member, from, &target_group).await;
    }
    let deleted_edges: u64 = soft_deleted
        .iter()
        .chain(hard_deleted)
        .map(|id| member_of(id))
        .sum();

    let (run, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{run}");
    assert_eq!(run["mode"], "delta", "{run}");
    assert_eq!(count(&run, "created"), 10, "{run}");
    assert_eq!(count(&run, "updated"), 10, "{run}");
    assert_eq!(count(&run, "disabled"), 15, "{run}");
    assert_eq!(count(&run, "conflicts"), 0, "{run}");
    assert_eq!(count(&run, "memberships_added"), 5, "{run}");
    assert_eq!(count(&run, "memberships_removed"), 5 + deleted_edges, "{run}");
    assert_directory_matches_tenant(&workspace, &tenant).await;
    let directory = workspace.users().await;
    for id in disabled {
        assert_eq!(directory[id]["status_reason"], "Disabled in Microsoft");
    }
    for id in soft_deleted.iter().chain(hard_deleted) {
        assert_eq!(directory[id]["status_reason"], "Deleted in Microsoft");
    }
    for id in updated {
        assert_eq!(directory[id]["job_title"], "Senior Support Analyst");
        assert_eq!(directory[id]["department"], "Customer Care");
    }
}

/// What a delta run plans, as `sync --dry-run` prints it, and how many linked users it left out
/// of its read (0 for a whole read), from its debug log.
async fn dry_run_plan(workspace: &Workspace, read: &str) -> (String, u64) {
    let output = workspace
        .run_with_env(
            &["--log-format", "json", "sync", "--dry-run"],
            &[
                ("ENTRA_SYNC_DELTA_READ", read),
                ("RUST_LOG", "entra_sync::sync=debug"),
            ],
        )
        .await;
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    // The plan, then the summary line (with the run's id and duration) and its conflicts again.
    let plan: Vec<&str> = stdout
        .lines()
        .take_while(|line| !line.starts_with("run "))
        .collect();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let settled = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| event["fields"]["message"] == "loaded the snapshot and the directory")
        .and_then(|event| event["fields"]["settled"].as_u64())
        .unwrap_or_else(|| panic!("no load logged: {stderr}"));
    (plan.join("\n"), settled)
}

/// A delta run reads only the users its changes can reach (and their snapshot rows), not the
/// whole directory; its plan must be the one a whole read gives. Both are printed by `--dry-run`
/// from the same state, after changes of every kind the partial read has a rule for: churn
/// (hires, leavers, moves, edits), users moved between groups, newcomers sharing an email or
/// taking a linked user's, and soft-deleted users whose purge is due. Then the run applies it,
/// and a whole read of the result finds nothing left to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_a_delta_run_plans_from_what_its_changes_reach_what_a_whole_read_plans() {
    let tenant = Tenant::start(3_000, 60).await;
    let workspace = Workspace::new(&format!(
        "{}\n[connections.options]\non_deleted = \"soft_delete\"\nsoft_delete_retention_days = 0\n",
        tenant.connection("contoso")
    ));
    let (first, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{first}");
    // Five leavers, soft-deleted by the next run; the run after it purges them.
    let users = tenant.users().await;
    let leavers: Vec<String> = user_ids(&users).into_iter().take(5).collect();
    for id in &leavers {
        tenant
            .control(reqwest::Method::DELETE, &format!("users/{id}"), None)
            .await;
    }
    let (second, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{second}");
    assert_eq!(count(&second, "soft_deleted"), 5, "{second}");

    tenant.post("churn", json!({"events": 60})).await;
    let linked_mail = users[10]["mail"].as_str().expect("mail").to_owned();
    for (index, mail) in [
        "twin@contoso.example",
        "twin@contoso.example",
        linked_mail.as_str(),
    ]
    .into_iter()
    .enumerate()
    {
        tenant
            .post(
                "users",
                json!({
                    "displayName": format!("Late Hire {index}"), "givenName": "Late", "surname": format!("Hire {index}"),
                    "userPrincipalName": format!("late.hire{index}@contoso.example"), "mail": mail,
                    "accountEnabled": true, "userType": "Member",
                }),
            )
            .await;
    }
    let groups = tenant.groups().await;
    let (from, to) = (&groups[0], &groups[1]);
    let member = from["memberIds"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(Value::as_str)
        .find(|id| !leavers.iter().any(|leaver| leaver == id))
        .expect("a member to move")
        .to_owned();
    let (from, to) = (from["id"].as_str().expect("id"), to["id"].as_str().expect("id"));
    move_member(&tenant, &member, from, to).await;

    let (whole, whole_settled) = dry_run_plan(&workspace, "whole").await;
    let (partial, partial_settled) = dry_run_plan(&workspace, "").await;
    assert_eq!(whole_settled, 0);
    assert!(
        partial_settled > 2_500,
        "{partial_settled} users left out of the read"
    );
    assert_eq!(partial, whole);
    for expected in [
        "purge   user",
        "conflict user",
        "create  user",
        "add     member",
        "remove  member",
    ] {
        assert!(whole.contains(expected), "no {expected:?} in the plan:\n{whole}");
    }

    let (run, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{run}");
    assert_eq!(count(&run, "purged"), 5, "{run}");
    assert_eq!(count(&run, "conflicts"), 3, "{run}");
    // Converged: a whole read of the same state finds nothing left to do but the purges of the
    // users this run soft-deleted (their retention is 0 days).
    let (after, _) = dry_run_plan(&workspace, "whole").await;
    let left: Vec<&str> = after
        .lines()
        .filter(|line| !line.starts_with("conflict ") && !line.starts_with("unchanged "))
        .collect();
    assert!(
        left.iter().all(|line| line.starts_with("purge ")),
        "left to do after the run: {left:?}"
    );
    assert_eq!(left.len() as u64, count(&run, "soft_deleted"), "{left:?}");
}

/// With a scope by groups, a groups round changes the scope of users it never names: taking a
/// nested group out of a scope group, or renaming a group away from the scope's names, takes
/// their members out of scope, and `on_out_of_scope = "disable"` disables them. (Users coming
/// into scope are not linked yet, and a partial read always reaches those.) The partial read
/// reaches them; its plan is the whole read's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g_a_scope_by_groups_changed_by_the_groups_round_reaches_the_users_it_moves() {
    let tenant = Tenant::start(1_000, 30).await;
    let groups = tenant.groups().await;
    let id = |index: usize| groups[index]["id"].as_str().expect("id").to_owned();
    let rename = |index: usize, name: &'static str| {
        let path = format!("groups/{}", id(index));
        let tenant = &tenant;
        async move {
            tenant
                .control(
                    reqwest::Method::PATCH,
                    &path,
                    Some(json!({ "displayName": name })),
                )
                .await
        }
    };
    let name = groups[0]["displayName"].as_str().expect("name").to_owned();
    tenant
        .post(&format!("groups/{}/members", id(0)), json!({"id": id(1)}))
        .await;
    rename(2, "In Scope By Name").await;
    let workspace = Workspace::new(&format!(
        "{}\n[connections.scope]\ngroups = [\"{name}\", \"In Scope By Name\"]\ngroup_membership = \"transitive\"\n\
         [connections.options]\non_out_of_scope = \"disable\"\n",
        tenant.connection("contoso")
    ));
    let (first, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{first}");
    let created = count(&first, "created");
    assert!(created > 0 && created < 1_000, "{first}");

    tenant
        .control(
            reqwest::Method::DELETE,
            &format!("groups/{}/members/{}", id(0), id(1)),
            None,
        )
        .await;
    rename(2, "Out Of Scope").await;
    let (whole, _) = dry_run_plan(&workspace, "whole").await;
    let (partial, settled) = dry_run_plan(&workspace, "").await;
    assert!(settled > 0, "the read left no user out");
    assert!(whole.contains("disable user"), "{whole}");
    assert_eq!(partial, whole);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_throttled_sync_waits_as_told_and_reaches_the_same_state() {
    // 12 Graph pages; the emulator draws its 30 % from the seed, and this seed throttles several.
    let tenant = Tenant::start_seeded(10_000, 100, 1).await;
    tenant
        .post(
            "faults",
            json!({"kind": "throttle", "share": 0.3, "retry_after": 0.2}),
        )
        .await;
    let workspace = Workspace::new(&tenant.connection("contoso"));
    let (run, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{run}");
    assert_eq!(count(&run, "created"), 10_000);
    tenant.control(reqwest::Method::DELETE, "faults", None).await;
    assert_directory_matches_tenant(&workspace, &tenant).await;

    let log = tenant.get("requests").await;
    let log = log.as_array().expect("a request log");
    let throttled = log.iter().filter(|entry| entry["status"] == 429).count();
    assert!(throttled > 0, "no request was throttled");
    for (index, entry) in log.iter().enumerate() {
        let Some(wait) = entry["retry_after"].as_f64().filter(|_| entry["status"] == 429) else {
            continue;
        };
        let retry = log[index + 1..]
            .iter()
            .find(|later| later["path"] == entry["path"])
            .expect("a throttled request is retried");
        let waited = retry["at_ms"].as_f64().expect("at_ms") - entry["at_ms"].as_f64().expect("at_ms");
        assert!(
            waited >= wait * 1000.0 - 1.0,
            "retried {} after {waited} ms, told {wait} s",
            entry["path"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_an_expired_or_reset_delta_link_leads_to_a_full_round_with_the_same_state() {
    let tenant = Tenant::start(300, 10).await;
    let workspace = Workspace::new(&tenant.connection("contoso"));
    let (first, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{first}");
    let before = directory_state(&workspace).await;

    tenant
        .post("clock", json!({"advance_seconds": 8 * 24 * 3600}))
        .await;
    let (expired, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{expired}");
    assert_eq!(expired["mode"], "full", "{expired}");
    assert_eq!(expired["delta_reset"], true, "{expired}");
    assert_eq!(count(&expired, "created"), 0, "{expired}");
    assert_eq!(directory_state(&workspace).await, before);

    tenant
        .post("faults", json!({"kind": "delta_reset", "count": 1}))
        .await;
    let (reset, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{reset}");
    assert_eq!(reset["mode"], "full", "{reset}");
    assert_eq!(reset["delta_reset"], true, "{reset}");
    assert_eq!(directory_state(&workspace).await, before);

    let (after, code) = workspace.sync(&[]).await;
    assert_eq!((code, after["mode"].as_str()), (0, Some("delta")), "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_killed_at_random_points_the_initial_sync_converges_without_duplicates() {
    let tenant = Tenant::start(20_000, 200).await;
    let reference = Workspace::new(&tenant.connection("contoso"));
    let started = std::time::Instant::now();
    let (run, code) = reference.sync(&[]).await;
    assert_eq!(code, 0, "{run}");
    let full_run = started.elapsed();
    let expected = directory_state(&reference).await;

    let workspace = Workspace::new(&tenant.connection("contoso"));
    // Deterministic "random" kill points spread over the whole run.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for attempt in 0..10 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let fraction = 0.05 + (seed % 1000) as f64 / 1000.0 * 0.9;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_entra-sync"))
            .args(["sync", "--json", "--config"])
            .arg(&workspace.config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("sync starts");
        tokio::time::sleep(full_run.mul_f64(fraction)).await;
        // Child::start_kill sends SIGKILL on Unix.
        let _ = child.start_kill();
        let status = child.wait().await.expect("the child ends");
        eprintln!("attempt {attempt}: killed at {fraction:.2} of a run: {status}");
    }
    let (last, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{last}");
    let users = workspace.users().await;
    let emails: Vec<&Value> = users
        .values()
        .map(|user| &user["email"])
        .filter(|email| !email.is_null())
        .collect();
    let unique: BTreeSet<String> = emails
        .iter()
        .map(|email| email.to_string().to_lowercase())
        .collect();
    assert_eq!(unique.len(), emails.len(), "a duplicate user");
    assert_eq!(directory_state(&workspace).await, expected);
}
