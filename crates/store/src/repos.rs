//! Repositories: what gantry builds, with the clone URL and webhook secret registered for
//! each (never taken from a webhook payload).

use serde::{Deserialize, Serialize};

use crate::{Result, Store, StoreError, db};

/// Who may read a repository's builds and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Public,
    Internal,
    Private,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Internal => "internal",
            Visibility::Private => "private",
        }
    }
}

impl std::str::FromStr for Visibility {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "public" => Ok(Visibility::Public),
            "internal" => Ok(Visibility::Internal),
            "private" => Ok(Visibility::Private),
            other => Err(format!(
                "unknown visibility `{other}`: expected public, internal or private"
            )),
        }
    }
}

impl TryFrom<String> for Visibility {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

/// What a pull request from a fork does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForkPolicy {
    /// It runs (untrusted, without secrets).
    Run,
    /// It waits as `blocked` until a user with write access approves it.
    Approve,
}

impl ForkPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ForkPolicy::Run => "run",
            ForkPolicy::Approve => "approve",
        }
    }
}

impl std::str::FromStr for ForkPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "run" => Ok(ForkPolicy::Run),
            "approve" => Ok(ForkPolicy::Approve),
            other => Err(format!("fork_policy `{other}` is not `run` or `approve`")),
        }
    }
}

impl TryFrom<String> for ForkPolicy {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Repo {
    pub id: i64,
    pub owner: String,
    pub name: String,
    pub clone_url: String,
    /// The repository's web page, for links to commits.
    pub link: String,
    /// Never serialised: the API says only whether one is set.
    pub webhook_secret: String,
    /// The pipeline file's path; empty for the defaults (`.gantry.yml`, `.drone.yml`, ...).
    pub config_path: String,
    pub default_branch: String,
    pub trusted: bool,
    #[sqlx(try_from = "String")]
    pub visibility: Visibility,
    pub timeout_secs: i64,
    pub active: bool,
    pub created_at: i64,
    pub updated_at: i64,
    /// For commit statuses; empty: the server's. Never serialised.
    pub github_token: String,
    #[sqlx(try_from = "String")]
    pub fork_policy: ForkPolicy,
    /// The SSH deploy key (sealed) for `ssh://` and `git@host:` clone URLs; empty: none.
    /// Never serialised.
    pub ssh_key: String,
    /// The key (sealed) of the HMAC its pipeline files must carry (`kind: signature`);
    /// empty: files are not checked. Never serialised.
    pub signing_key: String,
}

impl Repo {
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// Whether a build of this repository is trusted: the repository is, and the build is not
    /// a pull request from a fork (a fork's code is never trusted, whatever the flag). The
    /// claim's SQL says the same (`queue`).
    pub fn trusts(&self, fork: bool) -> bool {
        self.trusted && !fork
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NewRepo {
    pub owner: String,
    pub name: String,
    pub clone_url: String,
    #[serde(default)]
    pub link: String,
    #[serde(default)]
    pub webhook_secret: String,
    #[serde(default)]
    pub config_path: String,
    #[serde(default = "default_branch")]
    pub default_branch: String,
    #[serde(default)]
    pub trusted: bool,
    /// `None`: the server decides (what GitHub says, else private).
    #[serde(default)]
    pub visibility: Option<Visibility>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: i64,
    #[serde(default)]
    pub github_token: String,
    #[serde(default = "default_fork_policy")]
    pub fork_policy: String,
    #[serde(default)]
    pub ssh_key: String,
}

fn default_fork_policy() -> String {
    "run".to_owned()
}

fn default_branch() -> String {
    "main".to_owned()
}
fn default_timeout() -> i64 {
    3600
}

/// Fields to change; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoUpdate {
    pub clone_url: Option<String>,
    pub link: Option<String>,
    pub webhook_secret: Option<String>,
    pub config_path: Option<String>,
    pub default_branch: Option<String>,
    pub trusted: Option<bool>,
    pub visibility: Option<Visibility>,
    pub timeout_secs: Option<i64>,
    pub active: Option<bool>,
    pub github_token: Option<String>,
    pub fork_policy: Option<String>,
    pub ssh_key: Option<String>,
}

const COLUMNS: &str = "id, owner, name, clone_url, link, webhook_secret, config_path, \
     default_branch, trusted, visibility, timeout_secs, active, created_at, updated_at, \
     github_token, fork_policy, ssh_key, signing_key";

impl Store {
    pub async fn create_repo(&self, new: &NewRepo) -> Result<Repo> {
        let now = self.clock.now_ms();
        let inserted = db::query_scalar::<i64>(
            "INSERT INTO repos (owner, name, clone_url, link, webhook_secret, config_path, \
             default_branch, trusted, visibility, timeout_secs, active, created_at, updated_at, \
             github_token, fork_policy, ssh_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, TRUE, $11, $11, $12, $13, $14) \
             ON CONFLICT (owner, name) DO NOTHING RETURNING id",
        )
        .bind(&new.owner)
        .bind(&new.name)
        .bind(&new.clone_url)
        .bind(&new.link)
        .bind(&new.webhook_secret)
        .bind(&new.config_path)
        .bind(&new.default_branch)
        .bind(new.trusted)
        .bind(new.visibility.unwrap_or(Visibility::Private).as_str())
        .bind(new.timeout_secs)
        .bind(now)
        .bind(&new.github_token)
        .bind(&new.fork_policy)
        .bind(&new.ssh_key)
        .fetch_optional(&self.pool)
        .await?;
        match inserted {
            Some(id) => self.repo(id).await,
            None => Err(StoreError::Conflict(format!(
                "repository {}/{} already exists",
                new.owner, new.name
            ))),
        }
    }

