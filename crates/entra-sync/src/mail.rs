//! Welcome emails through a transactional outbox: the directory writes a rendered email in the
//! same transaction as the user it welcomes (`Welcome::enqueue`), and `deliver_due` sends what is
//! due over SMTP (lettre, rustls) and marks it sent, retrying failures with backoff.
//!
//! Delivery is at least once, never lost: a row is claimed (`sending`, with a lease) and
//! committed before the SMTP conversation starts, and marked `sent` right after the server
//! accepts the message. Only a crash between the server's acceptance and that mark (a few
//! milliseconds) sends the message again, once the lease runs out; every attempt carries the same
//! `Message-ID`, so a receiving system that deduplicates shows it once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use entra_sync_core::map::{Attributes, Field};
use entra_sync_core::plan::Action;
use entra_sync_core::target::UserStatus;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use crate::config::Connection;
use crate::store::{Doing, Store, StoreError, timestamp, write_in_chunks};
use crate::targets::Outcome;

/// How long a claimed email stays claimed: longer than any SMTP conversation (each command
/// times out after `SMTP_TIMEOUT`), so a lease runs out only when its sender died.
const LEASE: TimeDelta = TimeDelta::minutes(5);
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Plain SMTP; only for a server on this machine.
    None,
    /// Plain connection upgraded with STARTTLS, which is required (port 587 by default).
    Starttls,
    /// TLS from the first byte (port 465 by default).
    Tls,
}

impl TlsMode {
    /// The mode as the config writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::None => "none",
            TlsMode::Starttls => "starttls",
            TlsMode::Tls => "tls",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            TlsMode::None => 25,
            TlsMode::Starttls => 587,
            TlsMode::Tls => 465,
        }
    }
}

/// Where the SMTP password comes from; read only when an email is sent.
#[derive(Debug, Clone)]
pub enum PasswordSource {
    Env(String),
    File(PathBuf),
}

/// A connection's validated `[connections.email]`.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// The login, with the password's source.
    pub login: Option<(String, PasswordSource)>,
    pub from: Mailbox,
    pub subject: Template,
    pub body: Template,
    /// The wait after the first failed attempt; it doubles with each further one, up to an hour.
    pub retry_initial: Duration,
    /// Attempts before an email is given up as `failed`.
    pub max_attempts: u32,
}

/// A placeholder a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placeholder {
    Field(Field),
    Organization,
}

/// The placeholders by name, as the README lists them.
const PLACEHOLDERS: [(&str, Placeholder); 7] = [
    ("display_name", Placeholder::Field(Field::DisplayName)),
    ("first_name", Placeholder::Field(Field::GivenName)),
    ("last_name", Placeholder::Field(Field::Surname)),
    ("email", Placeholder::Field(Field::Email)),
    (
        "user_principal_name",
        Placeholder::Field(Field::UserPrincipalName),
    ),
    ("job_title", Placeholder::Field(Field::JobTitle)),
    ("organization", Placeholder::Organization),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Value(Placeholder),
}

/// A subject or body with `{placeholder}`s; `{{` and `}}` are literal braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses a template, refusing unknown placeholders and unmatched braces by name.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    let known = PLACEHOLDERS.iter().find(|(known, _)| *known == name.trim());
                    let Some((_, placeholder)) = known else {
                        let names: Vec<&str> = PLACEHOLDERS.iter().map(|(name, _)| *name).collect();
                        return Err(format!(
                            "unknown placeholder {{{name}}}: use one of {{{}}}, or {{{{ for a literal brace",
                            names.join("}, {")
                        ));
                    };
                    parts.push(Part::Text(std::mem::take(&mut literal)));
                    parts.push(Part::Value(*placeholder));
                }
                '}' => return Err("a lone }: write }} for a literal brace".into()),
                c => literal.push(c),
            }
        }
        parts.push(Part::Text(literal));
        parts.retain(|part| part != &Part::Text(String::new()));
        Ok(Template { parts })
    }

    /// The text for one user; a placeholder whose value the user lacks renders empty.
    pub fn render(&self, attributes: &Attributes, organization: &str) -> String {
        let mut text = String::new();
        for part in &self.parts {
            match part {
                Part::Text(literal) => text.push_str(literal),
                Part::Value(Placeholder::Organization) => text.push_str(organization),
                Part::Value(Placeholder::Field(field)) => {
                    text.push_str(attributes.get(*field).unwrap_or_default());
                }
            }
        }
        text
    }
}

