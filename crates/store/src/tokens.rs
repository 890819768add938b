//! API tokens, stored as SHA-256 hashes only (the caller hashes; the store never sees a
//! token): a leaked database gives no usable token.

use serde::Serialize;

use crate::{Result, Store, now_ms, with_pool};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Token {
    pub id: i64,
    pub name: String,
    pub admin: bool,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

impl Store {
    pub async fn token_count(&self) -> Result<i64> {
        Ok(
            with_pool!(self, pool => sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens")
            .fetch_one(pool)
            .await)?,
        )
    }

    pub async fn create_token(&self, name: &str, hash: &str, admin: bool) -> Result<Token> {
        Ok(with_pool!(self, pool => sqlx::query_as::<_, Token>(
            "INSERT INTO api_tokens (name, hash, admin, created_at) VALUES ($1, $2, $3, $4) \
             RETURNING id, name, admin, created_at, last_used_at",
        )
        .bind(name)
        .bind(hash)
        .bind(admin)
        .bind(now_ms())
        .fetch_one(pool)
        .await)?)
    }

    /// The token with this hash, if any.
    pub async fn token_by_hash(&self, hash: &str) -> Result<Option<Token>> {
        Ok(with_pool!(self, pool => sqlx::query_as::<_, Token>(
            "SELECT id, name, admin, created_at, last_used_at FROM api_tokens WHERE hash = $1",
        )
        .bind(hash)
        .fetch_optional(pool)
        .await)?)
    }

    /// Every token (never a hash), oldest first.
    pub async fn tokens(&self) -> Result<Vec<Token>> {
        Ok(with_pool!(self, pool => sqlx::query_as::<_, Token>(
            "SELECT id, name, admin, created_at, last_used_at FROM api_tokens ORDER BY id",
        )
        .fetch_all(pool)
        .await)?)
    }

    /// Revokes a token; it stops working at once.
    pub async fn revoke_token(&self, id: i64) -> Result<()> {
        let done = with_pool!(self, pool => sqlx::query("DELETE FROM api_tokens WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        if done == 0 {
            return Err(crate::StoreError::NotFound(format!("token #{id}")));
        }
        Ok(())
    }
}
