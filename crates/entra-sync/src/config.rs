//! The configuration file: parsed in two stages, `ConfigFile` (serde, unknown keys refused) and
//! `Config` (validated: URLs parsed, schedules checked, secrets located but not read).
//!
//! The doc comment on every field of the `*File` structs is the config reference; README.md's
//! reference section repeats it for readers who do not read Rust.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use entra_sync_core::map::Field;
use entra_sync_core::policy::{
    Assignments, ExistingUsers, FieldSetting, GroupMembership, GroupsToSync, Guards, MatchBy, NameRule,
    OnDeleted, OnDisabled, OnOutOfScope, Policy, Scope, SourceAttribute,
};
use serde::Deserialize;
use url::Url;

use crate::mail::{EmailSettings, PasswordSource, Template, TlsMode};

/// The global Entra token authority.
pub const DEFAULT_AUTHORITY_URL: &str = "https://login.microsoftonline.com";
/// The global Microsoft Graph root.
pub const DEFAULT_GRAPH_URL: &str = "https://graph.microsoft.com";

/// The whole config file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Folder for the embedded SQLite database (`entra-sync.db`, with its write-ahead log
    /// `entra-sync.db-wal` beside it); relative paths are relative to the config file. Default
    /// `./data`.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// The service's listener (used by `serve`).
    #[serde(default)]
    pub server: Option<ServerFile>,
    /// One entry per Entra tenant.
    #[serde(default)]
    pub connections: Vec<ConnectionFile>,
}

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    /// Address the service listens on. Default `127.0.0.1:8080`.
    pub listen: Option<String>,
    /// Days the run history is kept: `serve` deletes older runs with their actions and
    /// conflicts, and older changes of the change feed, and clears old sent emails' recipient,
    /// subject and body, once a day. Default 90.
    pub history_days: Option<u32>,
}

/// One `[[connections]]` entry: a tenant and how it syncs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionFile {
    /// Unique name of the connection; also the directory organization unless `organization` is set.
    pub name: String,
    /// The directory organization this tenant's users go to. Default: `name`.
    pub organization: Option<String>,
    /// The Entra tenant id (GUID) or a verified domain.
    pub tenant_id: String,
    /// The app registration's Application (client) ID.
    pub client_id: String,
    /// The client secret's Value, inline. Prefer `client_secret_env` or `client_secret_file`.
    pub client_secret: Option<String>,
    /// Name of an environment variable holding the client secret's Value.
    pub client_secret_env: Option<String>,
    /// A file holding the client secret's Value (trailing newline ignored).
    pub client_secret_file: Option<PathBuf>,
    /// A PEM certificate registered on the app, used with `private_key_file` instead of a secret.
    pub certificate_file: Option<PathBuf>,
    /// The PEM private key of `certificate_file`.
    pub private_key_file: Option<PathBuf>,
    /// Token authority; the token endpoint is `{authority_url}/{tenant_id}/oauth2/v2.0/token`.
    /// Default `https://login.microsoftonline.com`. Plain `http://` only for loopback hosts.
    pub authority_url: Option<String>,
    /// Microsoft Graph root; requests go to `{graph_url}/v1.0/...`. Default
    /// `https://graph.microsoft.com`. Plain `http://` only for loopback hosts.
    pub graph_url: Option<String>,
    /// `every 30m`, `every 1h`, `every 2h`, `every 1d`, or a cron expression. Default `every 1h`.
    pub schedule: Option<String>,
    /// Start time of an interval schedule, `HH:MM` (UTC).
    pub start_at: Option<String>,
    /// How often a scheduled run reads everything instead of only the changes, as in `12h` or
    /// `7d`; this corrects changes made in the directory behind the sync's back. Default `1d`.
    pub full_sync_every: Option<String>,
    /// Read licence names, last sign-ins and MFA registration in full runs (`microsoft.rs`).
    /// Default `true`; sign-ins and MFA also need AuditLog.Read.All and an Entra ID P1/P2 tenant.
    pub microsoft_data: Option<bool>,
    /// A disabled connection is not synced and its users are kept. Default `true`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Who is synced; see `ScopeFile`.
    #[serde(default)]
    pub scope: ScopeFile,
    /// What the sync does; see `OptionsFile`.
    #[serde(default)]
    pub options: OptionsFile,
    /// `[connections.fields]`: per directory field (`job_title`, `mobile_phone`, ...), `always`
    /// (default), `on_create` or `never`. `on_create` and `never` keep edits made in the directory.
    #[serde(default)]
    pub fields: BTreeMap<Field, FieldSetting>,
    /// Unit and role rules; see `AssignmentsFile`.
    #[serde(default)]
    pub assignments: AssignmentsFile,
    /// Limits that hold a run for approval; see `GuardsFile`.
    #[serde(default)]
    pub guards: GuardsFile,
    /// The SMTP server and template of welcome emails; see `EmailFile`. Required when
    /// `options.welcome_email` is on.
    pub email: Option<EmailFile>,
}

