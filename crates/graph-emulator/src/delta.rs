//! `/users/delta` and `/groups/delta`: rounds paged with `$skiptoken` that end with a `$deltatoken`,
//! read from the change log, with `members@delta` split over pages for large groups.
//!
//! A token is the round's cursor (selection, id filter, log positions, paging position, time of
//! issue) as JSON with an integrity tag, base64url-encoded: opaque to clients, stateless here, and
//! a mutated token fails the tag check ("Badly formed token.").

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::Digest as _;

use crate::json::{ObjectWriter, push_str};
use crate::model::{Change, Directory, Group, MemberKind, User};
use crate::render::{
    GROUP_MEMBERS, USER_DEFAULT, UserStyle, group_json, group_prop_index, user_prop_index, write_group,
    write_user,
};
use crate::server::{AppState, Request};
use crate::{DELTA_PAGE_SIZE, MEMBERS_PER_DELTA_PAGE};

/// At most this many ids in a delta `$filter` (GRAPH.md §3.2).
const MAX_FILTER_IDS: usize = 50;

/// Where a delta round stands.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Cursor {
    /// `$select` of the initial request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    select: Option<Vec<String>>,
    /// Ids of `$filter=id eq …` of the initial request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ids: Option<Vec<String>>,
    /// `None` in an initial round; in a change round, the log position the previous round ended at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    since: Option<u64>,
    /// The log position this round reads up to.
    upto: u64,
    /// The last object fully written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<String>,
    /// A group split over pages: its id and the last member written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    partial: Option<(String, String)>,
    /// Emulated time the token was issued; it expires `delta_token_lifetime` later.
    issued: i64,
}

pub(crate) fn encode_token<T: serde::Serialize>(state: &AppState, value: &T) -> String {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    let tag = tag(state, &bytes);
    bytes.extend_from_slice(&tag);
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn decode_token<T: serde::de::DeserializeOwned>(state: &AppState, token: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
    if bytes.len() < 8 {
        return None;
    }
    let (payload, found) = bytes.split_at(bytes.len() - 8);
    if tag(state, payload) != found {
        return None;
    }
    serde_json::from_slice(payload).ok()
}

fn tag(state: &AppState, payload: &[u8]) -> [u8; 8] {
    let mut hasher = sha2::Sha256::new();
    hasher.update(state.token_key);
    hasher.update(payload);
    let digest = hasher.finalize();
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&digest[..8]);
    tag
}

/// The query a reset `Location` starts again with: the original `$select` and id filter.
pub(crate) fn initial_query(request: &Request<'_>) -> String {
    let token = request
        .query
        .skiptoken
        .as_ref()
        .or(request.query.deltatoken.as_ref());
    let cursor = token.and_then(|token| decode_token::<Cursor>(request.state, token));
    let (select, ids) = match cursor {
        Some(cursor) => (cursor.select, cursor.ids),
        None => (request.query.select_names(), None),
    };
    let mut query = String::new();
    if let Some(select) = select {
        query.push_str(&format!("$select={}&", crate::query::encode(&select.join(","))));
    }
    if let Some(ids) = ids {
        let filter: Vec<String> = ids.iter().map(|id| format!("id eq '{id}'")).collect();
        query.push_str(&format!(
            "$filter={}&",
            crate::query::encode(&filter.join(" or "))
        ));
    }
    query
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Collection {
    Users,
    Groups,
}

impl Collection {
    fn name(self) -> &'static str {
        match self {
            Collection::Users => "users",
            Collection::Groups => "groups",
        }
    }
}

/// What the request asks for, once its tokens are read.
enum Start {
    /// `$deltatoken=latest`: a deltaLink from now, no data.
    Latest(Cursor),
    /// A page of a round; `first` when it is the round's initial request (no token).
    Page { cursor: Cursor, first: bool },
}

fn bad_token(request: &Request<'_>) -> Response {
    request.error(StatusCode::BAD_REQUEST, "BadRequest", "Badly formed token.")
}

