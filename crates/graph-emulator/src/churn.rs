//! Churn: the everyday changes of a tenant (hires, leavers, moves between departments and groups,
//! new titles, disabled accounts), on demand or in the background at `churn_per_minute`.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use crate::generate::{DEPARTMENTS, DOMAIN, GIVEN_NAMES, JOB_TITLES, OFFICES, Rng, SURNAMES, ascii_fold};
use crate::model::{Directory, Field, MemberKind};
use crate::server::AppState;

/// Starts the background churn task when `churn_per_minute` is set.
pub(crate) fn spawn_background(state: Arc<AppState>) -> Option<tokio::task::JoinHandle<()>> {
    let per_minute = state.options.churn_per_minute;
    if per_minute == 0 {
        return None;
    }
    let period = Duration::from_secs_f64(60.0 / f64::from(per_minute));
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            for line in state.churn(1) {
                tracing::info!(event = %line, "churn");
            }
        }
    }))
}

/// Applies `events` random changes and describes each in one line.
pub(crate) fn apply(state: &AppState, events: usize) -> Vec<String> {
    let now = state.clock.now();
    let mut rng = state
        .churn_rng
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut directory = state.write();
    (0..events)
        .map(|_| one_event(&mut directory, &mut rng, now))
        .collect()
}

fn one_event(directory: &mut Directory, rng: &mut Rng, now: i64) -> String {
    let roll = rng.below(100);
    let victim = random_active_user(directory, rng);
    match (roll, victim) {
        (0..30, _) | (_, None) => hire(directory, rng, now),
        (30..50, Some((id, name))) => match directory.soft_delete_user(&id, now) {
            Ok(()) => format!("{name} left (soft-deleted)"),
            Err(error) => format!("{name} could not leave: {error}"),
        },
        (50..70, Some((id, name))) => move_user(directory, rng, &id, &name),
        (70..90, Some((id, name))) => {
            let title = *rng.pick(JOB_TITLES);
            match directory.set_user_field(&id, Field::JobTitle, Some(title)) {
                Ok(()) => format!("{name} is now {title}"),
                Err(error) => format!("{name} kept the title: {error}"),
            }
        }
        (_, Some((id, name))) => match directory.set_enabled(&id, false) {
            Ok(()) => format!("disabled {name}"),
            Err(error) => format!("{name} stays enabled: {error}"),
        },
    }
}

/// A random active user and its display name: the first at or after a random id, so that picking
/// stays O(log n) with a million users.
fn random_active_user(directory: &Directory, rng: &mut Rng) -> Option<(String, String)> {
    let probe = crate::generate::guid(rng.next_u64());
    let after = directory
        .users
        .range::<str, _>((Bound::Included(probe.as_str()), Bound::Unbounded))
        .chain(directory.users.iter());
    after
        .take(64)
        .find(|(_, user)| user.is_active() && user.account_enabled)
        .map(|(id, user)| {
            let name = user.get(Field::DisplayName).unwrap_or(id).to_owned();
            (id.to_string(), name)
        })
}

fn hire(directory: &mut Directory, rng: &mut Rng, now: i64) -> String {
    let given = *rng.pick(GIVEN_NAMES);
    let surname = *rng.pick(SURNAMES);
    let department = *rng.pick(DEPARTMENTS);
    let office = *rng.pick(OFFICES);
    let id = directory.new_id();
    // The id's first block keeps the address unique without scanning every user.
    let alias = format!("{}.{}.{}", ascii_fold(given), ascii_fold(surname), &id[..8]);
    let upn = format!("{alias}@{DOMAIN}");
    let body = serde_json::json!({
        "id": id,
        "userPrincipalName": upn,
        "mail": upn,
        "mailNickname": alias,
        "displayName": format!("{given} {surname}"),
        "givenName": given,
        "surname": surname,
        "department": department,
        "jobTitle": *rng.pick(JOB_TITLES),
        "companyName": directory.company,
        "officeLocation": office.name,
        "city": office.city,
        "country": office.country,
        "usageLocation": office.usage_location,
        "preferredLanguage": office.language,
        "employeeType": "Employee",
        "userType": "Member",
        "accountEnabled": true,
    });
    if let Err(error) = directory.create_user(&body, now, crate::model::UpnCheck::Trusted) {
        return format!("could not hire {given} {surname}: {error}");
    }
    if let Some(group) = random_group(directory, rng) {
        let _ = directory.add_member(&group, &id);
    }
    format!("hired {given} {surname} ({department})")
}

/// A random group, found like [`random_active_user`] in O(log n).
fn random_group(directory: &Directory, rng: &mut Rng) -> Option<String> {
    let probe = crate::generate::guid(rng.next_u64());
    directory
        .groups
        .range::<str, _>((Bound::Included(probe.as_str()), Bound::Unbounded))
        .chain(directory.groups.iter())
        .next()
        .map(|(id, _)| id.to_string())
}

/// A move: a new department, out of one group the user is in and into another.
fn move_user(directory: &mut Directory, rng: &mut Rng, id: &str, name: &str) -> String {
    let from = directory
        .user(id)
        .ok()
        .and_then(|user| user.get(Field::Department))
        .unwrap_or("no department")
        .to_owned();
    let to = *rng.pick(DEPARTMENTS);
    let _ = directory.set_user_field(id, Field::Department, Some(to));
    let current: Option<String> = directory
        .groups
        .iter()
        .find(|(_, group)| group.members.get(id) == Some(&MemberKind::User))
        .map(|(group, _)| group.to_string());
    if let Some(group) = current {
        let _ = directory.remove_member(&group, id);
    }
    if let Some(group) = random_group(directory, rng) {
        let _ = directory.add_member(&group, id);
    }
    format!("moved {name} from {from} to {to}")
}