/// `[connections.email]`: where and what welcome emails are sent. Subject and body may use
/// `{display_name}`, `{first_name}`, `{last_name}`, `{email}`, `{user_principal_name}`,
/// `{job_title}` and `{organization}`; `{{` and `}}` are literal braces.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailFile {
    /// The SMTP server's host name.
    pub host: String,
    /// Default by `tls`: 25 (`none`), 587 (`starttls`), 465 (`tls`).
    pub port: Option<u16>,
    /// `starttls` (default), `tls`, or `none` (plain SMTP: only for a loopback host).
    pub tls: Option<TlsMode>,
    /// The SMTP login; needs `password_env` or `password_file`.
    pub username: Option<String>,
    /// Name of an environment variable holding the SMTP password.
    pub password_env: Option<String>,
    /// A file holding the SMTP password (trailing newline ignored).
    pub password_file: Option<PathBuf>,
    /// The sender, as in `"Contoso <welcome@contoso.example>"`.
    pub from: String,
    /// The subject template.
    pub subject: String,
    /// The body template (plain text); or `body_file`.
    pub body: Option<String>,
    /// A file holding the body template, read when the config is loaded.
    pub body_file: Option<PathBuf>,
    /// The wait after a failed attempt, doubled after each further one up to an hour, as in
    /// `30s` or `5m`. Default `1m`.
    pub retry_initial: Option<String>,
    /// Attempts before an email is given up as `failed`. Default `10`.
    pub max_attempts: Option<u32>,
}

/// `[connections.scope]`: who is synced. An empty or absent list selects everyone for that
/// section, including values that appear later; a user must meet every section with a selection.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeFile {
    /// Entra groups by display name (case-insensitive) or object id; members of any of them.
    pub groups: Option<Vec<String>>,
    /// `direct` (default) or `transitive`: whether members of nested groups count (cycle-safe).
    pub group_membership: Option<GroupMembership>,
    /// `Member`, `Guest`.
    pub user_types: Option<Vec<String>>,
    /// Domains of the UPN or the mail.
    pub domains: Option<Vec<String>>,
    /// Office locations (`officeLocation`), case-insensitive.
    pub office_locations: Option<Vec<String>>,
    /// Departments (`department`), case-insensitive.
    pub departments: Option<Vec<String>>,
}

/// `[connections.options]`: the seeds' sync options.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionsFile {
    /// `update` (default) or `skip`: whether directory users matched on first sight get their
    /// attributes from Entra.
    pub existing_users: Option<ExistingUsers>,
    /// `["email"]` (default), `["upn"]` or both, tried in order: how an existing directory user is
    /// linked on first sight (case-insensitive). `upn` compares the Entra UPN with the directory
    /// user's UPN and email.
    pub match_existing_by: Option<Vec<MatchBy>>,
    /// Create departments from in-scope users' department values and assign users. Default `true`.
    pub sync_departments: Option<bool>,
    /// Import Entra groups as user groups with their memberships. Default `true`.
    pub sync_groups: Option<bool>,
    /// `with_members` (default: every group with an in-scope member) or `scoped` (only the groups
    /// named in `[connections.scope] groups`).
    pub groups_to_sync: Option<GroupsToSync>,
    /// Remove memberships the sync made that are no longer in Entra. Default `true`.
    pub remove_group_assignments_not_in_entra: Option<bool>,
    /// After a complete full read, deprovision (as `on_deleted` says) linked users whose Entra
    /// object is gone. Default `false`.
    pub remove_users_not_in_entra: Option<bool>,
    /// `disable` (default) or `ignore`: users disabled in Entra.
    pub on_disabled: Option<OnDisabled>,
    /// `disable` (default), `soft_delete` or `delete`: users deleted in Entra.
    pub on_deleted: Option<OnDeleted>,
    /// `keep` (default: kept, no longer updated), `disable`, `soft_delete` or `delete`: linked
    /// users that no longer meet the scope.
    pub on_out_of_scope: Option<OnOutOfScope>,
    /// Days a soft-deleted user is kept before it is purged to a tombstone. Default `90`.
    pub soft_delete_retention_days: Option<u32>,
    /// Whether created users get the application's welcome email. Default `false`.
    pub welcome_email: Option<bool>,
}

/// `[connections.assignments]`: Ziik's unit and role rules.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignmentsFile {
    /// The Entra attribute naming the unit: `jobTitle`, `companyName`, `department`,
    /// `streetAddress`, `state`, `country`, `officeLocation`, `city` or `postalCode`.
    pub unit_from: Option<SourceAttribute>,
    /// Unit names (`["Copenhagen", "Aarhus"]`) or a table from Entra value to unit name
    /// (`{ "CPH HQ" = "Copenhagen" }`). No match or several leave the user unassigned, listed.
    pub units: Option<NameRule>,
    /// The Entra attribute holding a comma-separated list of roles; each value is matched.
    /// Must differ from `unit_from`.
    pub roles_from: Option<SourceAttribute>,
    /// Role names, or a table from Entra value to role name.
    pub roles: Option<NameRule>,
}

