//! API tokens: made (shown once; only the hash is kept), listed, revoked. A token acts for a
//! user, or is a service token with every right that only a server admin makes.

use gantry_store::{Token, User};

use crate::AppState;
use crate::access::Identity;
use crate::error::{OpError, OpResult};

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Who or what uses it.
    pub name: String,
    /// The user it acts for (a server admin may name another); the caller's by default.
    pub user: Option<String>,
    /// A service token acting for no user (server admins only).
    #[serde(default)]
    pub admin: bool,
}

/// What `create` made: the token itself (shown this once), its row and its user.
#[derive(Debug)]
pub struct Created {
    pub token: String,
    pub stored: Token,
    pub user: Option<User>,
}

/// A server admin sees every token; anyone else their own.
pub async fn list(state: &AppState, who: &Identity) -> OpResult<Vec<Token>> {
    Ok(match &who.user {
        _ if who.is_admin() => state.store.tokens().await?,
        Some(user) => state.store.tokens_of(user.id).await?,
        None => vec![who.token.clone()],
    })
}

pub async fn create(state: &AppState, who: &Identity, new: NewToken) -> OpResult<Created> {
    let name = new.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(OpError::invalid_field(
            "name",
            "name: give the token a name of 1 to 100 characters (who or what uses it)",
        ));
    }
    let user = match (&new.user, new.admin) {
        (Some(_), true) => {
            return Err(OpError::invalid_field(
                "admin",
                "give `user` or `admin: true`, not both: an admin token acts for no user (make the user an admin instead)",
            ));
        }
        (None, true) => {
            if !who.is_admin() {
                return Err(OpError::forbidden(
                    "only a server admin can create an admin token",
                ));
            }
            None
        }
        (Some(login), false) => {
            let own = who
                .user
                .as_ref()
                .is_some_and(|u| u.login.eq_ignore_ascii_case(login));
            if !own && !who.is_admin() {
                return Err(OpError::forbidden(
                    "only a server admin can create a token for another user",
                ));
            }
            Some(super::users::find(state, login).await?)
        }
        (None, false) => match &who.user {
            Some(user) => Some(user.clone()),
            None => {
                return Err(OpError::invalid_field(
                    "user",
                    "a token acts for a user: give `user` (gantry token create NAME --user LOGIN), or `admin: true` for a service token",
                ));
            }
        },
    };
    let (token, stored) = crate::auth::issue_token(
        &state.store,
        name,
        new.admin,
        user.as_ref().map(|u| u.id),
        false,
    )
    .await?;
    Ok(Created {
        token,
        stored,
        user,
    })
}

/// Revokes a token: the caller's own, or any for a server admin. Returns it.
pub async fn revoke(state: &AppState, who: &Identity, id: i64) -> OpResult<Token> {
    let token = state.store.token(id).await?;
    if !who.is_admin() && !who.owns(&token) {
        return Err(OpError::forbidden(
            "you can revoke your own tokens; others need a server admin",
        ));
    }
    state.store.revoke_token(id).await?;
    Ok(token)
}