/// What the directory needs to queue a connection's welcome emails.
#[derive(Debug, Clone)]
pub struct Welcome {
    connection: String,
    organization: String,
    run_id: Option<i64>,
    subject: Template,
    body: Template,
}

impl Welcome {
    /// The connection's welcome emails, when `welcome_email` is on; `run_id` is the run that
    /// creates the users, shown with each email.
    pub fn for_connection(connection: &Connection, run_id: Option<i64>) -> Option<Welcome> {
        let settings = connection
            .email
            .as_ref()
            .filter(|_| connection.policy.welcome_email)?;
        Some(Welcome {
            connection: connection.name.clone(),
            organization: connection.organization.clone(),
            run_id,
            subject: settings.subject.clone(),
            body: settings.body.clone(),
        })
    }

    /// Queues one email per user the batch created active with an email address, in the
    /// batch's transaction. One email per (organization, Entra user) ever: a user created again
    /// after being removed is not welcomed twice.
    pub(crate) async fn enqueue(
        &self,
        transaction: &mut Transaction<'_, Sqlite>,
        organization_id: i64,
        actions: &[Action],
        outcomes: &[Outcome],
        now: &str,
    ) -> Result<(), StoreError> {
        let mut rows: Vec<(&String, &str, String, String)> = Vec::new();
        for (action, outcome) in actions.iter().zip(outcomes) {
            let Action::CreateUser {
                entra_id,
                attributes,
                status: UserStatus::Active,
                ..
            } = action
            else {
                continue;
            };
            if outcome.is_some() {
                continue;
            }
            match attributes.get(Field::Email) {
                Some(email) => rows.push((
                    entra_id,
                    email,
                    self.subject.render(attributes, &self.organization),
                    self.body.render(attributes, &self.organization),
                )),
                None => tracing::info!(
                    connection = %self.connection,
                    entra_id = %entra_id,
                    "created user has no email address; no welcome email"
                ),
            }
        }
        let build = |_, chunk: &[(&String, &str, String, String)]| {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO email_outbox (connection, organization_id, entra_id, run_id, recipient, subject, body, status, next_attempt_at, created_at) ",
            );
            insert.push_values(chunk, |mut row, (entra_id, email, subject, body)| {
                row.push_bind(self.connection.clone())
                    .push_bind(organization_id)
                    .push_bind((*entra_id).clone())
                    .push_bind(self.run_id)
                    .push_bind((*email).to_owned())
                    .push_bind(subject.clone())
                    .push_bind(body.clone())
                    .push_bind("queued")
                    .push_bind(now.to_owned())
                    .push_bind(now.to_owned());
            });
            insert.push(" ON CONFLICT (organization_id, entra_id) DO NOTHING");
            insert
        };
        write_in_chunks(transaction, &rows, "queueing welcome emails", build, |_| {}).await
    }
}

/// What one delivery pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub sent: usize,
    /// Failed this time; tried again after a backoff.
    pub retrying: usize,
    /// Given up: refused permanently, or `max_attempts` reached.
    pub failed: usize,
}

impl Delivery {
    pub fn is_empty(&self) -> bool {
        *self == Delivery::default()
    }
}

/// An email claimed for sending.
struct Claimed {
    id: i64,
    connection: String,
    organization_id: i64,
    recipient: String,
    subject: String,
    body: String,
    attempts: u32,
}

/// Why an attempt failed, and whether trying again can help.
struct Failure {
    message: String,
    permanent: bool,
}

impl Failure {
    fn transient(message: String) -> Failure {
        Failure {
            message,
            permanent: false,
        }
    }
}