/// `[connections.guards]`: a run beyond a limit stores its plan for approval and applies nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardsFile {
    /// Disables, soft-deletes and deletes allowed in one run. Default `500`.
    pub max_deprovisions: Option<usize>,
    /// Deprovisions allowed as a percentage of the linked users. Default `20`.
    pub max_deprovision_percent: Option<u32>,
    /// Membership removals allowed as a percentage of the memberships the sync made. Default `20`.
    pub max_membership_removals_percent: Option<u32>,
    /// A read with this many percent fewer users than the last good one is unhealthy, and then
    /// nothing is removed. Default `30`.
    pub max_source_drop_percent: Option<u32>,
}

fn default_true() -> bool {
    true
}

/// A validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config file is, for relative paths and messages.
    pub path: PathBuf,
    pub data_dir: PathBuf,
    pub listen: String,
    /// Days `serve` keeps the run history.
    pub history_days: u32,
    pub connections: Vec<Connection>,
}

/// A validated connection.
#[derive(Debug, Clone)]
pub struct Connection {
    pub name: String,
    pub organization: String,
    pub tenant_id: String,
    pub client_id: String,
    pub secret: SecretSource,
    pub authority_url: Url,
    pub graph_url: Url,
    pub schedule: Schedule,
    /// How often a scheduled run reads everything.
    pub full_sync_every: std::time::Duration,
    /// Full runs read the Microsoft data (licence names, sign-ins, MFA registration).
    pub microsoft_data: bool,
    pub enabled: bool,
    pub policy: Policy,
    /// Welcome emails' SMTP server and template.
    pub email: Option<EmailSettings>,
}

/// Where a connection's credential comes from; read only when a sync needs it.
#[derive(Clone)]
pub enum SecretSource {
    Inline(String),
    Env(String),
    File(PathBuf),
    Certificate {
        certificate_file: PathBuf,
        private_key_file: PathBuf,
    },
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Inline(_) => f.write_str("Inline(<redacted>)"),
            SecretSource::Env(name) => write!(f, "Env({name})"),
            SecretSource::File(path) => write!(f, "File({})", path.display()),
            SecretSource::Certificate { certificate_file, .. } => {
                write!(f, "Certificate({})", certificate_file.display())
            }
        }
    }
}

/// When a connection syncs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Every `seconds`, aligned to `start_at` (minutes after midnight UTC) when given.
    Every {
        seconds: u64,
        start_at_minutes: Option<u32>,
    },
    /// A cron expression (UTC).
    Cron(String),
}

/// A config problem: the message names the file, the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: connection {connection:?}: {message}")]
    Invalid {
        path: PathBuf,
        connection: String,
        message: String,
    },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
}

impl Config {
    /// Reads and validates a config file (stages one and two; nothing is opened).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates config text read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: path.to_owned(),
            message: one_line_toml_error(&error, text),
        })?;
        validate(path, file)
    }

    /// Finds a connection by name, or the only one when `name` is `None`.
    pub fn connection(&self, name: Option<&str>) -> Result<&Connection, ConfigError> {
        let names = || {
            self.connections
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match name {
            Some(name) => self
                .connections
                .iter()
                .find(|c| c.name == name)
                .ok_or_else(|| ConfigError::File {
                    path: self.path.clone(),
                    message: format!("no connection named {name:?}; the connections are: {}", names()),
                }),
            None => match self.connections.as_slice() {
                [only] => Ok(only),
                [] => Err(ConfigError::File {
                    path: self.path.clone(),
                    message: "no [[connections]] entry: add one (see README, Configuration)".into(),
                }),
                _ => Err(ConfigError::File {
                    path: self.path.clone(),
                    message: format!("several connections: choose one with --connection ({})", names()),
                }),
            },
        }
    }

    /// The SQLite database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("entra-sync.db")
    }
}

/// toml's error names the key and the line over several lines; keep it to one line.
fn one_line_toml_error(error: &toml::de::Error, text: &str) -> String {
    let message = error.message().trim().replace('\n', " ");
    match error.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

fn validate(path: &Path, file: ConfigFile) -> Result<Config, ConfigError> {
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    let data_dir = base.join(file.data_dir.unwrap_or_else(|| PathBuf::from("./data")));
    let (listen, history_days) = match file.server {
        Some(server) => (server.listen, server.history_days),
        None => (None, None),
    };
    let listen = listen.unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let history_days = history_days.unwrap_or(90);
    if history_days == 0 {
        return Err(ConfigError::File {
            path: path.to_owned(),
            message: "[server] history_days must be at least 1".into(),
        });
    }
    let mut connections: Vec<Connection> = Vec::new();
    for connection in file.connections {
        let name = connection.name.clone();
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            connection: name.clone(),
            message,
        };
        if connections.iter().any(|c| c.name == name) {
            return Err(invalid(
                "two connections have this name; names must be unique".into(),
            ));
        }
        connections.push(validate_connection(connection, base).map_err(&invalid)?);
    }
    Ok(Config {
        path: path.to_owned(),
        data_dir,
        listen,
        history_days,
        connections,
    })
}

