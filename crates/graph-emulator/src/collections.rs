//! Collection and single-object reads: `/users`, `/users/{id|upn}`, `/groups`, `/groups/{id}`,
//! `/groups/{id}/members`, `/transitiveMembers` and `/subscribedSkus`, with `$select`, `$top`,
//! `$filter`, `$count`, `$search` and `$skiptoken` paging.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::json::ObjectWriter;
use crate::model::{Directory, Field, Group, MemberKind, User};
use crate::query::{Filter, Scalar, parse_filter};
use crate::render::{
    GROUP_MEMBERS, GROUP_PROPS, USER_DEFAULT, USER_MANAGER, USER_NOT_IN_COLLECTIONS, USER_PROPS,
    USER_SIGN_IN_ACTIVITY, UserProp, UserStyle, group_json, group_prop_index, user_prop_index, write_group,
    write_user,
};
use crate::server::Request;

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 999;
const MAX_PAGE_SIGN_IN_ACTIVITY: usize = 500;

/// The paging position of a collection: the id of the last object served.
#[derive(serde::Serialize, serde::Deserialize)]
struct ListCursor {
    after: String,
}

const COLLECTION_STYLE: UserStyle = UserStyle {
    null_mask: u64::MAX,
    delta: false,
};

/// A user property as filters see it.
pub(crate) fn user_scalar<'a>(id: &'a str, user: &'a User, name: &str) -> Scalar<'a> {
    let text = |value: Option<&'a str>| value.map_or(Scalar::Null, Scalar::Text);
    match user_prop_index(name).map(|index| USER_PROPS[index].1) {
        Some(UserProp::Id) => Scalar::Text(id),
        Some(UserProp::Text(field)) => text(user.get(field)),
        Some(UserProp::AccountEnabled) => Scalar::Bool(user.account_enabled),
        Some(UserProp::AssignedLicenses) => Scalar::Many(user.licenses().map(str::to_owned).collect()),
        Some(UserProp::BusinessPhones) => Scalar::Many(
            user.get(Field::BusinessPhone)
                .map(str::to_owned)
                .into_iter()
                .collect(),
        ),
        Some(UserProp::ProxyAddresses) => Scalar::Many(
            user.get(Field::Mail)
                .map(|mail| format!("SMTP:{mail}"))
                .into_iter()
                .collect(),
        ),
        _ => Scalar::Null,
    }
}

fn group_scalar<'a>(object: &'a serde_json::Map<String, Value>, name: &str) -> Scalar<'a> {
    let found = object
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value);
    match found {
        Some(Value::String(text)) => Scalar::Text(text),
        Some(Value::Bool(flag)) => Scalar::Bool(*flag),
        Some(Value::Array(items)) => Scalar::Many(
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        _ => Scalar::Null,
    }
}

/// The checks every collection shares: `$skip`, `$orderby`, `$expand`, `$count` and `$search`
/// need what Graph needs.
fn check_common(request: &Request<'_>, count_segment: bool) -> Result<(), Response> {
    let query = &request.query;
    if query.skip.is_some() {
        return Err(request.error(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            "'$skip' is not supported by the service.",
        ));
    }
    if (query.count_requested() || count_segment) && !request.eventual() {
        return Err(request.error(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            "$count is not currently supported.",
        ));
    }
    if query.search.is_some() && !request.eventual() {
        return Err(request.error(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            "Request with $search query parameter only works through MSGraph with a special request header: 'ConsistencyLevel: eventual'",
        ));
    }
    if query.orderby.is_some() {
        return Err(request.error(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            "Sorting not supported for current query.",
        ));
    }
    if let Some(expand) = &query.expand {
        return Err(request.error(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            &format!("The emulator does not support $expand={expand} on collections."),
        ));
    }
    Ok(())
}

fn parse_top(request: &Request<'_>, max: usize) -> Result<usize, Response> {
    match &request.query.top {
        None => Ok(DEFAULT_PAGE),
        Some(text) => match text.parse::<usize>() {
            Ok(top) if (1..=max).contains(&top) => Ok(top),
            _ => Err(request.error(
                StatusCode::BAD_REQUEST,
                "Request_BadRequest",
                &format!("Invalid page size specified: '{text}'. Must be between 1 and {max} inclusive."),
            )),
        },
    }
}