/// Sends the emails due at `now` and records each outcome; a failed one is due again only after
/// its backoff, so one pass tries each email at most once. Emails are claimed one at a time,
/// right before they are sent, so a crash leaves at most one in doubt; a claim is one
/// statement, so several processes never claim the same email. One SMTP transport per
/// connection serves the whole pass (lettre pools its connections).
pub async fn deliver_due(
    store: &Store,
    connections: &[Connection],
    now: DateTime<Utc>,
) -> Result<Delivery, StoreError> {
    let mut delivery = Delivery::default();
    let mut transports: HashMap<String, Result<AsyncSmtpTransport<Tokio1Executor>, String>> = HashMap::new();
    while let Some(email) = claim(store, now).await? {
        let settings = connections
            .iter()
            .find(|connection| connection.name == email.connection)
            .and_then(|connection| connection.email.as_ref());
        let result = match settings {
            Some(settings) => {
                let transport = transports
                    .entry(email.connection.clone())
                    .or_insert_with(|| transport(settings));
                match transport {
                    Ok(transport) => send(transport, settings, &email).await,
                    Err(error) => Err(Failure::transient(error.clone())),
                }
            }
            None => Err(Failure::transient(format!(
                "connection {:?} has no [connections.email] in the config: add it to send this email",
                email.connection
            ))),
        };
        match record_attempt(store, &email, settings, result).await? {
            "sent" => delivery.sent += 1,
            "failed" => delivery.failed += 1,
            _ => delivery.retrying += 1,
        }
    }
    Ok(delivery)
}

/// Claims the oldest due email: a queued one whose time has come, or a sending one whose lease
/// ran out (its sender died mid-attempt, so the server may or may not have the message).
async fn claim(store: &Store, now: DateTime<Utc>) -> Result<Option<Claimed>, StoreError> {
    let row = sqlx::query(
        "UPDATE email_outbox SET status = 'sending', attempts = attempts + 1, next_attempt_at = ?, \
         last_error = CASE WHEN status = 'sending' \
           THEN 'an attempt was interrupted before its outcome was recorded; sending again' ELSE last_error END \
         WHERE id = (SELECT id FROM email_outbox WHERE status IN ('queued', 'sending') AND next_attempt_at <= ? ORDER BY id LIMIT 1) \
         RETURNING id, connection, organization_id, recipient, subject, body, attempts",
    )
    .bind(timestamp(now + LEASE))
    .bind(timestamp(now))
    .fetch_optional(&store.pool)
    .await
    .doing("claiming a welcome email")?;
    Ok(row.map(|row| Claimed {
        id: row.get(0),
        connection: row.get(1),
        organization_id: row.get(2),
        recipient: row.get(3),
        subject: row.get(4),
        body: row.get(5),
        attempts: row.get::<i64, _>(6).max(0) as u32,
    }))
}

/// Stores the attempt's outcome and says which status it left: `sent`, `queued` or `failed`.
async fn record_attempt(
    store: &Store,
    email: &Claimed,
    settings: Option<&EmailSettings>,
    result: Result<(), Failure>,
) -> Result<&'static str, StoreError> {
    let now = crate::clock::now();
    match result {
        Ok(()) => {
            sqlx::query("UPDATE email_outbox SET status = 'sent', sent_at = ? WHERE id = ?")
                .bind(timestamp(now))
                .bind(email.id)
                .execute(&store.pool)
                .await
                .doing("marking a welcome email sent")?;
            tracing::info!(connection = %email.connection, id = email.id, attempts = email.attempts, "welcome email sent");
            Ok("sent")
        }
        Err(failure) => {
            let max_attempts = settings.map_or(u32::MAX, |settings| settings.max_attempts);
            let give_up = failure.permanent || email.attempts >= max_attempts;
            let status = if give_up { "failed" } else { "queued" };
            let wait = settings.map_or(MAX_BACKOFF, |settings| {
                backoff(settings.retry_initial, email.attempts)
            });
            let next = now + TimeDelta::from_std(wait).unwrap_or(TimeDelta::hours(1));
            sqlx::query(
                "UPDATE email_outbox SET status = ?, last_error = ?, next_attempt_at = ? WHERE id = ?",
            )
            .bind(status)
            .bind(&failure.message)
            .bind(timestamp(next))
            .bind(email.id)
            .execute(&store.pool)
            .await
            .doing("recording a failed welcome email")?;
            tracing::warn!(
                connection = %email.connection,
                id = email.id,
                attempts = email.attempts,
                status,
                error = %failure.message,
                "welcome email not sent"
            );
            Ok(status)
        }
    }
}