fn start(request: &Request<'_>, collection: Collection) -> Result<Start, Response> {
    let query = &request.query;
    for (option, present) in [
        ("$top", query.top.is_some()),
        ("$expand", query.expand.is_some()),
        ("$orderby", query.orderby.is_some()),
    ] {
        if present {
            return Err(request.error(
                StatusCode::BAD_REQUEST,
                "Request_UnsupportedQuery",
                &format!("The query option '{option}' is not supported with delta queries."),
            ));
        }
    }
    let lifetime = request.state.options.delta_token_lifetime.as_secs() as i64;
    let expired = |cursor: &Cursor| request.now - cursor.issued > lifetime;
    let expired_error = || {
        request.error(
            StatusCode::BAD_REQUEST,
            "syncStateNotFound",
            "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
        )
    };
    let upto = request.state.read().seq();
    if let Some(token) = &query.skiptoken {
        let cursor: Cursor = decode_token(request.state, token).ok_or_else(|| bad_token(request))?;
        if expired(&cursor) {
            return Err(expired_error());
        }
        return Ok(Start::Page { cursor, first: false });
    }
    let fresh_cursor = || -> Result<Cursor, Response> {
        let select = query.select_names();
        if let Some(names) = &select {
            let known = |name: &String| match collection {
                Collection::Users => user_prop_index(name).is_some(),
                Collection::Groups => group_prop_index(name).is_some(),
            };
            if let Some(name) = names.iter().find(|name| !known(name)) {
                let kind = if collection == Collection::Users {
                    "user"
                } else {
                    "group"
                };
                return Err(request.error(
                    StatusCode::BAD_REQUEST,
                    "Request_BadRequest",
                    &format!("Could not find a property named '{name}' on type 'microsoft.graph.{kind}'."),
                ));
            }
        }
        let ids = match &query.filter {
            None => None,
            Some(text) => {
                let ids = crate::query::parse_filter(text)
                    .ok()
                    .and_then(|filter| filter.id_list())
                    .ok_or_else(|| {
                        request.error(
                            StatusCode::BAD_REQUEST,
                            "Request_UnsupportedQuery",
                            "Unsupported Query.",
                        )
                    })?;
                if ids.len() > MAX_FILTER_IDS {
                    return Err(request.error(
                        StatusCode::BAD_REQUEST,
                        "Request_BadRequest",
                        &format!("The number of ids in the filter exceeds the limit of {MAX_FILTER_IDS}."),
                    ));
                }
                Some(ids)
            }
        };
        Ok(Cursor {
            select,
            ids,
            since: None,
            upto,
            after: None,
            partial: None,
            issued: request.now,
        })
    };
    match query.deltatoken.as_deref() {
        Some("latest") => {
            let mut cursor = fresh_cursor()?;
            cursor.since = Some(upto);
            Ok(Start::Latest(cursor))
        }
        // An empty $deltatoken is the documented reset Location: the initial query again.
        None | Some("") => Ok(Start::Page {
            cursor: fresh_cursor()?,
            first: true,
        }),
        Some(token) => {
            let previous: Cursor = decode_token(request.state, token).ok_or_else(|| bad_token(request))?;
            if expired(&previous) || previous.since.is_none() {
                return Err(if previous.since.is_none() {
                    bad_token(request)
                } else {
                    expired_error()
                });
            }
            Ok(Start::Page {
                cursor: Cursor {
                    upto,
                    after: None,
                    partial: None,
                    issued: request.now,
                    ..previous
                },
                first: false,
            })
        }
    }
}

/// Whether the client asked for only the changed properties.
fn minimal(request: &Request<'_>) -> bool {
    request
        .headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.to_ascii_lowercase().contains("return=minimal"))
}

/// The page written so far and where the next one starts.
struct Page {
    values: Vec<u8>,
    objects: usize,
    more: bool,
    after: Option<String>,
    partial: Option<(String, String)>,
}

impl Page {
    fn new() -> Page {
        Page {
            values: Vec::with_capacity(64 * 1024),
            objects: 0,
            more: false,
            after: None,
            partial: None,
        }
    }

    /// Starts the next object; `false` (and `more`) when the page is full.
    fn begin(&mut self) -> bool {
        if self.objects == DELTA_PAGE_SIZE {
            self.more = true;
            return false;
        }
        if self.objects > 0 {
            self.values.push(b',');
        }
        self.objects += 1;
        true
    }