/// Parses `$filter`, checks its properties against `known`, and that advanced operators come with
/// `ConsistencyLevel: eventual` and `$count=true`.
fn parse_checked_filter(
    request: &Request<'_>,
    known: &dyn Fn(&str) -> bool,
    resource: &str,
) -> Result<Option<Filter>, Response> {
    let Some(text) = &request.query.filter else {
        return Ok(None);
    };
    let filter = parse_filter(text)
        .map_err(|error| request.error(StatusCode::BAD_REQUEST, error.code, &error.message))?;
    if let Some(property) = filter.properties().into_iter().find(|property| !known(property)) {
        return Err(request.error(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            &format!("Unsupported or invalid query filter clause specified for property '{property}' of resource '{resource}'."),
        ));
    }
    if filter.is_advanced() && !(request.eventual() && request.query.count_requested()) {
        return Err(request.error(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            "Unsupported Query.",
        ));
    }
    Ok(Some(filter))
}

/// `$search="property:words"`, matched as a case-insensitive substring.
fn parse_search(request: &Request<'_>) -> Option<(String, String)> {
    let search = request.query.search.as_deref()?.trim().trim_matches('"');
    let (property, words) = search.split_once(':')?;
    Some((property.to_owned(), words.to_lowercase()))
}

/// The user properties of `$select` (indexes in USER_PROPS), or the defaults; `id` is always in.
pub(crate) fn user_selection(request: &Request<'_>, collection: bool) -> Result<Vec<usize>, Response> {
    let Some(names) = request.query.select_names() else {
        return Ok(USER_DEFAULT.to_vec());
    };
    let mut props = Vec::new();
    for name in &names {
        if collection
            && USER_NOT_IN_COLLECTIONS
                .iter()
                .any(|unsupported| unsupported.eq_ignore_ascii_case(name))
        {
            return Err(request.error(
                StatusCode::NOT_IMPLEMENTED,
                "NotImplemented",
                "This operation target is not yet supported.",
            ));
        }
        match user_prop_index(name) {
            Some(index) if !(collection && index == USER_MANAGER) => {
                if !props.contains(&index) {
                    props.push(index);
                }
            }
            _ => {
                return Err(request.error(
                    StatusCode::BAD_REQUEST,
                    "Request_BadRequest",
                    &format!("Could not find a property named '{name}' on type 'microsoft.graph.user'."),
                ));
            }
        }
    }
    if !props.contains(&0) {
        props.push(0);
    }
    Ok(props)
}

/// The group properties of `$select`, or all of them; `id` is always in.
pub(crate) fn group_selection(request: &Request<'_>, allow_members: bool) -> Result<Vec<usize>, Response> {
    let Some(names) = request.query.select_names() else {
        let mut all: Vec<usize> = (0..GROUP_PROPS.len()).collect();
        if !allow_members {
            all.retain(|&index| index != GROUP_MEMBERS);
        }
        return Ok(all);
    };
    let mut props = Vec::new();
    for name in &names {
        match group_prop_index(name) {
            Some(index) if allow_members || index != GROUP_MEMBERS => {
                if !props.contains(&index) {
                    props.push(index);
                }
            }
            _ => {
                return Err(request.error(
                    StatusCode::BAD_REQUEST,
                    "Request_BadRequest",
                    &format!("Could not find a property named '{name}' on type 'microsoft.graph.group'."),
                ));
            }
        }
    }
    if !props.contains(&0) {
        props.insert(0, 0);
    }
    Ok(props)
}

/// `#users` or `#users(displayName,id)` as Graph writes `@odata.context`.
pub(crate) fn context(request: &Request<'_>, entity_set: &str, suffix: &str) -> String {
    let select = request
        .query
        .select_names()
        .map(|names| {
            let names: Vec<&str> = names
                .iter()
                .map(String::as_str)
                .filter(|name| !name.eq_ignore_ascii_case("members") && !name.eq_ignore_ascii_case("manager"))
                .collect();
            format!("({})", names.join(","))
        })
        .unwrap_or_default();
    format!(
        "{}/v1.0/$metadata#{entity_set}{select}{suffix}",
        request.state.url
    )
}