/// The wait after `attempts` failed attempts: `initial`, doubled after each further one, at
/// most an hour.
fn backoff(initial: Duration, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(20);
    initial.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

/// One SMTP attempt.
async fn send(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    settings: &EmailSettings,
    email: &Claimed,
) -> Result<(), Failure> {
    let recipient: Mailbox = email.recipient.parse().map_err(|error| Failure {
        message: format!(
            "the user's email {:?} is not an address: {error}",
            email.recipient
        ),
        permanent: true,
    })?;
    // The same id on every attempt, so a receiver that deduplicates shows a resent email once.
    let domain = settings.from.email.domain();
    let message = Message::builder()
        .message_id(Some(format!(
            "<welcome.{}.{}@{domain}>",
            email.organization_id, email.id
        )))
        .from(settings.from.clone())
        .to(recipient)
        .subject(email.subject.clone())
        .header(ContentType::TEXT_PLAIN)
        .body(email.body.clone())
        .map_err(|error| Failure {
            message: format!("cannot build the email: {error}"),
            permanent: true,
        })?;
    match transport.send(message).await {
        Ok(_) => Ok(()),
        Err(error) => Err(Failure {
            message: format!(
                "SMTP server {}:{} (tls {}): {error}",
                settings.host,
                settings.port,
                settings.tls.as_str()
            ),
            permanent: error.is_permanent(),
        }),
    }
}

fn transport(settings: &EmailSettings) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let host = settings.host.as_str();
    let builder = match settings.tls {
        TlsMode::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
        TlsMode::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
            .map_err(|error| format!("SMTP host {host:?}: {error}"))?,
        TlsMode::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
            .map_err(|error| format!("SMTP host {host:?}: {error}"))?,
    };
    let mut builder = builder.port(settings.port).timeout(Some(SMTP_TIMEOUT));
    if let Some((username, source)) = &settings.login {
        builder = builder.credentials(Credentials::new(username.clone(), read_password(source)?));
    }
    Ok(builder.build())
}

fn read_password(source: &PasswordSource) -> Result<String, String> {
    match source {
        PasswordSource::Env(name) => match std::env::var(name) {
            Ok(password) if !password.is_empty() => Ok(password),
            _ => Err(format!(
                "the environment variable {name} ([connections.email] password_env) is not set: export it with the SMTP password"
            )),
        },
        PasswordSource::File(path) => std::fs::read_to_string(path)
            .map(|password| password.trim_end_matches(['\r', '\n']).to_owned())
            .map_err(|error| {
                format!(
                    "cannot read the SMTP password file {} ([connections.email] password_file): {error}",
                    path.display()
                )
            }),
    }
}

/// Checks that the password can be read, for `check-config`.
pub fn check_password(settings: &EmailSettings) -> Result<(), String> {
    match &settings.login {
        Some((_, source)) => read_password(source).map(drop),
        None => Ok(()),
    }
}

/// A welcome email as the API lists it (without its body).
#[derive(Debug, Clone, Serialize)]
pub struct EmailRecord {
    pub id: i64,
    pub connection: String,
    pub entra_id: String,
    /// The run that created the user.
    pub run_id: Option<i64>,
    pub recipient: String,
    pub subject: String,
    /// `queued`, `sending`, `sent` or `failed`.
    pub status: String,
    pub attempts: i64,
    /// When the next attempt is due, while queued.
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub sent_at: Option<String>,
}

