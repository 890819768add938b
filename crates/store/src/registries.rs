//! Registry logins as the database holds them (Drone 0.8's and Woodpecker's registry
//! entries): a host, a user name and a sealed password, of a repository, an owner or the
//! whole server, with whether pull requests from forks may use it. The server seals and
//! opens the password; the store never sees it.

use crate::{Result, Store, StoreError, db};

/// Whose login it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryScope {
    Repo(i64),
    /// An owner (organisation or user): every repository of theirs.
    Owner(String),
    /// Every repository on the server.
    Server,
}

impl RegistryScope {
    /// What the sealed password is bound to, so it cannot be moved to another scope or host.
    pub fn associated_data(&self, host: &str) -> String {
        match self {
            RegistryScope::Repo(id) => format!("repo:{id}/registry:{host}"),
            RegistryScope::Owner(owner) => format!("owner:{owner}/registry:{host}"),
            RegistryScope::Server => format!("server/registry:{host}"),
        }
    }

    fn columns(&self) -> (Option<i64>, Option<&str>) {
        match self {
            RegistryScope::Repo(id) => (Some(*id), None),
            RegistryScope::Owner(owner) => (None, Some(owner.as_str())),
            RegistryScope::Server => (None, None),
        }
    }
}

/// A login without its password: all the API ever shows.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RegistryInfo {
    pub host: String,
    pub username: String,
    pub allow_pull_requests: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A login with its sealed password, for the server to open.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SealedRegistry {
    pub repo_id: Option<i64>,
    pub owner: Option<String>,
    pub host: String,
    pub username: String,
    pub sealed: Vec<u8>,
    pub allow_pull_requests: bool,
}

impl SealedRegistry {
    pub fn scope(&self) -> RegistryScope {
        match (self.repo_id, &self.owner) {
            (Some(id), _) => RegistryScope::Repo(id),
            (None, Some(owner)) => RegistryScope::Owner(owner.clone()),
            (None, None) => RegistryScope::Server,
        }
    }
}

/// Rows of `scope`: `repo_id` and `owner` as the scope has them (both NULL: the server's).
const IN_SCOPE: &str = "((repo_id = $1) OR (owner = $2) \
     OR ($1 IS NULL AND $2 IS NULL AND repo_id IS NULL AND owner IS NULL))";

impl Store {
    /// Creates or replaces the login of `scope` for `host`.
    pub async fn put_registry(
        &self,
        scope: &RegistryScope,
        host: &str,
        username: &str,
        sealed: &[u8],
        allow_pull_requests: bool,
    ) -> Result<()> {
        let (repo_id, owner) = scope.columns();
        let now = self.clock.now_ms();
        let mut tx = self.begin().await?;
        db::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM registries WHERE host = $3 AND {IN_SCOPE}"
        )))
        .bind(repo_id)
        .bind(owner)
        .bind(host)
        .execute(&mut tx)
        .await?;
        db::query(
            "INSERT INTO registries (repo_id, owner, host, username, sealed, \
             allow_pull_requests, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(repo_id)
        .bind(owner)
        .bind(host)
        .bind(username)
        .bind(sealed)
        .bind(allow_pull_requests)
        .bind(now)
        .execute(&mut tx)
        .await?;
        tx.commit().await
    }

    /// The logins of `scope`, by host, without their passwords.
    pub async fn registries(&self, scope: &RegistryScope) -> Result<Vec<RegistryInfo>> {
        let (repo_id, owner) = scope.columns();
        db::query_as::<RegistryInfo>(sqlx::AssertSqlSafe(format!(
            "SELECT host, username, allow_pull_requests, created_at, updated_at FROM registries \
             WHERE {IN_SCOPE} ORDER BY host"
        )))
        .bind(repo_id)
        .bind(owner)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn delete_registry(&self, scope: &RegistryScope, host: &str) -> Result<()> {
        let (repo_id, owner) = scope.columns();
        let removed = db::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM registries WHERE host = $3 AND {IN_SCOPE}"
        )))
        .bind(repo_id)
        .bind(owner)
        .bind(host)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if removed == 0 {
            return Err(StoreError::NotFound(format!("registry login for {host}")));
        }
        Ok(())
    }

    /// The logins a build of the repository may use, the most particular first: the
    /// repository's, then its owner's, then the server's.
    pub async fn sealed_registries(
        &self,
        repo_id: i64,
        owner: &str,
    ) -> Result<Vec<SealedRegistry>> {
        db::query_as::<SealedRegistry>(
            "SELECT repo_id, owner, host, username, sealed, allow_pull_requests FROM registries \
             WHERE repo_id = $1 OR owner = $2 OR (repo_id IS NULL AND owner IS NULL) \
             ORDER BY repo_id IS NULL, owner IS NULL, host",
        )
        .bind(repo_id)
        .bind(owner)
        .fetch_all(&self.pool)
        .await
    }
}