fn after_cursor(request: &Request<'_>) -> Result<Option<String>, Response> {
    match &request.query.skiptoken {
        None => Ok(None),
        Some(token) => crate::delta::decode_token::<ListCursor>(request.state, token)
            .map(|cursor| Some(cursor.after))
            .ok_or_else(|| {
                request.error(
                    StatusCode::BAD_REQUEST,
                    "Directory_ExpiredPageToken",
                    "The specified page token value has expired and can no longer be included in your request.",
                )
            }),
    }
}

fn next_link(request: &Request<'_>, path: &str, last: &str) -> String {
    let token = crate::delta::encode_token(
        request.state,
        &ListCursor {
            after: last.to_owned(),
        },
    );
    format!(
        "{}/v1.0/{path}?{}",
        request.state.url,
        request.query.with_skiptoken(&token)
    )
}

fn page_body(context: &str, count: Option<usize>, next: Option<&str>, values: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(values.len() + 256);
    let mut object = ObjectWriter::new(&mut body);
    object.string("@odata.context", context);
    if let Some(count) = count {
        object.raw("@odata.count", &count.to_string());
    }
    if let Some(next) = next {
        object.string("@odata.nextLink", next);
    }
    let buf = object.key("value");
    buf.push(b'[');
    buf.extend_from_slice(values);
    buf.push(b']');
    object.finish();
    body
}

fn count_response(count: usize) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain")],
        count.to_string(),
    )
        .into_response()
}

fn range_after<'a, V>(
    map: &'a BTreeMap<Box<str>, V>,
    after: Option<&str>,
) -> std::collections::btree_map::Range<'a, Box<str>, V> {
    match after {
        Some(after) => map.range::<str, _>((Bound::Excluded(after), Bound::Unbounded)),
        None => map.range::<str, _>((Bound::Unbounded, Bound::Unbounded)),
    }
}

/// Which users a listing shows.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum UserListing {
    /// `/users`: the directory's live users.
    Active,
    /// `/directory/deletedItems/microsoft.graph.user`: soft-deleted users, restorable for 30 days.
    DeletedItems,
}

impl UserListing {
    fn path(self) -> &'static str {
        match self {
            UserListing::Active => "users",
            UserListing::DeletedItems => "directory/deletedItems/microsoft.graph.user",
        }
    }
}

pub(crate) fn list_users(request: &Request<'_>, listing: UserListing, count_segment: bool) -> Response {
    match try_list_users(request, listing, count_segment) {
        Ok(response) | Err(response) => response,
    }
}

fn try_list_users(
    request: &Request<'_>,
    listing: UserListing,
    count_segment: bool,
) -> Result<Response, Response> {
    check_common(request, count_segment)?;
    let props = user_selection(request, true)?;
    let filter = parse_checked_filter(request, &|name| user_prop_index(name).is_some(), "User")?;
    let sign_in = props.contains(&USER_SIGN_IN_ACTIVITY)
        || filter.as_ref().is_some_and(|filter| {
            filter
                .properties()
                .iter()
                .any(|name| name.eq_ignore_ascii_case("signInActivity"))
        });
    if sign_in {
        audit_log_allowed(request)?;
    }
    let top = parse_top(
        request,
        if sign_in {
            MAX_PAGE_SIGN_IN_ACTIVITY
        } else {
            MAX_PAGE
        },
    )?;
    let search = parse_search(request);
    let after = after_cursor(request)?;
    let directory = request.state.read();
    let matches = |id: &str, user: &User| {
        user.is_active() == (listing == UserListing::Active)
            && filter
                .as_ref()
                .is_none_or(|filter| filter.matches(&|name| user_scalar(id, user, name)))
            && search
                .as_ref()
                .is_none_or(|(property, words)| match user_scalar(id, user, property) {
                    Scalar::Text(text) => text.to_lowercase().contains(words.as_str()),
                    _ => false,
                })
    };
    if count_segment {
        let count = directory
            .users
            .iter()
            .filter(|(id, user)| matches(id, user))
            .count();
        return Ok(count_response(count));
    }
    let count = (request.query.count_requested() && after.is_none()).then(|| {
        directory
            .users
            .iter()
            .filter(|(id, user)| matches(id, user))
            .count()
    });
    let mut values = Vec::new();
    let mut last: Option<&str> = None;
    let mut more = false;
    let candidates = range_after(&directory.users, after.as_deref()).filter(|(id, user)| matches(id, user));
    for (served, (id, user)) in candidates.enumerate() {
        if served == top {
            more = true;
            break;
        }
        if served > 0 {
            values.push(b',');
        }
        write_user(&mut values, id, user, &props, COLLECTION_STYLE);
        last = Some(id);
    }
    let next = match (more, last) {
        (true, Some(last)) => Some(next_link(request, listing.path(), last)),
        _ => None,
    };
    let body = page_body(&context(request, "users", ""), count, next.as_deref(), &values);
    Ok(crate::json::response(StatusCode::OK, body))
}