/// Validates one connection; relative credential paths are relative to `base`. The message
/// names the key and the fix, without the connection (the caller adds it).
pub fn validate_connection(connection: ConnectionFile, base: &Path) -> Result<Connection, String> {
    let secret = secret_source(&connection, base)?;
    let authority_url = endpoint_url(
        "authority_url",
        connection
            .authority_url
            .as_deref()
            .unwrap_or(DEFAULT_AUTHORITY_URL),
    )?;
    let graph_url = endpoint_url(
        "graph_url",
        connection.graph_url.as_deref().unwrap_or(DEFAULT_GRAPH_URL),
    )?;
    let schedule = Schedule::parse(
        connection.schedule.as_deref().unwrap_or("every 1h"),
        connection.start_at.as_deref(),
    )?;
    let full_sync_every = full_sync_every(connection.full_sync_every.as_deref().unwrap_or("1d"))?;
    if connection.tenant_id.trim().is_empty() || connection.client_id.trim().is_empty() {
        return Err("tenant_id and client_id must not be empty".into());
    }
    let policy = policy(&connection);
    policy.validate()?;
    let email = connection
        .email
        .as_ref()
        .map(|email| email_settings(email, base))
        .transpose()?;
    if policy.welcome_email && email.is_none() {
        return Err(
            "options.welcome_email is on but there is no [connections.email]: add one with host, from, subject and body (README, Welcome emails)".into(),
        );
    }
    Ok(Connection {
        organization: connection
            .organization
            .clone()
            .unwrap_or_else(|| connection.name.clone()),
        name: connection.name,
        tenant_id: connection.tenant_id,
        client_id: connection.client_id,
        secret,
        authority_url,
        graph_url,
        schedule,
        full_sync_every,
        microsoft_data: connection.microsoft_data.unwrap_or(true),
        enabled: connection.enabled,
        policy,
        email,
    })
}

/// The connection's policy: what the file sets, the defaults for the rest.
fn policy(connection: &ConnectionFile) -> Policy {
    let defaults = Policy::default();
    let scope = &connection.scope;
    let options = &connection.options;
    let assignments = &connection.assignments;
    let guards = &connection.guards;
    Policy {
        scope: Scope {
            groups: scope.groups.clone().unwrap_or_default(),
            group_membership: scope.group_membership.unwrap_or_default(),
            user_types: scope.user_types.clone().unwrap_or_default(),
            domains: scope.domains.clone().unwrap_or_default(),
            office_locations: scope.office_locations.clone().unwrap_or_default(),
            departments: scope.departments.clone().unwrap_or_default(),
        },
        existing_users: options.existing_users.unwrap_or(defaults.existing_users),
        match_existing_by: options
            .match_existing_by
            .clone()
            .unwrap_or(defaults.match_existing_by),
        sync_departments: options.sync_departments.unwrap_or(defaults.sync_departments),
        sync_groups: options.sync_groups.unwrap_or(defaults.sync_groups),
        groups_to_sync: options.groups_to_sync.unwrap_or(defaults.groups_to_sync),
        remove_group_assignments_not_in_entra: options
            .remove_group_assignments_not_in_entra
            .unwrap_or(defaults.remove_group_assignments_not_in_entra),
        remove_users_not_in_entra: options
            .remove_users_not_in_entra
            .unwrap_or(defaults.remove_users_not_in_entra),
        on_disabled: options.on_disabled.unwrap_or(defaults.on_disabled),
        on_deleted: options.on_deleted.unwrap_or(defaults.on_deleted),
        on_out_of_scope: options.on_out_of_scope.unwrap_or(defaults.on_out_of_scope),
        soft_delete_retention_days: options
            .soft_delete_retention_days
            .unwrap_or(defaults.soft_delete_retention_days),
        welcome_email: options.welcome_email.unwrap_or(defaults.welcome_email),
        fields: connection.fields.clone(),
        assignments: Assignments {
            unit_from: assignments.unit_from,
            units: assignments.units.clone().unwrap_or_default(),
            roles_from: assignments.roles_from,
            roles: assignments.roles.clone().unwrap_or_default(),
        },
        guards: Guards {
            max_deprovisions: guards
                .max_deprovisions
                .unwrap_or(defaults.guards.max_deprovisions),
            max_deprovision_percent: guards
                .max_deprovision_percent
                .unwrap_or(defaults.guards.max_deprovision_percent),
            max_membership_removals_percent: guards
                .max_membership_removals_percent
                .unwrap_or(defaults.guards.max_membership_removals_percent),
            max_source_drop_percent: guards
                .max_source_drop_percent
                .unwrap_or(defaults.guards.max_source_drop_percent),
        },
    }
}

