//! API tokens, stored as SHA-256 hashes only (the caller hashes; the store never sees a
//! token): a leaked database gives no usable token. A token acts for a user (with the
//! user's roles), or is a service token whose only power is its `admin` flag.

use crate::{Result, Store, User, db};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Token {
    pub id: i64,
    pub name: String,
    pub admin: bool,
    /// The user it acts for; `None` for a service token.
    pub user_id: Option<i64>,
    /// A browser session from a sign-in, not an API token.
    pub session: bool,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

const COLUMNS: &str = "id, name, admin, user_id, session, created_at, last_used_at";

/// A token to store; `hash` is its SHA-256, never the token.
#[derive(Debug, Clone, Copy)]
pub struct NewToken<'a> {
    pub name: &'a str,
    pub hash: &'a str,
    pub admin: bool,
    pub user_id: Option<i64>,
    pub session: bool,
}

/// A token with its user, as one row.
#[derive(sqlx::FromRow)]
struct TokenRow {
    #[sqlx(flatten)]
    token: Token,
    login: Option<String>,
    user_admin: Option<bool>,
    user_created_at: Option<i64>,
    user_last_login_at: Option<i64>,
    user_github_id: Option<i64>,
}

impl Store {
    pub async fn token_count(&self) -> Result<i64> {
        db::query_scalar("SELECT COUNT(*) FROM api_tokens")
            .fetch_one(&self.pool)
            .await
    }

    pub async fn create_token(&self, new: NewToken<'_>) -> Result<Token> {
        let sql = sqlx::AssertSqlSafe(format!(
            "INSERT INTO api_tokens (name, hash, admin, user_id, session, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
        ));
        db::query_as::<Token>(sql)
            .bind(new.name)
            .bind(new.hash)
            .bind(new.admin)
            .bind(new.user_id)
            .bind(new.session)
            .bind(self.clock.now_ms())
            .fetch_one(&self.pool)
            .await
    }

    /// The token with this hash, and the user it acts for.
    pub async fn token_by_hash(&self, hash: &str) -> Result<Option<(Token, Option<User>)>> {
        let row = db::query_as::<TokenRow>(
            "SELECT t.id, t.name, t.admin, t.user_id, t.session, t.created_at, t.last_used_at, \
             u.login, u.admin AS user_admin, u.created_at AS user_created_at, \
             u.last_login_at AS user_last_login_at, u.github_id AS user_github_id \
             FROM api_tokens t LEFT JOIN users u ON u.id = t.user_id WHERE t.hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| {
            let user = match (row.token.user_id, row.login) {
                (Some(id), Some(login)) => Some(User {
                    id,
                    login,
                    admin: row.user_admin.unwrap_or(false),
                    created_at: row.user_created_at.unwrap_or(0),
                    last_login_at: row.user_last_login_at,
                    github_id: row.user_github_id,
                }),
                _ => None,
            };
            (row.token, user)
        }))
    }

    /// Every token (never a hash), oldest first.
    pub async fn tokens(&self) -> Result<Vec<Token>> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM api_tokens ORDER BY id"));
        db::query_as::<Token>(sql).fetch_all(&self.pool).await
    }

    /// A user's tokens and sessions, oldest first.
    pub async fn tokens_of(&self, user_id: i64) -> Result<Vec<Token>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM api_tokens WHERE user_id = $1 ORDER BY id"
        ));
        db::query_as::<Token>(sql)
            .bind(user_id)
            .fetch_all(&self.pool)
            .await
    }

    pub async fn token(&self, id: i64) -> Result<Token> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM api_tokens WHERE id = $1"));
        db::query_as::<Token>(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| crate::StoreError::NotFound(format!("token #{id}")))
    }

    /// Revokes a token; it stops working at once.
    pub async fn revoke_token(&self, id: i64) -> Result<()> {
        let done = db::query("DELETE FROM api_tokens WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())?;
        if done == 0 {
            return Err(crate::StoreError::NotFound(format!("token #{id}")));
        }
        Ok(())
    }
}