fn not_found(request: &Request<'_>, id: &str) -> Response {
    request.error(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

pub(crate) fn get_user(request: &Request<'_>, key: &str) -> Response {
    let props = match user_selection(request, true) {
        Ok(props) => props,
        Err(response) => return response,
    };
    if props.contains(&USER_SIGN_IN_ACTIVITY)
        && let Err(refused) = audit_log_allowed(request)
    {
        return refused;
    }
    let directory = request.state.read();
    let found = match directory.users.get_key_value(key) {
        Some((id, user)) => Some((&**id, user)),
        None => directory
            .find_user_by_upn(key)
            .and_then(|id| directory.users.get_key_value(id))
            .map(|(id, user)| (&**id, user)),
    };
    let Some((id, user)) = found.filter(|(_, user)| user.is_active()) else {
        return not_found(request, key);
    };
    let mut body = Vec::new();
    write_user(&mut body, id, user, &props, COLLECTION_STYLE);
    // Splice `@odata.context` in front of the object's properties.
    let context = context(request, "users", "/$entity");
    let mut with_context = Vec::with_capacity(body.len() + context.len() + 24);
    let mut object = ObjectWriter::new(&mut with_context);
    object.string("@odata.context", &context);
    object.finish();
    with_context.pop();
    if body.len() > 2 {
        with_context.push(b',');
    }
    with_context.extend_from_slice(&body[1..]);
    crate::json::response(StatusCode::OK, with_context)
}

pub(crate) fn list_groups(request: &Request<'_>, count_segment: bool) -> Response {
    match try_list_groups(request, count_segment) {
        Ok(response) | Err(response) => response,
    }
}

fn try_list_groups(request: &Request<'_>, count_segment: bool) -> Result<Response, Response> {
    check_common(request, count_segment)?;
    let props = group_selection(request, false)?;
    let filter = parse_checked_filter(request, &|name| group_prop_index(name).is_some(), "Group")?;
    let top = parse_top(request, MAX_PAGE)?;
    let search = parse_search(request);
    let after = after_cursor(request)?;
    let directory = request.state.read();
    let matches = |object: &serde_json::Map<String, Value>| {
        filter
            .as_ref()
            .is_none_or(|filter| filter.matches(&|name| group_scalar(object, name)))
            && search
                .as_ref()
                .is_none_or(|(property, words)| match group_scalar(object, property) {
                    Scalar::Text(text) => text.to_lowercase().contains(words.as_str()),
                    _ => false,
                })
    };
    let all = |after: Option<&str>| {
        range_after(&directory.groups, after)
            .map(|(id, group)| (id, group_json(id, group)))
            .filter(|(_, object)| matches(object))
    };
    if count_segment {
        return Ok(count_response(all(None).count()));
    }
    let count = (request.query.count_requested() && after.is_none()).then(|| all(None).count());
    let mut values = Vec::new();
    let mut last: Option<&str> = None;
    let mut more = false;
    for (served, (id, object)) in all(after.as_deref()).enumerate() {
        if served == top {
            more = true;
            break;
        }
        if served > 0 {
            values.push(b',');
        }
        let mut writer = ObjectWriter::new(&mut values);
        write_group(&mut writer, &object, &props, u64::MAX);
        writer.finish();
        last = Some(id);
    }
    let next = match (more, last) {
        (true, Some(last)) => Some(next_link(request, "groups", last)),
        _ => None,
    };
    let body = page_body(&context(request, "groups", ""), count, next.as_deref(), &values);
    Ok(crate::json::response(StatusCode::OK, body))
}

pub(crate) fn get_group(request: &Request<'_>, id: &str) -> Response {
    let props = match group_selection(request, false) {
        Ok(props) => props,
        Err(response) => return response,
    };
    let directory = request.state.read();
    let Some(group) = directory.groups.get(id) else {
        return not_found(request, id);
    };
    let object = group_json(id, group);
    let mut body = Vec::new();
    let mut writer = ObjectWriter::new(&mut body);
    writer.string("@odata.context", &context(request, "groups", "/$entity"));
    write_group(&mut writer, &object, &props, u64::MAX);
    writer.finish();
    crate::json::response(StatusCode::OK, body)
}

/// Members of a group, direct or transitive; transitive walks are cycle-safe.
fn member_list(
    directory: &Directory,
    id: &str,
    group: &Group,
    transitive: bool,
) -> BTreeMap<Box<str>, MemberKind> {
    let visible = |member: &str, kind: MemberKind| directory.member_is_visible(member, kind);
    if !transitive {
        return group
            .members
            .iter()
            .filter(|(member, kind)| visible(member, **kind))
            .map(|(member, kind)| (member.clone(), *kind))
            .collect();
    }
    let mut found = BTreeMap::new();
    let mut seen: BTreeSet<&str> = BTreeSet::from([id]);
    let mut queue: VecDeque<&Group> = VecDeque::from([group]);
    while let Some(current) = queue.pop_front() {
        for (member, kind) in &current.members {
            if !visible(member, *kind) {
                continue;
            }
            found.insert(member.clone(), *kind);
            if *kind == MemberKind::Group
                && seen.insert(member)
                && let Some(child) = directory.groups.get(member)
            {
                queue.push_back(child);
            }
        }
    }
    found
}

pub(crate) fn members(request: &Request<'_>, id: &str, transitive: bool, rest: &[&str]) -> Response {
    match try_members(request, id, transitive, rest) {
        Ok(response) | Err(response) => response,
    }
}

fn try_members(
    request: &Request<'_>,
    id: &str,
    transitive: bool,
    rest: &[&str],
) -> Result<Response, Response> {
    let (cast, count_segment) = match rest {
        [] => (None, false),
        ["$count"] => (None, true),
        [cast] => (Some(*cast), false),
        [cast, "$count"] => (Some(*cast), true),
        _ => {
            return Err(request.error(
                StatusCode::BAD_REQUEST,
                "Request_UnsupportedQuery",
                "Unsupported Query.",
            ));
        }
    };
    let cast = match cast {
        None => None,
        Some("microsoft.graph.user") => Some(MemberKind::User),
        Some("microsoft.graph.group") => Some(MemberKind::Group),
        Some(_) => {
            return Err(request.error(
                StatusCode::BAD_REQUEST,
                "Request_UnsupportedQuery",
                "Unsupported Query.",
            ));
        }
    };
    check_common(request, count_segment)?;
    // GRAPH.md §2.3: an OData cast on members is an advanced query.
    if cast.is_some() && !(request.eventual() && (request.query.count_requested() || count_segment)) {
        return Err(request.error(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            "Unsupported Query.",
        ));
    }
    if request.query.filter.is_some() || request.query.search.is_some() {
        return Err(request.error(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            "Unsupported Query.",
        ));
    }
    let top = parse_top(request, MAX_PAGE)?;
    let after = after_cursor(request)?;
    // With `$select`, each member gets the selected properties its type has.
    let (user_props, group_props) = match request.query.select_names() {
        None => (USER_DEFAULT.to_vec(), (0..GROUP_MEMBERS).collect::<Vec<usize>>()),
        Some(names) => {
            let mut user_props: Vec<usize> = names
                .iter()
                .filter_map(|name| user_prop_index(name))
                .filter(|&index| index != USER_MANAGER)
                .collect();
            let mut group_props: Vec<usize> = names
                .iter()
                .filter_map(|name| group_prop_index(name))
                .filter(|&index| index != GROUP_MEMBERS)
                .collect();
            if cast != Some(MemberKind::Group) && user_props.is_empty() && group_props.is_empty() {
                return Err(request.error(
                    StatusCode::BAD_REQUEST,
                    "Request_BadRequest",
                    &format!(
                        "Could not find a property named '{}' on type 'microsoft.graph.directoryObject'.",
                        names.join(",")
                    ),
                ));
            }
            if !user_props.contains(&0) {
                user_props.push(0);
            }
            if !group_props.contains(&0) {
                group_props.push(0);
            }
            (user_props, group_props)
        }
    };
    let directory = request.state.read();
    let Some(group) = directory.groups.get(id) else {
        return Err(not_found(request, id));
    };
    let members: BTreeMap<Box<str>, MemberKind> = member_list(&directory, id, group, transitive)
        .into_iter()
        .filter(|(_, kind)| cast.is_none_or(|cast| cast == *kind))
        .collect();
    if count_segment {
        return Ok(count_response(members.len()));
    }
    let count = (request.query.count_requested() && after.is_none()).then_some(members.len());
    let mut values = Vec::new();
    let mut served = 0;
    let mut last: Option<&str> = None;
    let mut more = false;
    for (member, kind) in range_after(&members, after.as_deref()) {
        if served == top {
            more = true;
            break;
        }
        match kind {
            MemberKind::User => {
                let Some(user) = directory.users.get(member) else {
                    continue;
                };
                if served > 0 {
                    values.push(b',');
                }
                let mut object = Vec::new();
                write_user(&mut object, member, user, &user_props, COLLECTION_STYLE);
                values.extend_from_slice(b"{\"@odata.type\":\"#microsoft.graph.user\"");
                if object.len() > 2 {
                    values.push(b',');
                }
                values.extend_from_slice(&object[1..]);
            }
            MemberKind::Group => {
                let Some(child) = directory.groups.get(member) else {
                    continue;
                };
                if served > 0 {
                    values.push(b',');
                }
                let object = group_json(member, child);
                let mut writer = ObjectWriter::new(&mut values);
                writer.string("@odata.type", "#microsoft.graph.group");
                write_group(&mut writer, &object, &group_props, u64::MAX);
                writer.finish();
            }
        }
        served += 1;
        last = Some(member);
    }
    let relation = if transitive {
        "transitiveMembers"
    } else {
        "members"
    };
    let next = match (more, last) {
        (true, Some(last)) => Some(next_link(
            request,
            &format!("groups/{id}/{relation}{}", cast_suffix(cast)),
            last,
        )),
        _ => None,
    };
    let context = match cast {
        None => format!("{}/v1.0/$metadata#directoryObjects", request.state.url),
        Some(MemberKind::User) => context(request, "users", ""),
        Some(MemberKind::Group) => context(request, "groups", ""),
    };
    let body = page_body(&context, count, next.as_deref(), &values);
    Ok(crate::json::response(StatusCode::OK, body))
}

fn cast_suffix(cast: Option<MemberKind>) -> &'static str {
    match cast {
        None => "",
        Some(MemberKind::User) => "/microsoft.graph.user",
        Some(MemberKind::Group) => "/microsoft.graph.group",
    }
}

/// Roles that let an app read `subscribedSkus` (least privileged first).
const SKU_ROLES: &[&str] = &[
    "LicenseAssignment.Read.All",
    "Organization.Read.All",
    "Directory.Read.All",
    "Organization.ReadWrite.All",
    "Directory.ReadWrite.All",
];

/// Sign-in activity and the MFA registration report need AuditLog.Read.All and an Entra ID P1 or
/// P2 licence in the tenant; Graph answers 403 with these codes otherwise (GRAPH.md §5.1 and
/// Microsoft's issue trackers).
fn audit_log_allowed(request: &Request<'_>) -> Result<(), Response> {
    if !request.has_role(&["AuditLog.Read.All"]) {
        return Err(request.error(
            StatusCode::FORBIDDEN,
            "Authentication_MSGraphPermissionMissing",
            "Calling principal does not have required MSGraph permissions AuditLog.Read.All",
        ));
    }
    if !request.state.premium() {
        return Err(request.error(
            StatusCode::FORBIDDEN,
            "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
            "Neither tenant is B2C or tenant doesn't have premium license",
        ));
    }
    Ok(())
}

/// `GET /reports/authenticationMethods/userRegistrationDetails`: one entry per active user, paged
/// like `/users`.
pub(crate) fn user_registration_details(request: &Request<'_>) -> Response {
    match try_user_registration_details(request) {
        Ok(response) | Err(response) => response,
    }
}

fn try_user_registration_details(request: &Request<'_>) -> Result<Response, Response> {
    audit_log_allowed(request)?;
    check_common(request, false)?;
    let top = parse_top(request, MAX_PAGE)?;
    let after = after_cursor(request)?;
    let directory = request.state.read();
    let updated = crate::clock::iso(request.now);
    let mut values = Vec::new();
    let mut last: Option<&str> = None;
    let mut more = false;
    let active = range_after(&directory.users, after.as_deref()).filter(|(_, user)| user.is_active());
    for (served, (id, user)) in active.enumerate() {
        if served == top {
            more = true;
            break;
        }
        if served > 0 {
            values.push(b',');
        }
        let methods: &[&str] = if user.mfa_registered {
            &["microsoftAuthenticatorPush"]
        } else {
            &[]
        };
        let entry = json!({
            "id": &**id,
            "userPrincipalName": user.get(Field::UserPrincipalName),
            "userDisplayName": user.get(Field::DisplayName),
            "userType": if user.get(Field::UserType) == Some("Guest") { "guest" } else { "member" },
            "isAdmin": false,
            "isSsprRegistered": false,
            "isSsprEnabled": false,
            "isSsprCapable": false,
            "isMfaRegistered": user.mfa_registered,
            "isMfaCapable": user.mfa_registered,
            "isPasswordlessCapable": false,
            "methodsRegistered": methods,
            "lastUpdatedDateTime": updated,
        });
        values.extend_from_slice(entry.to_string().as_bytes());
        last = Some(id);
    }
    let path = "reports/authenticationMethods/userRegistrationDetails";
    let next = match (more, last) {
        (true, Some(last)) => Some(next_link(request, path, last)),
        _ => None,
    };
    let context = format!(
        "{}/v1.0/$metadata#reports/authenticationMethods/userRegistrationDetails",
        request.state.url
    );
    Ok(crate::json::response(
        StatusCode::OK,
        page_body(&context, None, next.as_deref(), &values),
    ))
}

pub(crate) fn subscribed_skus(request: &Request<'_>) -> Response {
    if !request.has_role(SKU_ROLES) {
        return request.error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        );
    }
    let directory = request.state.read();
    let tenant = &request.state.options.tenant_id;
    let skus: Vec<Value> = directory
        .skus
        .iter()
        .map(|sku| {
            let consumed = directory
                .users
                .values()
                .filter(|user| user.is_active() && user.licenses().any(|id| id == sku.sku_id))
                .count();
            json!({
                "accountName": directory.company,
                "accountId": tenant,
                "appliesTo": "User",
                "capabilityStatus": "Enabled",
                "consumedUnits": consumed,
                "id": format!("{tenant}_{}", sku.sku_id),
                "prepaidUnits": { "enabled": sku.prepaid_units, "suspended": 0, "warning": 0, "lockedOut": 0 },
                "servicePlans": [],
                "skuId": sku.sku_id,
                "skuPartNumber": sku.sku_part_number,
                "subscriptionIds": [],
            })
        })
        .collect();
    let mut body = Vec::new();
    let mut object = ObjectWriter::new(&mut body);
    object.string(
        "@odata.context",
        &format!("{}/v1.0/$metadata#subscribedSkus", request.state.url),
    );
    object.raw("value", &Value::Array(skus).to_string());
    object.finish();
    crate::json::response(StatusCode::OK, body)
}
