//! Notifications: chat targets per repository (or server-wide), and the outbox of messages
//! to send. A build is due for notifications while its `notified_status` differs from its
//! status; the messages for a change and the new `notified_status` are written in one
//! transaction, so a change is notified once, whichever path made it, and a message
//! waiting in the outbox survives a restart.

use gantry_pipeline::model::{ChatKind, NotifyRule};
use serde::Deserialize;

use crate::db::{self, Tx};
use crate::{Build, Event, Result, Status, Store, StoreError};

/// Where chat messages go, and which builds they are about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyTarget {
    pub id: i64,
    /// `None`: a server-wide default.
    pub repo_id: Option<i64>,
    pub kind: ChatKind,
    /// The webhook URL: it is a credential, so the API shows it shortened.
    pub url: String,
    pub rules: Vec<NotifyRule>,
    /// Only builds of these branches (empty: all).
    pub branches: Vec<String>,
    /// Only builds of these events (empty: all).
    pub events: Vec<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NewTarget {
    pub kind: ChatKind,
    pub url: String,
    #[serde(default = "default_rules")]
    pub rules: Vec<NotifyRule>,
    #[serde(default)]
    pub branches: Vec<String>,
    #[serde(default)]
    pub events: Vec<String>,
}

fn default_rules() -> Vec<NotifyRule> {
    NotifyRule::DEFAULT.to_vec()
}

#[derive(Debug, sqlx::FromRow)]
struct TargetRow {
    id: i64,
    repo_id: Option<i64>,
    #[sqlx(try_from = "String")]
    kind: ChatKind,
    url: String,
    rules: String,
    branches: String,
    events: String,
    created_at: i64,
}

impl TryFrom<TargetRow> for NotifyTarget {
    type Error = StoreError;
    fn try_from(row: TargetRow) -> Result<Self> {
        fn list<T: serde::de::DeserializeOwned>(text: &str) -> Result<Vec<T>> {
            serde_json::from_str(text).map_err(|e| StoreError::corrupt("notification target", e))
        }
        Ok(NotifyTarget {
            id: row.id,
            repo_id: row.repo_id,
            kind: row.kind,
            url: row.url,
            rules: list(&row.rules)?,
            branches: list(&row.branches)?,
            events: list(&row.events)?,
            created_at: row.created_at,
        })
    }
}

const TARGET_COLUMNS: &str = "id, repo_id, kind, url, rules, branches, events, created_at";

/// What a message of the outbox is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A commit status, posted to the GitHub API gantry is configured with.
    GithubStatus,
    /// A deployment status on GitHub (the deployment created first when it has none yet),
    /// posted to the GitHub API gantry is configured with.
    GithubDeployment,
    /// A chat message, posted to an address a repository or server admin chose.
    Chat(ChatKind),
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::GithubStatus => "github_status",
            MessageKind::GithubDeployment => "github_deployment",
            MessageKind::Chat(kind) => kind.as_str(),
        }
    }
}

impl TryFrom<String> for MessageKind {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        if value == MessageKind::GithubStatus.as_str() {
            return Ok(MessageKind::GithubStatus);
        }
        if value == MessageKind::GithubDeployment.as_str() {
            return Ok(MessageKind::GithubDeployment);
        }
        value.parse().map(MessageKind::Chat).map_err(|_| {
            format!("unknown message kind `{value}`: expected github_status, github_deployment or a chat service")
        })
    }
}

impl std::fmt::Display for MessageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message to send: a JSON body to POST to a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub kind: MessageKind,
    pub url: String,
    pub body: String,
    /// An `Authorization` header value.
    pub auth: Option<String>,
}

/// Where a message of the outbox is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageState {
    /// Waiting for its (next) attempt.
    Pending,
    Sent,
    /// Given up.
    Failed,
}

impl MessageState {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Pending => "pending",
            MessageState::Sent => "sent",
            MessageState::Failed => "failed",
        }
    }
}

