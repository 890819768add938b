//! Users and their roles on repositories. A user signs in with GitHub or is added by a server
//! admin; a role comes from the user's GitHub permission (cached with the time it was read,
//! for the server to refresh) or is set by a server admin, and the admin's wins. Logins
//! compare without case, as GitHub's do.

use serde::{Deserialize, Serialize};

use crate::{Result, Store, StoreError, db};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    pub login: String,
    /// A server admin: every role on every repository, and the server-wide settings.
    pub admin: bool,
    pub created_at: i64,
    pub last_login_at: Option<i64>,
    /// The GitHub account, once they signed in with it.
    pub github_id: Option<i64>,
}

/// What a user may do on a repository; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Nothing beyond what the repository's visibility gives everyone.
    None,
    /// Builds and logs of a private repository.
    Read,
    /// Restart, cancel, manual builds, approve and decline.
    Write,
    /// Settings, secrets, notification targets, removal.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::None, Role::Read, Role::Write, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}`: expected none, read, write or admin"))
    }
}

impl TryFrom<String> for Role {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        value.parse()
    }
}

/// Where a stored role came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleSource {
    /// The user's permission on GitHub, as read at `fetched_at`.
    #[serde(rename = "github")]
    GitHub,
    /// Set by a server admin; never refreshed, and it wins over GitHub's.
    Admin,
}

impl RoleSource {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleSource::GitHub => "github",
            RoleSource::Admin => "admin",
        }
    }
}

impl TryFrom<String> for RoleSource {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        match value.as_str() {
            "github" => Ok(RoleSource::GitHub),
            "admin" => Ok(RoleSource::Admin),
            other => Err(format!("unknown role source `{other}`")),
        }
    }
}

/// A stored role of one user on one repository.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RepoRole {
    pub repo_id: i64,
    pub user_id: i64,
    pub login: String,
    #[sqlx(try_from = "String")]
    pub source: RoleSource,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub fetched_at: i64,
}

const USER_COLUMNS: &str = "id, login, admin, created_at, last_login_at, github_id";

impl Store {
    /// Adds a user; a login that exists (in any case) is a conflict.
    pub async fn create_user(&self, login: &str, admin: bool) -> Result<User> {
        let sql = sqlx::AssertSqlSafe(format!(
            "INSERT INTO users (login, admin, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (lower(login)) DO NOTHING RETURNING {USER_COLUMNS}"
        ));
        let created = db::query_as::<User>(sql)
            .bind(login)
            .bind(admin)
            .bind(self.clock.now_ms())
            .fetch_optional(&self.pool)
            .await?;
        created.ok_or_else(|| StoreError::Conflict(format!("user {login} already exists")))
    }