/// Welcome emails, newest first, optionally of one connection and one status.
pub async fn emails(
    store: &Store,
    connection: Option<&str>,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<EmailRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, connection, entra_id, run_id, recipient, subject, status, attempts, next_attempt_at, last_error, created_at, sent_at \
         FROM email_outbox WHERE (? IS NULL OR connection = ?) AND (? IS NULL OR status = ?) ORDER BY id DESC LIMIT ?",
    )
    .bind(connection)
    .bind(connection)
    .bind(status)
    .bind(status)
    .bind(limit)
    .fetch_all(&store.pool)
    .await
    .doing("listing welcome emails")?;
    Ok(rows
        .iter()
        .map(|row| {
            let status: String = row.get(6);
            EmailRecord {
                id: row.get(0),
                connection: row.get(1),
                entra_id: row.get(2),
                run_id: row.get(3),
                recipient: row.get(4),
                subject: row.get(5),
                next_attempt_at: (status == "queued").then(|| row.get(8)),
                status,
                attempts: row.get(7),
                last_error: row.get(9),
                created_at: row.get(10),
                sent_at: row.get(11),
            }
        })
        .collect())
}

/// Clears the recipient, subject and body of emails sent or given up before `cutoff`, with the
/// run history's retention; returns how many. The rows stay, so a user is still welcomed once.
pub async fn forget_before(store: &Store, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
    let forgotten = sqlx::query(
        "UPDATE email_outbox SET recipient = '', subject = '', body = '' \
         WHERE status IN ('sent', 'failed') AND created_at < ? AND recipient <> ''",
    )
    .bind(timestamp(cutoff))
    .execute(&store.pool)
    .await
    .doing("forgetting old welcome emails")?;
    Ok(forgotten.rows_affected())
}