    fn removed(&mut self, id: &str, reason: &str) {
        let mut object = ObjectWriter::new(&mut self.values);
        object.string("id", id);
        object.raw("@removed", &format!("{{\"reason\":\"{reason}\"}}"));
        object.finish();
        self.after = Some(id.to_owned());
    }
}

fn finish(
    request: &Request<'_>,
    collection: Collection,
    cursor: Cursor,
    first: bool,
    page: Page,
) -> Response {
    let name = collection.name();
    let base = format!("{}/v1.0/{name}/delta", request.state.url);
    let (link_key, link) = if page.more {
        let next = Cursor {
            after: page.after,
            partial: page.partial,
            ..cursor
        };
        (
            "@odata.nextLink",
            format!("{base}?$skiptoken={}", encode_token(request.state, &next)),
        )
    } else {
        let next = Cursor {
            since: Some(cursor.upto),
            upto: cursor.upto,
            after: None,
            partial: None,
            issued: request.now,
            ..cursor
        };
        (
            "@odata.deltaLink",
            format!("{base}?$deltatoken={}", encode_token(request.state, &next)),
        )
    };
    let context = if first {
        crate::collections::context(request, name, "")
    } else {
        format!("{}/v1.0/$metadata#{name}", request.state.url)
    };
    let mut body = Vec::with_capacity(page.values.len() + 512);
    let mut object = ObjectWriter::new(&mut body);
    object.string("@odata.context", &context);
    object.string(link_key, &link);
    let buf = object.key("value");
    buf.push(b'[');
    buf.extend_from_slice(&page.values);
    buf.push(b']');
    object.finish();
    crate::json::response(StatusCode::OK, body)
}

fn latest(request: &Request<'_>, collection: Collection, cursor: Cursor) -> Response {
    let page = Page::new();
    finish(request, collection, cursor, false, page)
}

/// The properties a selection renders and the change bits it tracks (all without `$select`).
fn user_props(select: &Option<Vec<String>>) -> (Vec<usize>, u64) {
    match select {
        None => (USER_DEFAULT.to_vec(), u64::MAX),
        Some(names) => {
            let mut props: Vec<usize> = names.iter().filter_map(|name| user_prop_index(name)).collect();
            props.dedup();
            if !props.contains(&0) {
                props.push(0);
            }
            let mask = props.iter().fold(0u64, |mask, index| mask | 1 << index);
            (props, mask)
        }
    }
}

fn group_props(select: &Option<Vec<String>>) -> (Vec<usize>, u64) {
    match select {
        None => ((0..=GROUP_MEMBERS).collect(), u64::MAX),
        Some(names) => {
            let mut props: Vec<usize> = names.iter().filter_map(|name| group_prop_index(name)).collect();
            props.dedup();
            if !props.contains(&0) {
                props.push(0);
            }
            let mask = props.iter().fold(0u64, |mask, index| mask | 1 << index);
            (props, mask)
        }
    }
}

/// Ids after `after` in order, restricted to the filter's ids when there is one.
fn candidates<'a, V>(
    map: &'a BTreeMap<Box<str>, V>,
    ids: Option<&'a BTreeSet<String>>,
    start: Bound<&'a str>,
) -> Box<dyn Iterator<Item = (&'a str, &'a V)> + 'a> {
    match ids {
        Some(ids) => Box::new(
            ids.range::<str, _>((start, Bound::Unbounded))
                .filter_map(move |id| map.get_key_value(id.as_str()))
                .map(|(id, value)| (&**id, value)),
        ),
        None => Box::new(
            map.range::<str, _>((start, Bound::Unbounded))
                .map(|(id, value)| (&**id, value)),
        ),
    }
}