    /// Records a sign-in with GitHub by the account `github_id`, now called `login`: the
    /// user of that account, renamed if GitHub renamed it; else the user of that login whom
    /// no account holds yet (added by an admin, or from before accounts were recorded); else
    /// a new user. A user of the same login held by another account (the login was renamed
    /// and taken) keeps its tokens and roles under `LOGIN~ID`, until its own account signs
    /// in again. The sealed GitHub token is replaced; `admin`, when given (the server has an
    /// admin list), sets the admin flag, else it is left as an admin set it.
    pub async fn signed_in(
        &self,
        github_id: i64,
        login: &str,
        admin: Option<bool>,
        sealed_token: &[u8],
    ) -> Result<User> {
        let now = self.clock.now_ms();
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE users SET github_id = $1, login = $2, admin = COALESCE($3, admin), \
             github_token = $4, last_login_at = $5 WHERE id = $6 RETURNING {USER_COLUMNS}"
        ));
        let insert = sqlx::AssertSqlSafe(format!(
            "INSERT INTO users (github_id, login, admin, github_token, created_at, last_login_at) \
             VALUES ($1, $2, COALESCE($3, FALSE), $4, $5, $5) RETURNING {USER_COLUMNS}"
        ));
        // The reads decide the writes: SQLite takes its write lock first (a deferred
        // transaction could not upgrade while another writer commits).
        let mut tx = self.begin_writing().await?;
        let by_account: Option<i64> = db::query_scalar("SELECT id FROM users WHERE github_id = $1")
            .bind(github_id)
            .fetch_optional(&mut tx)
            .await?;
        let by_login: Option<(i64, Option<i64>)> =
            db::query_as("SELECT id, github_id FROM users WHERE lower(login) = lower($1)")
                .bind(login)
                .fetch_optional(&mut tx)
                .await?;
        // Another account's user holding this login steps aside.
        if let Some((other, held_by)) = by_login
            && Some(other) != by_account
            && held_by.is_some()
        {
            db::query(
                "UPDATE users SET login = login || '~' || CAST(github_id AS TEXT) WHERE id = $1",
            )
            .bind(other)
            .execute(&mut tx)
            .await?;
        }
        let unclaimed = by_login
            .filter(|(_, held_by)| held_by.is_none())
            .map(|(id, _)| id);
        let user = match by_account.or(unclaimed) {
            Some(id) => {
                db::query_as::<User>(sql)
                    .bind(github_id)
                    .bind(login)
                    .bind(admin)
                    .bind(sealed_token)
                    .bind(now)
                    .bind(id)
                    .fetch_one(&mut tx)
                    .await?
            }
            None => {
                db::query_as::<User>(insert)
                    .bind(github_id)
                    .bind(login)
                    .bind(admin)
                    .bind(sealed_token)
                    .bind(now)
                    .fetch_one(&mut tx)
                    .await?
            }
        };
        tx.commit().await?;
        Ok(user)
    }

    /// Makes `logins` (compared without case) the server admins and no one else: the
    /// server's `--admins`, the truth at each start.
    pub async fn set_admins(&self, logins: &[String]) -> Result<()> {
        let lowered: Vec<String> = logins.iter().map(|l| l.to_lowercase()).collect();
        let users: Vec<(i64, String, bool)> = db::query_as("SELECT id, login, admin FROM users")
            .fetch_all(&self.pool)
            .await?;
        for (id, login, admin) in users {
            let should = lowered.contains(&login.to_lowercase());
            if should != admin {
                db::query("UPDATE users SET admin = $2 WHERE id = $1")
                    .bind(id)
                    .bind(should)
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    pub async fn user(&self, id: i64) -> Result<User> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"));
        db::query_as::<User>(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("user #{id}")))
    }

    pub async fn user_by_login(&self, login: &str) -> Result<Option<User>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE lower(login) = lower($1)"
        ));
        db::query_as::<User>(sql)
            .bind(login)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn users(&self) -> Result<Vec<User>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY lower(login)"
        ));
        db::query_as::<User>(sql).fetch_all(&self.pool).await
    }

    pub async fn set_user_admin(&self, id: i64, admin: bool) -> Result<User> {
        db::query("UPDATE users SET admin = $2 WHERE id = $1")
            .bind(id)
            .bind(admin)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())?;
        self.user(id).await
    }

    /// Removes the user with their tokens, sessions and roles.
    pub async fn delete_user(&self, id: i64) -> Result<()> {
        let done = db::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())?;
        if done == 0 {
            return Err(StoreError::NotFound(format!("user #{id}")));
        }
        Ok(())
    }

    /// The user's sealed GitHub token, if they signed in with GitHub.
    pub async fn user_github_token(&self, id: i64) -> Result<Option<Vec<u8>>> {
        Ok(
            db::query_scalar::<Option<Vec<u8>>>("SELECT github_token FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
        )
    }

    /// The user's stored roles on a repository (at most one per source).
    pub async fn roles_on(&self, repo_id: i64, user_id: i64) -> Result<Vec<RepoRole>> {
        db::query_as::<RepoRole>(
            "SELECT r.repo_id, r.user_id, u.login, r.source, r.role, r.fetched_at \
             FROM repo_roles r JOIN users u ON u.id = r.user_id \
             WHERE r.repo_id = $1 AND r.user_id = $2",
        )
        .bind(repo_id)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
    }

    /// Every stored role of a user, for listing what they may read.
    pub async fn roles_of_user(&self, user_id: i64) -> Result<Vec<RepoRole>> {
        db::query_as::<RepoRole>(
            "SELECT r.repo_id, r.user_id, u.login, r.source, r.role, r.fetched_at \
             FROM repo_roles r JOIN users u ON u.id = r.user_id WHERE r.user_id = $1",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
    }

    /// Every stored role on a repository, by login.
    pub async fn roles_of_repo(&self, repo_id: i64) -> Result<Vec<RepoRole>> {
        db::query_as::<RepoRole>(
            "SELECT r.repo_id, r.user_id, u.login, r.source, r.role, r.fetched_at \
             FROM repo_roles r JOIN users u ON u.id = r.user_id \
             WHERE r.repo_id = $1 ORDER BY lower(u.login), r.source",
        )
        .bind(repo_id)
        .fetch_all(&self.pool)
        .await
    }

    /// Stores a role, replacing the one from the same source.
    pub async fn put_role(
        &self,
        repo_id: i64,
        user_id: i64,
        source: RoleSource,
        role: Role,
    ) -> Result<()> {
        db::query(
            "INSERT INTO repo_roles (repo_id, user_id, source, role, fetched_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (repo_id, user_id, source) DO UPDATE SET role = excluded.role, \
             fetched_at = excluded.fetched_at",
        )
        .bind(repo_id)
        .bind(user_id)
        .bind(source.as_str())
        .bind(role.as_str())
        .bind(self.clock.now_ms())
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected())?;
        Ok(())
    }

    /// Removes the role from one source; false when there was none.
    pub async fn remove_role(
        &self,
        repo_id: i64,
        user_id: i64,
        source: RoleSource,
    ) -> Result<bool> {
        let done =
            db::query("DELETE FROM repo_roles WHERE repo_id = $1 AND user_id = $2 AND source = $3")
                .bind(repo_id)
                .bind(user_id)
                .bind(source.as_str())
                .execute(&self.pool)
                .await
                .map(|r| r.rows_affected())?;
        Ok(done > 0)
    }
}