fn secret_source(connection: &ConnectionFile, base: &Path) -> Result<SecretSource, String> {
    let certificate = match (&connection.certificate_file, &connection.private_key_file) {
        (Some(certificate), Some(key)) => Some(SecretSource::Certificate {
            certificate_file: base.join(certificate),
            private_key_file: base.join(key),
        }),
        (None, None) => None,
        _ => {
            return Err("certificate_file and private_key_file go together: set both or neither".into());
        }
    };
    let sources: Vec<SecretSource> = [
        connection.client_secret.clone().map(SecretSource::Inline),
        connection.client_secret_env.clone().map(SecretSource::Env),
        connection
            .client_secret_file
            .as_ref()
            .map(|file| SecretSource::File(base.join(file))),
        certificate,
    ]
    .into_iter()
    .flatten()
    .collect();
    match <[SecretSource; 1]>::try_from(sources) {
        Ok([source]) => Ok(source),
        Err(sources) if sources.is_empty() => Err("no credential: set client_secret_env, client_secret_file, or certificate_file with private_key_file".into()),
        Err(_) => Err("several credentials: set exactly one of client_secret, client_secret_env, client_secret_file, or certificate_file with private_key_file".into()),
    }
}

/// Validates `[connections.email]`: the template's placeholders, the sender, the login, and TLS
/// on anything but a loopback host (Architecture Invariant 6, as for URLs).
fn email_settings(email: &EmailFile, base: &Path) -> Result<EmailSettings, String> {
    let key = |name: &str| format!("[connections.email] {name}");
    let host = email.host.trim();
    if host.is_empty() {
        return Err(format!("{} must not be empty", key("host")));
    }
    let tls = email.tls.unwrap_or(TlsMode::Starttls);
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if tls == TlsMode::None && !loopback {
        return Err(format!(
            "{} = \"none\" sends mail in the clear to {host:?}: use \"starttls\" or \"tls\" (none is only for 127.0.0.1, ::1 and localhost)",
            key("tls")
        ));
    }
    let password = match (&email.password_env, &email.password_file) {
        (Some(name), None) => Some(PasswordSource::Env(name.clone())),
        (None, Some(path)) => Some(PasswordSource::File(base.join(path))),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(format!(
                "{} and password_file are both set: keep one",
                key("password_env")
            ));
        }
    };
    let login = match (&email.username, password) {
        (Some(username), Some(password)) => Some((username.clone(), password)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(format!(
                "{} is set without a password: add password_env or password_file",
                key("username")
            ));
        }
        (None, Some(_)) => {
            return Err(format!(
                "a password is set without {}: add the SMTP login",
                key("username")
            ));
        }
    };
    let from = email.from.parse().map_err(|error| {
        format!(
            "{} {:?} is not an address ({error}): write it as \"Name <user@example.com>\" or \"user@example.com\"",
            key("from"),
            email.from
        )
    })?;
    if email.subject.contains(['\r', '\n']) {
        return Err(format!("{} must be one line", key("subject")));
    }
    let subject = Template::parse(&email.subject).map_err(|error| format!("{}: {error}", key("subject")))?;
    let body_text = match (&email.body, &email.body_file) {
        (Some(body), None) => body.clone(),
        (None, Some(path)) => std::fs::read_to_string(base.join(path)).map_err(|error| {
            format!(
                "cannot read {} {}: {error}",
                key("body_file"),
                base.join(path).display()
            )
        })?,
        (None, None) => return Err(format!("{} or body_file is required", key("body"))),
        (Some(_), Some(_)) => {
            return Err(format!("{} and body_file are both set: keep one", key("body")));
        }
    };
    let body = Template::parse(&body_text).map_err(|error| format!("{}: {error}", key("body")))?;
    let retry_initial = full_sync_every(email.retry_initial.as_deref().unwrap_or("1m")).map_err(|_| {
        format!(
            "{} expects a positive <n><s|m|h|d>, as in \"30s\" or \"5m\"",
            key("retry_initial")
        )
    })?;
    let max_attempts = email.max_attempts.unwrap_or(10);
    if max_attempts == 0 {
        return Err(format!("{} must be at least 1", key("max_attempts")));
    }
    Ok(EmailSettings {
        host: host.to_owned(),
        port: email.port.unwrap_or(tls.default_port()),
        tls,
        login,
        from,
        subject,
        body,
        retry_initial,
        max_attempts,
    })
}

/// Parses an endpoint URL and enforces https except on loopback (Architecture Invariant 6).
fn endpoint_url(key: &str, value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|error| format!("{key} {value:?} is not a URL: {error}"))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(format!(
            "{key} {value:?} uses plain http on a host that is not loopback: use https (http is only for 127.0.0.1, ::1 and localhost)"
        )),
        other => Err(format!("{key} {value:?} has scheme {other:?}: use https")),
    }
}