pub(crate) fn users(request: &Request<'_>) -> Response {
    let (cursor, first) = match start(request, Collection::Users) {
        Ok(Start::Latest(cursor)) => return latest(request, Collection::Users, cursor),
        Ok(Start::Page { cursor, first }) => (cursor, first),
        Err(response) => return response,
    };
    let (props, tracked) = user_props(&cursor.select);
    let minimal = minimal(request);
    let ids: Option<BTreeSet<String>> = cursor.ids.as_ref().map(|ids| ids.iter().cloned().collect());
    let start = cursor.after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
    let directory = request.state.read();
    let mut page = Page::new();
    let full = UserStyle {
        null_mask: 0,
        delta: true,
    };
    match cursor.since {
        None => {
            for (id, user) in candidates(&directory.users, ids.as_ref(), start) {
                if !user.is_active() {
                    continue;
                }
                if !page.begin() {
                    break;
                }
                write_user(&mut page.values, id, user, &props, full);
                page.after = Some(id.to_owned());
            }
        }
        Some(since) => {
            let changes = user_changes(&directory, since, cursor.upto);
            let changed: Vec<(&str, UserChange)> = match start {
                Bound::Excluded(after) => changes
                    .range::<str, _>((Bound::Excluded(after), Bound::Unbounded))
                    .map(|(id, change)| (*id, *change))
                    .collect(),
                _ => changes.iter().map(|(id, change)| (*id, *change)).collect(),
            };
            for (id, change) in changed {
                if ids.as_ref().is_some_and(|ids| !ids.contains(id)) {
                    continue;
                }
                write_user_change(&mut page, &directory, id, change, &props, tracked, minimal);
                if page.more {
                    break;
                }
            }
        }
    }
    drop(directory);
    finish(request, Collection::Users, cursor, first, page)
}

#[derive(Clone, Copy, Default)]
struct UserChange {
    mask: u64,
    fresh: bool,
}

fn user_changes(directory: &Directory, since: u64, upto: u64) -> BTreeMap<&str, UserChange> {
    let mut changes: BTreeMap<&str, UserChange> = BTreeMap::new();
    for change in log_slice(directory, since, upto) {
        match change {
            Change::User { id, mask, fresh } => {
                let entry = changes.entry(id).or_default();
                entry.mask |= mask;
                entry.fresh |= fresh;
            }
            Change::UserRemoved { id } => {
                changes.entry(id).or_default();
            }
            _ => {}
        }
    }
    changes
}

fn log_slice(directory: &Directory, since: u64, upto: u64) -> &[Change] {
    let end = (upto as usize).min(directory.log.len());
    let start = (since as usize).min(end);
    &directory.log[start..end]
}

fn removal_reason(user: Option<&User>) -> Option<&'static str> {
    match user {
        None => Some("deleted"),
        Some(user) if !user.is_active() => Some("changed"),
        Some(_) => None,
    }
}

fn write_user_change(
    page: &mut Page,
    directory: &Directory,
    id: &str,
    change: UserChange,
    props: &[usize],
    tracked: u64,
    minimal: bool,
) {
    let user = directory.users.get(id);
    if let Some(reason) = removal_reason(user) {
        if page.begin() {
            page.removed(id, reason);
        }
        return;
    }
    let Some(user) = user else { return };
    let relevant = change.mask & tracked;
    if !change.fresh && relevant == 0 {
        return;
    }
    if !page.begin() {
        return;
    }
    if change.fresh {
        let style = UserStyle {
            null_mask: 0,
            delta: true,
        };
        write_user(&mut page.values, id, user, props, style);
    } else {
        let style = UserStyle {
            null_mask: relevant,
            delta: true,
        };
        let shown: Vec<usize> = if minimal {
            props
                .iter()
                .copied()
                .filter(|&index| index == 0 || relevant & (1 << index) != 0)
                .collect()
        } else {
            props.to_vec()
        };
        write_user(&mut page.values, id, user, &shown, style);
    }
    page.after = Some(id.to_owned());
}

#[derive(Default)]
struct GroupChange<'a> {
    mask: u64,
    fresh: bool,
    members: BTreeMap<&'a str, (MemberKind, bool)>,
}

fn group_changes(directory: &Directory, since: u64, upto: u64) -> BTreeMap<&str, GroupChange<'_>> {
    let mut changes: BTreeMap<&str, GroupChange<'_>> = BTreeMap::new();
    for change in log_slice(directory, since, upto) {
        match change {
            Change::Group { id, mask, fresh } => {
                let entry = changes.entry(id).or_default();
                entry.mask |= mask;
                entry.fresh |= fresh;
            }
            Change::GroupRemoved { id } => {
                changes.entry(id).or_default();
            }
            Change::Member {
                group,
                member,
                kind,
                added,
            } => {
                changes
                    .entry(group)
                    .or_default()
                    .members
                    .insert(member, (*kind, *added));
            }
            _ => {}
        }
    }
    changes
}