/// How many of the welcome emails a run queued are in each status, for the run's history.
pub async fn run_email_counts(
    store: &Store,
    run_id: i64,
) -> Result<std::collections::BTreeMap<String, i64>, StoreError> {
    let rows = sqlx::query("SELECT status, count(*) FROM email_outbox WHERE run_id = ? GROUP BY status")
        .bind(run_id)
        .fetch_all(&store.pool)
        .await
        .doing("counting a run's welcome emails")?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn templates_render_placeholders_and_literal_braces() {
        let template =
            Template::parse("Hi {first_name} {last_name} ({email}) of {organization}: {{x}}").unwrap();
        let attributes = Attributes::from([
            (Field::GivenName, "Ada".to_owned()),
            (Field::Surname, "Lovelace".to_owned()),
            (Field::Email, "ada@contoso.example".to_owned()),
        ]);
        assert_eq!(
            template.render(&attributes, "Contoso"),
            "Hi Ada Lovelace (ada@contoso.example) of Contoso: {x}"
        );
        assert_eq!(
            Template::parse("{job_title}!")
                .unwrap()
                .render(&attributes, "Contoso"),
            "!"
        );
    }

    #[test]
    fn template_errors_say_what_to_write() {
        let unknown = Template::parse("Hi {name}").unwrap_err();
        assert!(unknown.contains("unknown placeholder {name}"), "{unknown}");
        assert!(unknown.contains("{display_name}"), "{unknown}");
        assert!(Template::parse("a } b").unwrap_err().contains("}}"));
    }

    fn create(entra_id: &str, email: Option<&str>, status: UserStatus) -> Action {
        let mut attributes = Attributes::from([
            (Field::GivenName, "Ada".to_owned()),
            (Field::Surname, "Lovelace".to_owned()),
        ]);
        if let Some(email) = email {
            attributes.insert(Field::Email, email.to_owned());
        }
        Action::CreateUser {
            entra_id: entra_id.into(),
            attributes,
            status,
            status_reason: None,
            department: None,
        }
    }

    async fn outbox(store: &Store) -> Vec<(String, String, String, i64)> {
        sqlx::query_as("SELECT entra_id, subject, status, attempts FROM email_outbox ORDER BY id")
            .fetch_all(&store.pool)
            .await
            .unwrap()
    }

    /// A connection whose SMTP server is 127.0.0.1:`port`.
    fn connection(port: u16) -> Connection {
        let text = format!(
            "[[connections]]\nname = \"contoso\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\
             [connections.options]\nwelcome_email = true\n[connections.email]\nhost = \"127.0.0.1\"\nport = {port}\n\
             tls = \"none\"\nfrom = \"it@contoso.example\"\nsubject = \"Welcome, {{first_name}}\"\nbody = \"Hi\"\n\
             retry_initial = \"30s\"\n"
        );
        let config = crate::config::Config::parse(std::path::Path::new("/c.toml"), &text).unwrap();
        config.connections[0].clone()
    }

    #[tokio::test]
    async fn only_users_created_active_with_an_email_are_queued_and_only_once() {
        use crate::targets::Target;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let now = crate::clock::now();
        let state = store.connection_state("contoso", "contoso", now).await.unwrap();
        let welcome = Welcome::for_connection(&connection(25), Some(7));
        let directory =
            crate::targets::directory::Directory::new(&store, state.organization_id).with_welcome(welcome);
        directory.load().await.unwrap();
        let actions = [
            create("e1", Some("ada@contoso.example"), UserStatus::Active),
            create("e2", Some("off@contoso.example"), UserStatus::Disabled),
            create("e3", None, UserStatus::Active),
        ];
        directory.apply(&actions, now).await.unwrap();
        // A re-run after a crash that applies the create again converges on the same row.
        directory.apply(&actions[..1], now).await.unwrap();
        assert_eq!(
            outbox(&store).await,
            [("e1".into(), "Welcome, Ada".into(), "queued".into(), 0)]
        );
    }

    #[tokio::test]
    async fn failures_are_retried_after_a_backoff_and_bad_addresses_give_up() {
        use crate::targets::Target;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let now = crate::clock::now();
        let state = store.connection_state("contoso", "contoso", now).await.unwrap();
        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let connection = connection(port);
        let directory = crate::targets::directory::Directory::new(&store, state.organization_id)
            .with_welcome(Welcome::for_connection(&connection, None));
        directory.load().await.unwrap();
        let actions = [
            create("e1", Some("ada@contoso.example"), UserStatus::Active),
            create("e2", Some("not an address"), UserStatus::Active),
        ];
        directory.apply(&actions, now).await.unwrap();
        let connections = [connection];
        let delivery = deliver_due(&store, &connections, now).await.unwrap();
        assert_eq!(
            delivery,
            Delivery {
                sent: 0,
                retrying: 1,
                failed: 1
            }
        );
        let listed = emails(&store, None, None, 10).await.unwrap();
        let (bad, queued) = (&listed[0], &listed[1]);
        assert_eq!((bad.status.as_str(), bad.attempts), ("failed", 1));
        assert!(bad.last_error.as_deref().unwrap().contains("is not an address"));
        assert_eq!((queued.status.as_str(), queued.attempts), ("queued", 1));
        assert!(
            queued
                .last_error
                .as_deref()
                .unwrap()
                .contains("SMTP server 127.0.0.1")
        );
        // Not due again before its backoff; due after it.
        assert!(deliver_due(&store, &connections, now).await.unwrap().is_empty());
        let later = now + TimeDelta::seconds(31);
        assert_eq!(
            deliver_due(&store, &connections, later).await.unwrap().retrying,
            1
        );
        assert_eq!(
            emails(&store, None, Some("queued"), 10).await.unwrap()[0].attempts,
            2
        );
        // The retention clears what a finished email says of its user, not a waiting one.
        assert_eq!(
            forget_before(&store, later + TimeDelta::days(1)).await.unwrap(),
            1
        );
        let listed = emails(&store, None, None, 10).await.unwrap();
        assert_eq!(
            (listed[0].recipient.as_str(), listed[0].status.as_str()),
            ("", "failed")
        );
        assert_eq!(listed[1].recipient, "ada@contoso.example");
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let minute = Duration::from_secs(60);
        let waits: Vec<u64> = [1, 2, 3, 7, 30]
            .into_iter()
            .map(|attempts| backoff(minute, attempts).as_secs())
            .collect();
        assert_eq!(waits, [60, 120, 240, 3600, 3600]);
    }
}