/// Whether a URL's host is on this machine (127.0.0.0/8, ::1 or localhost).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

impl Schedule {
    /// Parses `every <n><s|m|h|d>` (with an optional `HH:MM` start) or a cron expression.
    pub fn parse(text: &str, start_at: Option<&str>) -> Result<Schedule, String> {
        let text = text.trim();
        if let Some(interval) = text.strip_prefix("every ") {
            let interval = interval.trim();
            let split = interval
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(interval.len());
            let (number, unit) = interval.split_at(split);
            let number: u64 = number
                .parse()
                .map_err(|_| format!("schedule {text:?}: expected a number, as in \"every 1h\""))?;
            let unit_seconds = match unit.trim() {
                "s" => 1,
                "m" | "min" => 60,
                "h" => 3600,
                "d" => 86_400,
                other => {
                    return Err(format!(
                        "schedule {text:?}: unknown unit {other:?}; use s, m, h or d, as in \"every 30m\""
                    ));
                }
            };
            if number == 0 {
                return Err(format!("schedule {text:?}: the interval must be positive"));
            }
            let start_at_minutes = start_at.map(parse_start_at).transpose()?;
            return Ok(Schedule::Every {
                seconds: number * unit_seconds,
                start_at_minutes,
            });
        }
        if start_at.is_some() {
            return Err("start_at goes with an interval schedule (\"every 1h\"), not with cron".into());
        }
        croner::Cron::from_str(text).map_err(|error| {
            format!(
                "schedule {text:?} is neither \"every <n><s|m|h|d>\" nor a valid cron expression: {error}"
            )
        })?;
        Ok(Schedule::Cron(text.to_owned()))
    }
}

/// Parses `<n><s|m|h|d>`, the interval of an `every` schedule.
fn full_sync_every(text: &str) -> Result<std::time::Duration, String> {
    match Schedule::parse(&format!("every {text}"), None) {
        Ok(Schedule::Every { seconds, .. }) => Ok(std::time::Duration::from_secs(seconds)),
        _ => Err(format!(
            "full_sync_every {text:?}: expected a positive <n><s|m|h|d>, as in \"1d\" or \"12h\""
        )),
    }
}

fn parse_start_at(text: &str) -> Result<u32, String> {
    let bad = || format!("start_at {text:?}: expected HH:MM in UTC, as in \"02:00\"");
    let (hours, minutes) = text.split_once(':').ok_or_else(bad)?;
    let hours: u32 = hours.parse().map_err(|_| bad())?;
    let minutes: u32 = minutes.parse().map_err(|_| bad())?;
    if hours > 23 || minutes > 59 {
        return Err(bad());
    }
    Ok(hours * 60 + minutes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("/etc/entra-sync/config.toml"), text).map_err(|e| e.to_string())
    }

    const MINIMAL: &str = r#"
