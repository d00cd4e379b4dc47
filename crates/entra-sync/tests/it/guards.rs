//! Safety guards, approval, dry run and explain, end to end: a mass removal in Entra stops the
//! run with exit code 3 and applies nothing; `approve` applies exactly the stored plan, once,
//! and refuses once the source has moved on.

use serde_json::{Value, json};

use crate::support::{Tenant, Workspace, count};

fn stdout_json(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "not JSON ({error}): {} / {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_removal_is_blocked_until_approved_and_approval_applies_exactly_that_plan() {
    let tenant = Tenant::start(200, 8).await;
    let connection = tenant.connection("contoso");
    let workspace = Workspace::new(&connection);
    let (first, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{first}");

    // A dry run shows the change and applies nothing, so a real run still has it to do.
    let active = active_ids(&tenant).await;
    tenant
        .control(
            reqwest::Method::PATCH,
            &format!("users/{}", active[0]),
            Some(json!({"jobTitle": "Chief Tester"})),
        )
        .await;
    let (dry, code) = workspace.sync(&["--dry-run"]).await;
    assert_eq!((code, dry["status"].as_str()), (0, Some("dry_run")), "{dry}");
    assert_eq!(count(&dry, "updated"), 1, "{dry}");
    assert_ne!(workspace.users().await[&active[0]]["job_title"], "Chief Tester");
    let (applied, code) = workspace.sync(&[]).await;
    assert_eq!((code, count(&applied, "updated")), (0, 1), "{applied}");

    // 60 of about 190 linked users leave at once: over the 20 % limit.
    let leavers = &active[1..61];
    for id in leavers {
        tenant.post(&format!("users/{id}/soft-delete"), json!({})).await;
    }
    let (blocked, code) = workspace.sync(&[]).await;
    assert_eq!(code, 3, "{blocked}");
    assert_eq!(blocked["status"], "blocked");
    let guards = blocked["guards"].to_string();
    assert!(guards.contains("max_deprovision_percent"), "{guards}");
    let run = blocked["run_id"].as_i64().expect("run id").to_string();
    let directory = workspace.users().await;
    assert!(
        leavers.iter().all(|id| directory[id]["status"] == "active"),
        "a blocked run applied something"
    );

    let approved = workspace.run(&["approve", "--run", &run, "--json"]).await;
    assert!(
        approved.status.success(),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );
    assert_eq!(count(&stdout_json(&approved), "disabled"), 60);
    let directory = workspace.users().await;
    for id in leavers {
        assert_eq!(directory[id]["status_reason"], "Deleted in Microsoft", "{id}");
    }
    let again = workspace.run(&["approve", "--run", &run]).await;
    assert_eq!(again.status.code(), Some(2), "a plan is applied once");

    // The next run reads the same changes again and finds nothing left to do.
    let (after, code) = workspace.sync(&[]).await;
    assert_eq!((code, count(&after, "disabled")), (0, 0), "{after}");

    // A blocked plan goes stale once a later run succeeds.
    for id in &active[61..121] {
        tenant.post(&format!("users/{id}/disable"), json!({})).await;
    }
    let (blocked, code) = workspace.sync(&[]).await;
    assert_eq!(code, 3, "{blocked}");
    let stale_run = blocked["run_id"].as_i64().expect("run id").to_string();
    workspace.rewrite(&format!(
        "{connection}\n[connections.guards]\nmax_deprovision_percent = 100\n"
    ));
    let (allowed, code) = workspace.sync(&[]).await;
    assert_eq!((code, count(&allowed, "disabled")), (0, 60), "{allowed}");
    let refused = workspace.run(&["approve", "--run", &stale_run]).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("moved on"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_says_why_a_user_is_in_scope_with_its_link_and_history() {
    let tenant = Tenant::start(60, 4).await;
    let workspace = Workspace::new(&tenant.connection("contoso"));
    let (run, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{run}");
    let user = tenant
        .users()
        .await
        .into_iter()
        .find(|user| user["state"] == "active" && user["userPrincipalName"].is_string())
        .expect("a user");
    let upn = user["userPrincipalName"].as_str().expect("upn").to_uppercase();
    let output = workspace.run(&["explain", "--user", &upn, "--json"]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let document = stdout_json(&output);
    assert_eq!(document["explanation"]["entra_id"], user["id"]);
    assert!(document["explanation"]["link"]["linked"].is_i64(), "{document}");
    assert!(!document["explanation"]["scope"].is_null(), "{document}");
    let kinds: Vec<&Value> = document["recent_actions"]
        .as_array()
        .expect("recent actions")
        .iter()
        .map(|entry| &entry["action"]["kind"])
        .collect();
    assert!(kinds.iter().any(|kind| *kind == "create_user"), "{document}");

    let text = workspace.run(&["explain", "--user", &upn]).await;
    assert!(String::from_utf8_lossy(&text.stdout).contains("recent actions:"));
    let missing = workspace
        .run(&["explain", "--user", "nobody@nowhere.example"])
        .await;
    assert_eq!(missing.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_scope_applies_on_the_next_run_without_any_change_in_entra() {
    let tenant = Tenant::start(200, 8).await;
    let connection = tenant.connection("contoso");
    let workspace = Workspace::new(&connection);
    let (first, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{first}");
    let before = workspace.users().await;
    let active_guests = before
        .values()
        .filter(|user| user["user_type"] == "Guest" && user["status"] == "active")
        .count();
    assert!(active_guests > 0, "the generated tenant has guests");

    workspace.rewrite(&format!(
        "{connection}\n[connections.scope]\nuser_types = [\"Member\"]\n\n[connections.options]\non_out_of_scope = \"disable\"\n"
    ));
    let (run, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{run}");
    assert_eq!(run["mode"], "delta");
    assert!(count(&run, "disabled") as usize >= active_guests, "{run}");
    for (id, user) in workspace.users().await {
        if user["user_type"] == "Guest" {
            assert_eq!(user["status"], "disabled", "guest {id} is out of scope");
        } else {
            assert_eq!(user["status"], before[&id]["status"], "member {id} is untouched");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_weekly_org_update_reaches_only_support_operations() {
    let tenant = Tenant::start(300, 10).await;
    let connection = tenant.connection("contoso");
    let workspace = Workspace::new(&format!(
        "{connection}\n[connections.scope]\ngroups = [\"Support Operations\"]\n"
    ));
    let groups = tenant.groups().await;
    let support = groups
        .iter()
        .find(|group| group["displayName"] == "Support Operations")
        .expect("the tenant has Support Operations");
    let support_id = support["id"].as_str().expect("id").to_owned();
    let users = tenant.users().await;
    let by_id = |id: &str| users.iter().find(|user| user["id"] == id).cloned();
    let members: Vec<String> = support["memberIds"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|id| by_id(id.as_str()?))
        .filter(|user| user["state"] == "active")
        .map(|user| user["id"].as_str().expect("id").to_owned())
        .collect();
    let outsiders: Vec<String> = users
        .iter()
        .filter(|user| user["state"] == "active")
        .map(|user| user["id"].as_str().expect("id").to_owned())
        .filter(|id| !members.contains(id))
        .collect();
    let (first, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{first}");
    assert_eq!(count(&first, "created") as usize, members.len(), "{first}");

    let enabled: Vec<&String> = members
        .iter()
        .filter(|id| by_id(id).is_some_and(|user| user["accountEnabled"] == true))
        .collect();
    assert!(
        enabled.len() >= 4,
        "Support Operations is big enough for the scenario"
    );
    let mut hires = Vec::new();
    for index in 0..2 {
        let hire = tenant
            .post(
                "users",
                json!({"displayName": format!("Support Hire {index}"), "givenName": "Support", "surname": format!("Hire {index}"),
                       "userPrincipalName": format!("support.hire{index}@contoso.example"), "mail": format!("support.hire{index}@contoso.example"),
                       "jobTitle": "Support Analyst", "accountEnabled": true, "userType": "Member"}),
            )
            .await;
        let id = hire["id"].as_str().expect("id").to_owned();
        tenant
            .post(&format!("groups/{support_id}/members"), json!({"id": id}))
            .await;
        hires.push(id);
    }
    for id in &enabled[..2] {
        tenant
            .control(
                reqwest::Method::PATCH,
                &format!("users/{id}"),
                Some(json!({"jobTitle": "Senior Support Analyst"})),
            )
            .await;
    }
    tenant
        .control(reqwest::Method::DELETE, &format!("users/{}", enabled[2]), None)
        .await;
    tenant
        .post(&format!("users/{}/disable", enabled[3]), json!({}))
        .await;
    for id in &outsiders[..3] {
        tenant
            .control(
                reqwest::Method::PATCH,
                &format!("users/{id}"),
                Some(json!({"jobTitle": "Someone Else"})),
            )
            .await;
    }

    let (run, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{run}");
    assert_eq!(count(&run, "created"), 2, "{run}");
    assert_eq!(count(&run, "updated"), 2, "{run}");
    assert_eq!(count(&run, "disabled"), 2, "{run}");
    let directory = workspace.users().await;
    for id in &hires {
        assert_eq!(directory[id]["status"], "active", "new hire {id}");
    }
    for id in &enabled[..2] {
        assert_eq!(directory[*id]["job_title"], "Senior Support Analyst");
    }
    assert_eq!(directory[enabled[2]]["status_reason"], "Deleted in Microsoft");
    assert_eq!(directory[enabled[3]]["status_reason"], "Disabled in Microsoft");
    assert!(
        outsiders.iter().all(|id| !directory.contains_key(id)),
        "people outside the group are untouched"
    );
    let history = workspace
        .run(&["history", "--run", &run["run_id"].to_string(), "--json"])
        .await;
    let history = stdout_json(&history);
    assert_eq!(history["run"]["status"], "succeeded");
    let kinds: Vec<&str> = history["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter_map(|action| action["kind"].as_str())
        .collect();
    for kind in ["create_user", "update_user", "disable_user"] {
        assert!(kinds.contains(&kind), "{kind} in the history: {kinds:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_that_suddenly_has_no_users_deprovisions_nobody() {
    let tenant = Tenant::start(40, 3).await;
    let workspace = Workspace::new(&tenant.connection("contoso"));
    let (first, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{first}");
    for user in tenant.users().await {
        let id = user["id"].as_str().expect("id");
        tenant
            .control(reqwest::Method::DELETE, &format!("users/{id}"), None)
            .await;
    }
    let (run, code) = workspace.sync(&[]).await;
    assert_eq!(code, 3, "{run}");
    let guards = run["guards"].to_string();
    assert!(guards.contains("no users"), "{guards}");
    let active_first = workspace
        .users()
        .await
        .values()
        .filter(|user| user["status"] == "active")
        .count();
    assert!(active_first > 0);
    let (again, code) = workspace.sync(&[]).await;
    assert_eq!(
        code, 3,
        "the read stays unhealthy until someone approves: {again}"
    );
    let still_active = workspace
        .users()
        .await
        .values()
        .filter(|user| user["status"] == "active")
        .count();
    assert_eq!(still_active, active_first, "nobody was deprovisioned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_failure_holds_the_plan_of_what_was_read_until_approved() {
    let tenant = Tenant::start(1500, 10).await;
    let workspace = Workspace::new(&tenant.connection("contoso"));
    let (first, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{first}");
    let before = crate::support::directory_state(&workspace).await;
    let active = active_ids(&tenant).await;
    // Changes spread over the tenant, so some sit on the page that can be read.
    for (n, id) in active.iter().step_by(50).enumerate() {
        if n % 2 == 0 {
            tenant.post(&format!("users/{id}/disable"), json!({})).await;
        } else {
            tenant
                .control(
                    reqwest::Method::PATCH,
                    &format!("users/{id}"),
                    Some(json!({"jobTitle": "Read Before The Failure"})),
                )
                .await;
        }
    }

    // Every users page after the first keeps failing: the read stops short after 999 users.
    tenant
        .post(
            "faults",
            json!({"kind": "throttle", "retry_after": 0.01, "path_contains": "users/delta?$skiptoken"}),
        )
        .await;
    let (blocked, code) = workspace.sync(&["--full"]).await;
    assert_eq!(
        (code, blocked["status"].as_str()),
        (3, Some("blocked")),
        "{blocked}"
    );
    let guards = blocked["guards"].to_string();
    assert!(
        guards.contains("incomplete read") && guards.contains("try again later"),
        "the guard names the read and the page's error: {guards}"
    );
    assert_eq!(
        crate::support::directory_state(&workspace).await,
        before,
        "a blocked run applied something"
    );
    // What the read did not reach looks gone; nothing is taken away on its word.
    for removal in [
        "disabled",
        "soft_deleted",
        "deleted",
        "memberships_removed",
        "groups_deleted",
    ] {
        assert_eq!(count(&blocked, removal), 0, "{removal}: {blocked}");
    }
    let updated = count(&blocked, "updated");
    assert!(updated > 0, "page one holds some updated users: {blocked}");

    let run = blocked["run_id"].as_i64().expect("run id").to_string();
    let approved = workspace.run(&["approve", "--run", &run, "--json"]).await;
    assert!(
        approved.status.success(),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );
    let approved = stdout_json(&approved);
    for counted in [
        "created",
        "updated",
        "disabled",
        "memberships_removed",
        "groups_deleted",
    ] {
        assert_eq!(count(&approved, counted), count(&blocked, counted), "{counted}");
    }
    let after_approval = crate::support::directory_state(&workspace).await;
    let changed = before
        .iter()
        .filter(|(id, user)| after_approval[id.as_str()] != **user)
        .count();
    assert_eq!(
        changed as u64, updated,
        "exactly the stored plan's updates were applied"
    );
    let disabled = |state: &std::collections::BTreeMap<String, Value>| {
        state.values().filter(|user| user["status"] != "active").count()
    };
    assert_eq!(
        disabled(&after_approval),
        disabled(&before),
        "nobody was deprovisioned"
    );

    // With Graph healthy again the delta links, never advanced, bring the rest.
    tenant.control(reqwest::Method::DELETE, "faults", None).await;
    let (caught_up, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{caught_up}");
    crate::support::assert_directory_matches_tenant(&workspace, &tenant).await;
}

/// The active, enabled users of the tenant, by Entra id.
async fn active_ids(tenant: &Tenant) -> Vec<String> {
    tenant
        .users()
        .await
        .iter()
        .filter(|user| user["state"] == "active" && user["accountEnabled"] == true)
        .map(|user| user["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_the_tenant_gone_or_a_delta_reset_removes_nobody_while_a_run_within_the_limits_proceeds() {
    let tenant = Tenant::start(200, 8).await;
    // Only the read-health guard may stop these runs: the limits are out of the way.
    let connection = format!(
        "{}\n[connections.options]\nremove_users_not_in_entra = true\n\n[connections.guards]\nmax_deprovisions = 10000\nmax_deprovision_percent = 100\nmax_membership_removals_percent = 100\n",
        tenant.connection("contoso")
    );
    let workspace = Workspace::new(&connection);
    let (first, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{first}");
    let active = active_ids(&tenant).await;

    // Within the limits: five leavers are deprovisioned at once.
    for id in &active[..5] {
        tenant
            .control(reqwest::Method::DELETE, &format!("users/{id}"), None)
            .await;
    }
    let (within, code) = workspace.sync(&[]).await;
    assert_eq!((code, count(&within, "disabled")), (0, 5), "{within}");

    // Five more leave, but Graph resets the delta links: the full read that follows may not
    // remove anyone.
    for id in &active[5..10] {
        tenant
            .control(reqwest::Method::DELETE, &format!("users/{id}"), None)
            .await;
    }
    tenant
        .post("faults", json!({"kind": "delta_reset", "count": 1}))
        .await;
    let (reset, code) = workspace.sync(&[]).await;
    assert_eq!((code, reset["mode"].as_str()), (3, Some("full")), "{reset}");
    assert!(reset["guards"].to_string().contains("delta reset"), "{reset}");
    let directory = workspace.users().await;
    assert!(active[5..10].iter().all(|id| directory[id]["status"] == "active"));
    let run = reset["run_id"].as_i64().expect("run id").to_string();
    let approved = workspace.run(&["approve", "--run", &run, "--json"]).await;
    assert_eq!(count(&stdout_json(&approved), "disabled"), 5);

    // Half the tenant disappears in one read: over max_source_drop_percent.
    let half = active.len() / 2;
    for id in &active[10..10 + half] {
        tenant
            .control(reqwest::Method::DELETE, &format!("users/{id}"), None)
            .await;
    }
    let (dropped, code) = workspace.sync(&["--full"]).await;
    assert_eq!(code, 3, "{dropped}");
    let guards = dropped["guards"].to_string();
    assert!(guards.contains("max_source_drop_percent"), "{guards}");
    let directory = workspace.users().await;
    assert!(
        active[10..10 + half]
            .iter()
            .all(|id| directory[id]["status"] == "active"),
        "nobody was deprovisioned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_entra_users_with_one_email_are_both_conflicts_while_the_rest_applies() {
    let tenant = Tenant::start(60, 3).await;
    let workspace = Workspace::new(&tenant.connection("contoso"));
    let active = active_ids(&tenant).await;
    for id in &active[..2] {
        tenant
            .control(
                reqwest::Method::PATCH,
                &format!("users/{id}"),
                Some(json!({"mail": "shared@contoso.example"})),
            )
            .await;
    }
    let (run, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "conflicts never abort a run: {run}");
    let conflicts: Vec<&str> = run["conflict_details"]
        .as_array()
        .expect("conflict details")
        .iter()
        .map(|conflict| conflict["entra_id"].as_str().expect("entra id"))
        .collect();
    assert_eq!(conflicts.len(), 2, "{run}");
    assert!(
        active[..2].iter().all(|id| conflicts.contains(&id.as_str())),
        "{run}"
    );
    let directory = workspace.users().await;
    assert!(
        active[..2].iter().all(|id| !directory.contains_key(id)),
        "never merged"
    );
    assert!(
        active[2..].iter().all(|id| directory.contains_key(id)),
        "the rest applied"
    );
    let history = workspace
        .run(&["history", "--run", &run["run_id"].to_string(), "--json"])
        .await;
    assert!(
        String::from_utf8_lossy(&history.stdout).contains("shared@contoso.example"),
        "the history keeps each conflict with its reason"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soft_delete_rung_restores_what_entra_restores_and_purges_the_rest_to_tombstones() {
    let tenant = Tenant::start(60, 3).await;
    // A retention of zero days lets the next run purge, so no clock needs moving.
    let workspace = Workspace::new(&format!(
        "{}\n[connections.options]\non_deleted = \"soft_delete\"\nsoft_delete_retention_days = 0\n",
        tenant.connection("contoso")
    ));
    let (first, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{first}");
    let active = active_ids(&tenant).await;
    let (comes_back, stays_gone) = (&active[0], &active[1]);
    let groups_before = workspace.users().await[comes_back]["groups"].clone();
    assert_ne!(groups_before, json!([]), "{comes_back} is in a group");
    for id in [comes_back, stays_gone] {
        tenant.post(&format!("users/{id}/soft-delete"), json!({})).await;
    }
    let (deleted, code) = workspace.sync(&[]).await;
    assert_eq!((code, count(&deleted, "soft_deleted")), (0, 2), "{deleted}");
    let directory = workspace.users().await;
    for id in [comes_back, stays_gone] {
        assert_eq!(directory[id]["status"], "soft_deleted", "{id}");
        assert_eq!(directory[id]["status_reason"], "Deleted in Microsoft", "{id}");
    }
    assert_eq!(
        directory[comes_back]["groups"],
        json!([]),
        "a soft-deleted user leaves its groups"
    );

    tenant
        .post(&format!("users/{comes_back}/restore"), json!({}))
        .await;
    let (restored, code) = workspace.sync(&[]).await;
    assert_eq!((code, count(&restored, "restored")), (0, 1), "{restored}");
    assert_eq!(count(&restored, "purged"), 1, "{restored}");
    let directory = workspace.users().await;
    assert_eq!(directory[comes_back]["status"], "active");
    assert_eq!(
        directory[comes_back]["groups"], groups_before,
        "restored with its memberships"
    );
    let tombstone = &directory[stays_gone];
    assert_eq!(tombstone["status"], "purged", "{tombstone}");
    assert!(
        tombstone["email"].is_null() && tombstone["display_name"].is_null(),
        "{tombstone}"
    );
    assert_eq!(tombstone["groups"], json!([]), "{tombstone}");
}
