//! Secrets as the database holds them: sealed bytes (the server seals and opens them; the
//! store never sees a value), per repository or per owner, with whether pull requests from
//! forks may have them. Also server settings, among them the key check.

use crate::{Result, Store, StoreError, db};

/// Whose secret it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretScope {
    Repo(i64),
    /// An owner (organisation or user): every repository of theirs.
    Owner(String),
}

impl SecretScope {
    /// What the sealed value is bound to, so it cannot be moved to another scope or name.
    pub fn associated_data(&self, name: &str) -> String {
        match self {
            SecretScope::Repo(id) => format!("repo:{id}/secret:{name}"),
            SecretScope::Owner(owner) => format!("owner:{owner}/secret:{name}"),
        }
    }

    fn columns(&self) -> (Option<i64>, Option<&str>) {
        match self {
            SecretScope::Repo(id) => (Some(*id), None),
            SecretScope::Owner(owner) => (None, Some(owner.as_str())),
        }
    }
}

/// A secret without its value: all the API ever shows.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SecretInfo {
    pub name: String,
    pub allow_pull_requests: bool,
    /// Given only to stages that deploy to an environment this glob matches.
    pub environment: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A sealed secret, for the server to open.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SealedSecret {
    pub repo_id: Option<i64>,
    pub owner: Option<String>,
    pub name: String,
    pub sealed: Vec<u8>,
    pub allow_pull_requests: bool,
    /// Given only to stages that deploy to an environment this glob matches.
    pub environment: Option<String>,
}

/// Who a secret is given to, beyond its scope's builds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecretGrant {
    /// Pull requests from forks too.
    pub allow_pull_requests: bool,
    /// Only stages deploying to an environment this glob matches (a protected
    /// environment's own secret).
    pub environment: Option<String>,
}

impl SealedSecret {
    pub fn scope(&self) -> SecretScope {
        match (self.repo_id, &self.owner) {
            (Some(id), _) => SecretScope::Repo(id),
            (None, owner) => SecretScope::Owner(owner.clone().unwrap_or_default()),
        }
    }
}

impl Store {
    /// Creates or replaces a secret.
    pub async fn put_secret(
        &self,
        scope: &SecretScope,
        name: &str,
        sealed: &[u8],
        grant: &SecretGrant,
    ) -> Result<()> {
        let (repo_id, owner) = scope.columns();
        let now = self.clock.now_ms();
        let mut tx = self.begin().await?;
        db::query("DELETE FROM secrets WHERE name = $1 AND ((repo_id = $2) OR (owner = $3))")
            .bind(name)
            .bind(repo_id)
            .bind(owner)
            .execute(&mut tx)
            .await?;
        db::query(
            "INSERT INTO secrets (repo_id, owner, name, sealed, allow_pull_requests, \
             environment, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(repo_id)
        .bind(owner)
        .bind(name)
        .bind(sealed)
        .bind(grant.allow_pull_requests)
        .bind(grant.environment.as_deref())
        .bind(now)
        .execute(&mut tx)
        .await?;
        tx.commit().await
    }

    pub async fn secrets(&self, scope: &SecretScope) -> Result<Vec<SecretInfo>> {
        let (repo_id, owner) = scope.columns();
        db::query_as::<SecretInfo>(
            "SELECT name, allow_pull_requests, environment, created_at, updated_at FROM secrets \
             WHERE (repo_id = $1) OR (owner = $2) ORDER BY name",
        )
        .bind(repo_id)
        .bind(owner)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn delete_secret(&self, scope: &SecretScope, name: &str) -> Result<()> {
        let (repo_id, owner) = scope.columns();
        let done =
            db::query("DELETE FROM secrets WHERE name = $1 AND ((repo_id = $2) OR (owner = $3))")
                .bind(name)
                .bind(repo_id)
                .bind(owner)
                .execute(&self.pool)
                .await
                .map(|r| r.rows_affected())?;
        if done == 0 {
            return Err(StoreError::NotFound(format!("secret `{name}`")));
        }
        Ok(())
    }

    /// The sealed secrets a build of the repository may use: the owner's, then the
    /// repository's (which win on a name both have).
    pub async fn sealed_secrets(&self, repo_id: i64, owner: &str) -> Result<Vec<SealedSecret>> {
        db::query_as::<SealedSecret>(
            "SELECT repo_id, owner, name, sealed, allow_pull_requests, environment FROM secrets \
             WHERE repo_id = $1 OR owner = $2 ORDER BY repo_id IS NOT NULL, name",
        )
        .bind(repo_id)
        .bind(owner)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn secret_count(&self) -> Result<i64> {
        db::query_scalar("SELECT COUNT(*) FROM secrets")
            .fetch_one(&self.pool)
            .await
    }

    pub async fn setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        db::query_scalar("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn put_setting(&self, name: &str, value: &[u8]) -> Result<()> {
        db::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = $2",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected())?;
        Ok(())
    }
}