[[connections]]
name = "contoso"
tenant_id = "t"
client_id = "c"
client_secret_env = "SECRET"
"#;

    #[test]
    fn minimal_config_takes_defaults() {
        let config = parse(MINIMAL).expect("valid");
        let connection = &config.connections[0];
        assert_eq!(connection.organization, "contoso");
        assert_eq!(connection.graph_url.as_str(), "https://graph.microsoft.com/");
        assert_eq!(
            connection.schedule,
            Schedule::Every {
                seconds: 3600,
                start_at_minutes: None
            }
        );
        assert_eq!(config.data_dir, Path::new("/etc/entra-sync/./data"));
        assert_eq!(connection.policy, Policy::default());
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let error = parse(&format!("{MINIMAL}colour = \"blue\"\n")).expect_err("unknown key");
        assert!(error.contains("line 7"), "{error}");
        assert!(error.contains("colour"), "{error}");
        assert!(!error.contains('\n'), "{error}");
    }

    #[test]
    fn plain_http_only_on_loopback() {
        for (url, ok) in [
            ("http://127.0.0.1:9000", true),
            ("http://localhost:9000", true),
            ("http://[::1]:9000", true),
            ("https://graph.microsoft.us", true),
            ("http://graph.example.com", false),
            ("http://10.0.0.1", false),
            ("ftp://127.0.0.1", false),
        ] {
            let text = format!("{MINIMAL}graph_url = \"{url}\"\n");
            assert_eq!(parse(&text).is_ok(), ok, "{url}: {:?}", parse(&text).err());
        }
    }

    #[test]
    fn exactly_one_credential() {
        let none = MINIMAL.replace("client_secret_env = \"SECRET\"\n", "");
        assert!(parse(&none).expect_err("none").contains("no credential"));
        let two = format!("{MINIMAL}client_secret = \"x\"\n");
        assert!(parse(&two).expect_err("two").contains("several credentials"));
        let half_certificate = format!("{none}certificate_file = \"c.pem\"\n");
        assert!(
            parse(&half_certificate)
                .expect_err("half")
                .contains("go together")
        );
    }

    #[test]
    fn schedules() {
        for (text, start, expected) in [
            (
                "every 1h",
                None,
                Ok(Schedule::Every {
                    seconds: 3600,
                    start_at_minutes: None,
                }),
            ),
            (
                "every 2h",
                Some("02:30"),
                Ok(Schedule::Every {
                    seconds: 7200,
                    start_at_minutes: Some(150),
                }),
            ),
            (
                "every 30m",
                None,
                Ok(Schedule::Every {
                    seconds: 1800,
                    start_at_minutes: None,
                }),
            ),
            ("*/15 * * * *", None, Ok(Schedule::Cron("*/15 * * * *".into()))),
            ("every 0h", None, Err("positive")),
            ("every 1w", None, Err("unknown unit")),
            ("every 1h", Some("25:00"), Err("HH:MM")),
            ("sometimes", None, Err("neither")),
        ] {
            match (Schedule::parse(text, start), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{text}: {got}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn options_become_policy() {
        let text = format!("{MINIMAL}[connections.options]\non_disabled = \"ignore\"\nsync_groups = false\n");
        let config = parse(&text).expect("valid");
        assert_eq!(config.connections[0].policy.on_disabled, OnDisabled::Ignore);
        assert!(!config.connections[0].policy.sync_groups);
        let bad = format!("{MINIMAL}[connections.options]\non_disabled = \"explode\"\n");
        assert!(parse(&bad).expect_err("bad").contains("line 8"));
    }

    /// The issue's whole config block, every sub-table of a connection.
    const EVERY_OPTION: &str = r#"
[connections.scope]
groups = ["Support Operations"]
group_membership = "transitive"
user_types = ["Member"]
domains = ["pinnacle.example"]
office_locations = []
departments = []

[connections.options]
existing_users = "skip"
match_existing_by = ["email", "upn"]
sync_departments = false
sync_groups = true
groups_to_sync = "scoped"
remove_group_assignments_not_in_entra = false
remove_users_not_in_entra = true
on_disabled = "ignore"
on_deleted = "soft_delete"
on_out_of_scope = "disable"
soft_delete_retention_days = 30
welcome_email = true

[connections.fields]
job_title = "always"
mobile_phone = "on_create"
department = "never"

[connections.assignments]
unit_from = "officeLocation"
units = { "CPH HQ" = "Copenhagen" }
roles_from = "jobTitle"
roles = ["Support Analyst", "Senior Support Analyst"]

[connections.guards]
max_deprovisions = 50
max_deprovision_percent = 10
max_membership_removals_percent = 15
max_source_drop_percent = 25

[connections.email]
host = "smtp.contoso.example"
from = "Contoso <welcome@contoso.example>"
subject = "Welcome to {organization}, {first_name}"
body = "Hello {display_name}, your account is {email}."
"#;

    #[test]
    fn every_option_becomes_policy() {
        let config = parse(&format!("{MINIMAL}{EVERY_OPTION}")).expect("valid");
        let policy = &config.connections[0].policy;
        assert_eq!(policy.scope.groups, ["Support Operations"]);
        assert_eq!(policy.scope.group_membership, GroupMembership::Transitive);
        assert_eq!(policy.scope.user_types, ["Member"]);
        assert_eq!(policy.scope.domains, ["pinnacle.example"]);
        assert!(policy.scope.office_locations.is_empty() && policy.scope.departments.is_empty());
        assert_eq!(policy.existing_users, ExistingUsers::Skip);
        assert_eq!(policy.match_existing_by, [MatchBy::Email, MatchBy::Upn]);
        assert!(!policy.sync_departments && policy.sync_groups);
        assert_eq!(policy.groups_to_sync, GroupsToSync::Scoped);
        assert!(!policy.remove_group_assignments_not_in_entra && policy.remove_users_not_in_entra);
        assert_eq!(policy.on_disabled, OnDisabled::Ignore);
        assert_eq!(policy.on_deleted, OnDeleted::SoftDelete);
        assert_eq!(policy.on_out_of_scope, OnOutOfScope::Disable);
        assert_eq!(policy.soft_delete_retention_days, 30);
        assert!(policy.welcome_email);
        assert_eq!(policy.field_setting(Field::JobTitle), FieldSetting::Always);
        assert_eq!(policy.field_setting(Field::MobilePhone), FieldSetting::OnCreate);
        assert_eq!(policy.field_setting(Field::Department), FieldSetting::Never);
        assert_eq!(policy.field_setting(Field::City), FieldSetting::Always);
        assert_eq!(
            policy.assignments.unit_from,
            Some(SourceAttribute::OfficeLocation)
        );
        assert_eq!(
            policy.assignments.units,
            NameRule::Aliases(BTreeMap::from([("CPH HQ".into(), "Copenhagen".into())]))
        );
        assert_eq!(policy.assignments.roles_from, Some(SourceAttribute::JobTitle));
        assert_eq!(
            policy.assignments.roles,
            NameRule::Names(vec!["Support Analyst".into(), "Senior Support Analyst".into()])
        );
        assert_eq!(
            policy.guards,
            Guards {
                max_deprovisions: 50,
                max_deprovision_percent: 10,
                max_membership_removals_percent: 15,
                max_source_drop_percent: 25,
            }
        );
    }

    #[test]
    fn email_settings_are_checked_with_messages_that_say_what_to_write() {
        let email = |lines: &str| {
            format!(
                "{MINIMAL}[connections.options]\nwelcome_email = true\n[connections.email]\n{lines}from = \"it@contoso.example\"\nsubject = \"Hi {{first_name}}\"\n"
            )
        };
        let config = parse(&email("host = \"smtp.contoso.example\"\nbody = \"x\"\n")).expect("valid");
        let settings = config.connections[0].email.as_ref().expect("email");
        assert_eq!((settings.port, settings.tls), (587, TlsMode::Starttls));
        assert_eq!(settings.retry_initial, std::time::Duration::from_secs(60));
        for (lines, expected) in [
            (
                "host = \"smtp.contoso.example\"\n",
                "body or body_file is required",
            ),
            (
                "host = \"smtp.contoso.example\"\ntls = \"none\"\nbody = \"x\"\n",
                "tls = \"none\" sends mail in the clear",
            ),
            (
                "host = \"smtp.contoso.example\"\nbody = \"Hi {name}\"\n",
                "body: unknown placeholder {name}",
            ),
            (
                "host = \"smtp.contoso.example\"\nusername = \"u\"\nbody = \"x\"\n",
                "without a password",
            ),
            (
                "host = \"smtp.contoso.example\"\nbody = \"x\"\nretry_initial = \"soon\"\n",
                "retry_initial expects",
            ),
            (
                "host = \"smtp.contoso.example\"\nbody = \"x\"\ntls = \"ssl\"\n",
                "unknown variant `ssl`",
            ),
        ] {
            let error = parse(&email(lines)).expect_err(lines);
            assert!(error.contains(expected), "{lines}: {error}");
            assert!(!error.contains('\n'), "{error}");
        }
        let plain_loopback = email("host = \"127.0.0.1\"\ntls = \"none\"\nport = 2525\nbody = \"x\"\n");
        assert_eq!(
            parse(&plain_loopback).expect("loopback").connections[0]
                .email
                .as_ref()
                .map(|email| email.port),
            Some(2525)
        );
        let bad_from = email("host = \"h\"\nbody = \"x\"\n").replace("it@contoso.example", "not an address");
        assert!(
            parse(&bad_from)
                .expect_err("from")
                .contains("from \"not an address\" is not an address")
        );
        let missing = format!("{MINIMAL}[connections.options]\nwelcome_email = true\n");
        assert!(
            parse(&missing)
                .expect_err("no email")
                .contains("options.welcome_email is on but there is no [connections.email]")
        );
    }

    #[test]
    fn option_errors_name_the_key() {
        for (text, expected) in [
            ("[connections.scope]\ngroup = [\"x\"]\n", "unknown field `group`"),
            (
                "[connections.scope]\ngroup_membership = \"nested\"\n",
                "unknown variant `nested`",
            ),
            (
                "[connections.options]\non_deleted = \"purge\"\n",
                "unknown variant `purge`",
            ),
            (
                "[connections.options]\non_out_of_scope = \"forget\"\n",
                "unknown variant `forget`",
            ),
            (
                "[connections.options]\nmatch_existing_by = [\"phone\"]\n",
                "unknown variant `phone`",
            ),
            (
                "[connections.fields]\nshoe_size = \"always\"\n",
                "unknown variant `shoe_size`",
            ),
            (
                "[connections.fields]\njob_title = \"sometimes\"\n",
                "unknown variant `sometimes`",
            ),
            (
                "[connections.assignments]\nunit_from = \"manager\"\n",
                "unknown variant `manager`",
            ),
            (
                "[connections.guards]\nmax_deletes = 3\n",
                "unknown field `max_deletes`",
            ),
            (
                "[connections.assignments]\nunit_from = \"jobTitle\"\nroles_from = \"jobTitle\"\n",
                "assignments.unit_from and assignments.roles_from both read jobTitle",
            ),
            (
                "[connections.fields]\ngiven_name = \"never\"\n",
                "fields.given_name = \"never\"",
            ),
            (
                "[connections.guards]\nmax_deprovision_percent = 150\n",
                "guards.max_deprovision_percent = 150",
            ),
        ] {
            let error = parse(&format!("{MINIMAL}{text}")).expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
            assert!(!error.contains('\n'), "{error}");
        }
    }
}