    pub async fn repo(&self, id: i64) -> Result<Repo> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM repos WHERE id = $1"));
        db::query_as::<Repo>(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("repository #{id}")))
    }

    pub async fn repo_by_name(&self, owner: &str, name: &str) -> Result<Option<Repo>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM repos WHERE owner = $1 AND name = $2"
        ));
        db::query_as::<Repo>(sql)
            .bind(owner)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn list_repos(&self) -> Result<Vec<Repo>> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM repos ORDER BY owner, name"));
        db::query_as::<Repo>(sql).fetch_all(&self.pool).await
    }

    pub async fn update_repo(&self, id: i64, update: &RepoUpdate) -> Result<Repo> {
        let current = self.repo(id).await?;
        let clone_url = update.clone_url.as_ref().unwrap_or(&current.clone_url);
        let link = update.link.as_ref().unwrap_or(&current.link);
        let secret = update
            .webhook_secret
            .as_ref()
            .unwrap_or(&current.webhook_secret);
        let config_path = update.config_path.as_ref().unwrap_or(&current.config_path);
        let default_branch = update
            .default_branch
            .as_ref()
            .unwrap_or(&current.default_branch);
        db::query(
            "UPDATE repos SET clone_url = $2, link = $3, webhook_secret = $4, config_path = $5, \
             default_branch = $6, trusted = $7, visibility = $8, timeout_secs = $9, active = $10, \
             updated_at = $11, github_token = $12, fork_policy = $13, ssh_key = $14 WHERE id = $1",
        )
        .bind(id)
        .bind(clone_url)
        .bind(link)
        .bind(secret)
        .bind(config_path)
        .bind(default_branch)
        .bind(update.trusted.unwrap_or(current.trusted))
        .bind(update.visibility.unwrap_or(current.visibility).as_str())
        .bind(update.timeout_secs.unwrap_or(current.timeout_secs))
        .bind(update.active.unwrap_or(current.active))
        .bind(self.clock.now_ms())
        .bind(
            update
                .github_token
                .as_ref()
                .unwrap_or(&current.github_token),
        )
        .bind(
            update
                .fork_policy
                .as_deref()
                .unwrap_or(current.fork_policy.as_str()),
        )
        .bind(update.ssh_key.as_ref().unwrap_or(&current.ssh_key))
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected())?;
        self.repo(id).await
    }

    /// Sets the sealed key of the HMAC the repository's pipeline files must carry; empty
    /// stops checking them.
    pub async fn set_signing_key(&self, id: i64, sealed: &str) -> Result<Repo> {
        db::query("UPDATE repos SET signing_key = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(sealed)
            .bind(self.clock.now_ms())
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())?;
        self.repo(id).await
    }

    /// Removes the repository with its builds, stages, steps and logs.
    pub async fn delete_repo(&self, id: i64) -> Result<()> {
        let done = db::query("DELETE FROM repos WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())?;
        if done == 0 {
            return Err(StoreError::NotFound(format!("repository #{id}")));
        }
        Ok(())
    }

    /// Takes the repository's next build number. Numbers are never reused; one taken by a
    /// build that was then not created leaves a gap.
    pub async fn take_build_number(&self, repo_id: i64) -> Result<i64> {
        db::query_scalar::<i64>(
            "UPDATE repos SET next_build_number = next_build_number + 1 WHERE id = $1 \
             RETURNING next_build_number - 1",
        )
        .bind(repo_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("repository #{repo_id}")))
    }
}