/// One `members@delta` reference: id, type, and whether it was removed.
type MemberRef<'a> = (&'a str, MemberKind, bool);

pub(crate) fn groups(request: &Request<'_>) -> Response {
    let (cursor, first) = match start(request, Collection::Groups) {
        Ok(Start::Latest(cursor)) => return latest(request, Collection::Groups, cursor),
        Ok(Start::Page { cursor, first }) => (cursor, first),
        Err(response) => return response,
    };
    let (props, tracked) = group_props(&cursor.select);
    let members_selected = tracked & (1 << GROUP_MEMBERS) != 0;
    let minimal = minimal(request);
    let ids: Option<BTreeSet<String>> = cursor.ids.as_ref().map(|ids| ids.iter().cloned().collect());
    // A split group is resumed first, then the groups after it.
    let (start, member_start) = match (&cursor.partial, &cursor.after) {
        (Some((group, member)), _) => (
            Bound::Included(group.as_str()),
            Some((group.as_str(), member.as_str())),
        ),
        (None, Some(after)) => (Bound::Excluded(after.as_str()), None),
        (None, None) => (Bound::Unbounded, None),
    };
    let member_after = |id: &str| {
        member_start
            .filter(|(group, _)| *group == id)
            .map(|(_, member)| member)
    };
    let directory = request.state.read();
    let mut page = Page::new();
    let mut budget = MEMBERS_PER_DELTA_PAGE;
    match cursor.since {
        None => {
            for (id, group) in candidates(&directory.groups, ids.as_ref(), start) {
                let refs = if members_selected {
                    current_members(&directory, group, member_after(id), budget)
                } else {
                    Vec::new()
                };
                let show = GroupShow {
                    props: &props,
                    null_mask: 0,
                    had_members: members_selected && !group.members.is_empty(),
                };
                if !write_group_entry(&mut page, &mut budget, id, group, &show, refs) {
                    break;
                }
            }
        }
        Some(since) => {
            let changes = group_changes(&directory, since, cursor.upto);
            let range = changes.range::<str, _>((start, Bound::Unbounded));
            for (id, change) in range {
                if ids.as_ref().is_some_and(|ids| !ids.contains(*id)) {
                    continue;
                }
                let Some(group) = directory.groups.get(*id) else {
                    if page.begin() {
                        page.removed(id, "deleted");
                    }
                    if page.more {
                        break;
                    }
                    continue;
                };
                let relevant = change.mask & tracked & !(1 << GROUP_MEMBERS);
                let (refs, had_members) = if change.fresh {
                    let refs = if members_selected {
                        current_members(&directory, group, member_after(id), budget)
                    } else {
                        Vec::new()
                    };
                    (refs, members_selected && !group.members.is_empty())
                } else if members_selected {
                    let after = member_after(id).map_or(Bound::Unbounded, Bound::Excluded);
                    let refs: Vec<MemberRef<'_>> = change
                        .members
                        .range::<&str, _>((after, Bound::Unbounded))
                        .take(budget + 1)
                        .map(|(member, (kind, added))| (*member, *kind, !*added))
                        .collect();
                    let had = !change.members.is_empty();
                    (refs, had)
                } else {
                    (Vec::new(), false)
                };
                if !change.fresh && relevant == 0 && !had_members {
                    continue;
                }
                let shown: Vec<usize> = if minimal && !change.fresh {
                    props
                        .iter()
                        .copied()
                        .filter(|&index| index == 0 || relevant & (1 << index) != 0)
                        .collect()
                } else {
                    props.clone()
                };
                let show = GroupShow {
                    props: &shown,
                    null_mask: if change.fresh { 0 } else { relevant },
                    had_members,
                };
                if !write_group_entry(&mut page, &mut budget, id, group, &show, refs) {
                    break;
                }
            }
        }
    }
    drop(directory);
    finish(request, Collection::Groups, cursor, first, page)
}