impl TryFrom<String> for MessageState {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "pending" => Ok(MessageState::Pending),
            "sent" => Ok(MessageState::Sent),
            "failed" => Ok(MessageState::Failed),
            other => Err(format!(
                "unknown message state `{other}`: expected pending, sent or failed"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxMessage {
    pub id: i64,
    pub build_id: Option<i64>,
    #[sqlx(try_from = "String")]
    pub kind: MessageKind,
    pub url: String,
    pub body: String,
    pub auth: Option<String>,
    #[sqlx(try_from = "String")]
    pub state: MessageState,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
    /// Which claim on it is current (see [`Store::claim_message`]).
    pub claim_epoch: i64,
}

const MESSAGE_COLUMNS: &str = "id, build_id, kind, url, body, auth, state, attempts, \
     next_attempt_at, last_error, created_at, sent_at, claim_epoch";

/// Inserts a build's messages into the outbox inside the transaction `tx`.
async fn insert_messages(
    tx: &mut Tx,
    build_id: i64,
    messages: &[NewMessage],
    now: i64,
) -> Result<()> {
    for message in messages {
        db::query(
            "INSERT INTO outbox (build_id, kind, url, body, auth, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(build_id)
        .bind(message.kind.as_str())
        .bind(&message.url)
        .bind(&message.body)
        .bind(message.auth.as_deref())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

impl Store {
    pub async fn add_target(&self, repo_id: Option<i64>, new: &NewTarget) -> Result<NotifyTarget> {
        fn json<T: serde::Serialize>(v: &[T]) -> String {
            serde_json::to_string(v).expect("names serialise")
        }
        let id: i64 = db::query_scalar(
            "INSERT INTO notify_targets (repo_id, kind, url, rules, branches, events, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(repo_id)
        .bind(new.kind.as_str())
        .bind(&new.url)
        .bind(json(&new.rules))
        .bind(json(&new.branches))
        .bind(json(&new.events))
        .bind(self.clock.now_ms())
        .fetch_one(&self.pool)
        .await?;
        self.target(id).await
    }

    pub async fn target(&self, id: i64) -> Result<NotifyTarget> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {TARGET_COLUMNS} FROM notify_targets WHERE id = $1"
        ));
        db::query_as::<TargetRow>(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(NotifyTarget::try_from)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("notification target #{id}")))
    }

    /// A repository's own targets (`Some`), or the server-wide ones (`None`).
    pub async fn targets(&self, repo_id: Option<i64>) -> Result<Vec<NotifyTarget>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {TARGET_COLUMNS} FROM notify_targets WHERE repo_id = $1 \
             OR ($1 IS NULL AND repo_id IS NULL) ORDER BY id"
        ));
        let rows = db::query_as::<TargetRow>(sql)
            .bind(repo_id)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(NotifyTarget::try_from).collect()
    }

    /// The targets a repository's builds notify: its own, else the server-wide ones.
    pub async fn targets_for(&self, repo_id: i64) -> Result<Vec<NotifyTarget>> {
        let own = self.targets(Some(repo_id)).await?;
        if own.is_empty() {
            self.targets(None).await
        } else {
            Ok(own)
        }
    }

    pub async fn remove_target(&self, id: i64) -> Result<()> {
        let done = db::query("DELETE FROM notify_targets WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())?;
        if done == 0 {
            return Err(StoreError::NotFound(format!("notification target #{id}")));
        }
        Ok(())
    }

    /// Builds whose status changed since their notifications were last made, oldest first.
    pub async fn builds_to_notify(&self, limit: i64) -> Result<Vec<Build>> {
        let sql = "SELECT * FROM builds WHERE notified_status IS NULL \
             OR notified_status <> status ORDER BY id LIMIT $1";
        let rows = db::query_as::<Build>(sql)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    /// Queues the messages for the build's change from `notified` (what it was last
    /// notified as, read with the build) to `status`, and records it, in one transaction.
    /// Returns `false`, queuing nothing, when another server recorded a change first.
    pub async fn queue_notifications(
        &self,
        build_id: i64,
        notified: Option<Status>,
        status: Status,
        messages: &[NewMessage],
    ) -> Result<bool> {
        let now = self.clock.now_ms();
        let mut tx = self.begin().await?;
        // The compare-and-set comes first: it takes the build's row lock, so a second
        // server waits here and then finds nothing to do.
        let taken = db::query(
            "UPDATE builds SET notified_status = $2 WHERE id = $1 \
             AND COALESCE(notified_status, '') = COALESCE($3, '')",
        )
        .bind(build_id)
        .bind(status.as_str())
        .bind(notified.map(Status::as_str))
        .execute(&mut tx)
        .await?
        .rows_affected()
            == 1;
        if taken {
            insert_messages(&mut tx, build_id, messages, now).await?;
            tx.commit().await?;
        }
        if taken && !messages.is_empty() {
            self.publish(Event::MessageQueued).await;
        }
        Ok(taken)
    }

    /// Queues one message that belongs to no build (a test message).
    pub async fn queue_message(&self, message: &NewMessage) -> Result<i64> {
        let now = self.clock.now_ms();
        let id = db::query_scalar(
            "INSERT INTO outbox (kind, url, body, auth, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $5) RETURNING id",
        )
        .bind(message.kind.as_str())
        .bind(&message.url)
        .bind(&message.body)
        .bind(message.auth.as_deref())
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        self.publish(Event::MessageQueued).await;
        Ok(id)
    }

    /// Takes the oldest pending message whose time has come until `lease_until`, bumping
    /// its `claim_epoch`. Servers sharing the database each take a different one. A
    /// message waits while an earlier one of its build to the same address is pending, so
    /// a commit's statuses land in the order they were made.
    pub async fn claim_message(&self, now: i64, lease_until: i64) -> Result<Option<OutboxMessage>> {
        let lock = self.skip_locked();
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE outbox SET next_attempt_at = $2, claim_epoch = claim_epoch + 1 \
             WHERE id = (SELECT o.id FROM outbox o WHERE o.state = 'pending' \
             AND o.next_attempt_at <= $1 AND NOT EXISTS (SELECT 1 FROM outbox e \
             WHERE e.build_id = o.build_id AND e.url = o.url AND e.id < o.id \
             AND e.state = 'pending') ORDER BY o.id LIMIT 1{lock}) \
             AND state = 'pending' AND next_attempt_at <= $1 RETURNING {MESSAGE_COLUMNS}"
        ));
        db::query_as::<OutboxMessage>(sql)
            .bind(now)
            .bind(lease_until)
            .fetch_optional(&self.pool)
            .await
    }

    /// When the next pending message is due, if any.
    pub async fn next_message_due(&self) -> Result<Option<i64>> {
        db::query_scalar("SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending'")
            .fetch_one(&self.pool)
            .await
    }

    /// Marks a claimed message sent (nothing changes if the claim is no longer current).
    pub async fn message_sent(&self, id: i64, epoch: i64) -> Result<()> {
        db::query(
            "UPDATE outbox SET state = 'sent', sent_at = $2, attempts = attempts + 1, \
             last_error = NULL WHERE id = $1 AND claim_epoch = $3 AND state = 'pending'",
        )
        .bind(id)
        .bind(self.clock.now_ms())
        .bind(epoch)
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected())?;
        Ok(())
    }

    /// Records a failed attempt: tried again at `retry_at`, or given up (`None`).
    pub async fn message_failed(
        &self,
        id: i64,
        epoch: i64,
        error: &str,
        retry_at: Option<i64>,
    ) -> Result<()> {
        db::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $2, \
             state = CASE WHEN CAST($3 AS BIGINT) IS NULL THEN 'failed' ELSE 'pending' END, \
             next_attempt_at = COALESCE(CAST($3 AS BIGINT), next_attempt_at) \
             WHERE id = $1 AND claim_epoch = $4 AND state = 'pending'",
        )
        .bind(id)
        .bind(error)
        .bind(retry_at)
        .bind(epoch)
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected())?;
        Ok(())
    }

    /// A build's messages, to show what was reported and what failed.
    pub async fn build_messages(&self, build_id: i64) -> Result<Vec<OutboxMessage>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM outbox WHERE build_id = $1 ORDER BY id"
        ));
        db::query_as::<OutboxMessage>(sql)
            .bind(build_id)
            .fetch_all(&self.pool)
            .await
    }

    /// The last finished build of `branch` before `number` (for "recovered").
    pub async fn previous_finished_build(
        &self,
        repo_id: i64,
        branch: &str,
        number: i64,
    ) -> Result<Option<Build>> {
        let sql = "SELECT * FROM builds WHERE repo_id = $1 AND branch = $2 \
             AND number < $3 AND finished_at IS NOT NULL AND status <> 'skipped' \
             ORDER BY number DESC LIMIT 1";
        db::query_as::<Build>(sql)
            .bind(repo_id)
            .bind(branch)
            .bind(number)
            .fetch_optional(&self.pool)
            .await
    }
}