/// The group's visible members after `after`, at most `budget + 1` (one more tells that the
/// group continues on the next page).
fn current_members<'a>(
    directory: &'a Directory,
    group: &'a Group,
    after: Option<&str>,
    budget: usize,
) -> Vec<MemberRef<'a>> {
    let start = after.map_or(Bound::Unbounded, Bound::Excluded);
    group
        .members
        .range::<str, _>((start, Bound::Unbounded))
        .filter(|(member, kind)| directory.member_is_visible(member, **kind))
        .take(budget + 1)
        .map(|(member, kind)| (&**member, *kind, false))
        .collect()
}

struct GroupShow<'a> {
    props: &'a [usize],
    null_mask: u64,
    /// Whether the entry carries `members@delta` at all (a group without members has no key).
    had_members: bool,
}

/// Writes one group with as many of `refs` as the page's member budget allows; `false` when the
/// page is full (the group then continues on the next page).
fn write_group_entry(
    page: &mut Page,
    budget: &mut usize,
    id: &str,
    group: &Group,
    show: &GroupShow<'_>,
    refs: Vec<MemberRef<'_>>,
) -> bool {
    if show.had_members && !refs.is_empty() && *budget == 0 {
        page.more = true;
        return false;
    }
    if !page.begin() {
        return false;
    }
    let take = refs.len().min(*budget);
    let split = refs.len() > take;
    let object = group_json(id, group);
    let mut writer = ObjectWriter::new(&mut page.values);
    write_group(&mut writer, &object, show.props, show.null_mask);
    if show.had_members && !refs.is_empty() {
        let buf = writer.key("members@delta");
        buf.push(b'[');
        for (index, (member, kind, removed)) in refs[..take].iter().enumerate() {
            if index > 0 {
                buf.push(b',');
            }
            buf.extend_from_slice(b"{\"@odata.type\":");
            push_str(buf, kind.odata_type());
            buf.extend_from_slice(b",\"id\":");
            push_str(buf, member);
            if *removed {
                buf.extend_from_slice(b",\"@removed\":{\"reason\":\"deleted\"}");
            }
            buf.push(b'}');
        }
        buf.push(b']');
    }
    writer.finish();
    *budget -= take;
    if split {
        page.partial = Some((id.to_owned(), refs[take - 1].0.to_owned()));
        page.more = true;
        return false;
    }
    page.partial = None;
    page.after = Some(id.to_owned());
    true
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::http::HeaderMap;

    use crate::EmulatorOptions;
    use crate::query::Query;
    use crate::server::{AppState, Request};

    /// The bench pages 100,000 users through delta; the emulator must not dominate it.
    #[tokio::test]
    async fn pages_a_hundred_thousand_users_quickly() {
        let started = Instant::now();
        let directory = crate::generate::tenant(100_000, 100, 1);
        let generated = started.elapsed();
        let state = AppState::new(
            EmulatorOptions::default(),
            directory,
            "http://127.0.0.1:1".to_owned(),
        )
        .expect("the state builds");
        let headers = HeaderMap::new();
        let mut rendered = std::time::Duration::ZERO;
        let mut query: Option<String> = None;
        let (mut pages, mut users) = (0, 0);
        loop {
            let request = Request {
                state: &state,
                query: Query::parse(query.as_deref()),
                headers: &headers,
                now: state.clock.now(),
                request_id: String::new(),
                roles: Vec::new(),
            };
            let rendering = Instant::now();
            let response = super::users(&request);
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("a body");
            rendered += rendering.elapsed();
            // Count objects without a full parse, so the timing is the emulator's.
            users += body.windows(5).filter(|window| window == b"{\"bus").count();
            pages += 1;
            let text = std::str::from_utf8(&body).expect("UTF-8");
            match text.find("$skiptoken=") {
                Some(at) => {
                    let token: String = text[at..].chars().take_while(|c| *c != '"').collect();
                    query = Some(token);
                }
                None => {
                    assert!(text.contains("@odata.deltaLink"), "the last page has a deltaLink");
                    break;
                }
            }
        }
        eprintln!("generated 100,000 users in {generated:?}; rendered {pages} delta pages in {rendered:?}");
        assert_eq!(users, 100_000);
        assert_eq!(pages, 100_000usize.div_ceil(crate::DELTA_PAGE_SIZE));
        assert!(rendered.as_secs_f64() < 2.0, "rendering took {rendered:?}");
        assert!(generated.as_secs_f64() < 10.0, "generating took {generated:?}");
    }
}
