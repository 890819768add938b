//! The API's administration resources: chat targets, secrets, tokens, users and roles. Each
//! handler extracts its request, calls its operation and renders the answer.

use super::*;
use crate::views;

// ----- notification targets -------------------------------------------------------------

pub(super) async fn targets(
    state: &AppState,
    caller: &Caller,
    of: ops::notify::Of<'_>,
) -> OpResult<Json<Vec<gantry_api::Target>>> {
    let targets = ops::notify::list(state, caller.require_identity()?, of).await?;
    Ok(Json(targets.into_iter().map(views::target).collect()))
}

pub(super) async fn add_target_to(
    state: &AppState,
    caller: &Caller,
    of: ops::notify::Of<'_>,
    body: &[u8],
) -> OpResult<(StatusCode, Json<gantry_api::Target>)> {
    let who = caller.require_identity()?;
    let target = ops::notify::add(state, who, of, parse_body(body)?).await?;
    Ok((StatusCode::CREATED, Json(views::target(target))))
}

pub(super) async fn remove_target_of(
    state: &AppState,
    caller: &Caller,
    of: ops::notify::Of<'_>,
    id: i64,
) -> OpResult<StatusCode> {
    ops::notify::remove(state, caller.require_identity()?, of, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn test_target_of(
    state: &AppState,
    caller: &Caller,
    of: ops::notify::Of<'_>,
    id: i64,
) -> OpResult<(StatusCode, Json<gantry_api::Queued>)> {
    let queued = ops::notify::test(state, caller.require_identity()?, of, id).await?;
    Ok((StatusCode::ACCEPTED, Json(gantry_api::Queued { queued })))
}

pub(super) fn repo_targets<'a>(owner: &'a str, name: &'a str) -> ops::notify::Of<'a> {
    ops::notify::Of::Repo { owner, name }
}

pub(super) async fn list_targets(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
) -> OpResult<Json<Vec<gantry_api::Target>>> {
    targets(&state, &caller, repo_targets(&owner, &name)).await
}

pub(super) async fn add_target(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> OpResult<(StatusCode, Json<gantry_api::Target>)> {
    add_target_to(&state, &caller, repo_targets(&owner, &name), &body).await
}

pub(super) async fn remove_target(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name, id)): Path<(String, String, i64)>,
) -> OpResult<StatusCode> {
    remove_target_of(&state, &caller, repo_targets(&owner, &name), id).await
}

pub(super) async fn test_target(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name, id)): Path<(String, String, i64)>,
) -> OpResult<(StatusCode, Json<gantry_api::Queued>)> {
    test_target_of(&state, &caller, repo_targets(&owner, &name), id).await
}

pub(super) async fn list_default_targets(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> OpResult<Json<Vec<gantry_api::Target>>> {
    targets(&state, &caller, ops::notify::Of::Server).await
}

pub(super) async fn add_default_target(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: axum::body::Bytes,
) -> OpResult<(StatusCode, Json<gantry_api::Target>)> {
    add_target_to(&state, &caller, ops::notify::Of::Server, &body).await
}

pub(super) async fn remove_default_target(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> OpResult<StatusCode> {
    remove_target_of(&state, &caller, ops::notify::Of::Server, id).await
}

pub(super) async fn test_default_target(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> OpResult<(StatusCode, Json<gantry_api::Queued>)> {
    test_target_of(&state, &caller, ops::notify::Of::Server, id).await
}

// ----- secrets ----------------------------------------------------------------------------

pub(super) async fn list_repo_secrets(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
) -> OpResult<Json<Vec<gantry_api::Secret>>> {
    let who = caller.require_identity()?;
    let of = ops::secrets::Of::Repo {
        owner: &owner,
        name: &name,
    };
    let secrets = ops::secrets::list(&state, who, of).await?;
    Ok(Json(secrets.into_iter().map(views::secret).collect()))
}

pub(super) async fn add_repo_secret(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> OpResult<(StatusCode, Json<gantry_api::SecretSaved>)> {
    let of = ops::secrets::Of::Repo {
        owner: &owner,
        name: &name,
    };
    put_secret(&state, &caller, of, &body).await
}

pub(super) async fn put_secret(
    state: &AppState,
    caller: &Caller,
    of: ops::secrets::Of<'_>,
    body: &[u8],
) -> OpResult<(StatusCode, Json<gantry_api::SecretSaved>)> {
    let who = caller.require_identity()?;
    let new: ops::secrets::NewSecret = parse_body(body)?;
    let allow = new.allow_pull_requests;
    let name = ops::secrets::put(state, who, of, new).await?;
    Ok((
        StatusCode::CREATED,
        Json(gantry_api::SecretSaved {
            name,
            allow_pull_requests: allow,
        }),
    ))
}

pub(super) async fn remove_repo_secret(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name, secret)): Path<(String, String, String)>,
) -> OpResult<StatusCode> {
    let who = caller.require_identity()?;
    let of = ops::secrets::Of::Repo {
        owner: &owner,
        name: &name,
    };
    ops::secrets::remove(&state, who, of, &secret).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn list_owner_secrets(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(owner): Path<String>,
) -> OpResult<Json<Vec<gantry_api::Secret>>> {
    let who = caller.require_identity()?;
    let secrets = ops::secrets::list(&state, who, ops::secrets::Of::Owner(&owner)).await?;
    Ok(Json(secrets.into_iter().map(views::secret).collect()))
}

pub(super) async fn add_owner_secret(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(owner): Path<String>,
    body: axum::body::Bytes,
) -> OpResult<(StatusCode, Json<gantry_api::SecretSaved>)> {
    put_secret(&state, &caller, ops::secrets::Of::Owner(&owner), &body).await
}

pub(super) async fn remove_owner_secret(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, secret)): Path<(String, String)>,
) -> OpResult<StatusCode> {
    let who = caller.require_identity()?;
    ops::secrets::remove(&state, who, ops::secrets::Of::Owner(&owner), &secret).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- registry logins --------------------------------------------------------------------

async fn list_registries(
    state: &AppState,
    caller: &Caller,
    of: ops::registries::Of<'_>,
) -> OpResult<Json<Vec<gantry_api::Registry>>> {
    let who = caller.require_identity()?;
    let logins = ops::registries::list(state, who, of).await?;
    Ok(Json(logins.into_iter().map(views::registry).collect()))
}

async fn put_registry(
    state: &AppState,
    caller: &Caller,
    of: ops::registries::Of<'_>,
    body: &[u8],
) -> OpResult<(StatusCode, Json<gantry_api::Registry>)> {
    let who = caller.require_identity()?;
    let new: ops::registries::NewRegistry = parse_body(body)?;
    let host = ops::registries::put(state, who, of, new).await?;
    let saved = ops::registries::list(state, who, of)
        .await?
        .into_iter()
        .find(|r| r.host == host)
        .ok_or_else(|| crate::error::OpError::NotFound(format!("registry login for {host}")))?;
    Ok((StatusCode::CREATED, Json(views::registry(saved))))
}

async fn remove_registry(
    state: &AppState,
    caller: &Caller,
    of: ops::registries::Of<'_>,
    host: &str,
) -> OpResult<StatusCode> {
    let who = caller.require_identity()?;
    ops::registries::remove(state, who, of, host).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn list_repo_registries(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
) -> OpResult<Json<Vec<gantry_api::Registry>>> {
    let of = ops::registries::Of::Repo {
        owner: &owner,
        name: &name,
    };
    list_registries(&state, &caller, of).await
}

pub(super) async fn add_repo_registry(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> OpResult<(StatusCode, Json<gantry_api::Registry>)> {
    let of = ops::registries::Of::Repo {
        owner: &owner,
        name: &name,
    };
    put_registry(&state, &caller, of, &body).await
}

pub(super) async fn remove_repo_registry(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name, host)): Path<(String, String, String)>,
) -> OpResult<StatusCode> {
    let of = ops::registries::Of::Repo {
        owner: &owner,
        name: &name,
    };
    remove_registry(&state, &caller, of, &host).await
}

pub(super) async fn list_owner_registries(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(owner): Path<String>,
) -> OpResult<Json<Vec<gantry_api::Registry>>> {
    list_registries(&state, &caller, ops::registries::Of::Owner(&owner)).await
}

pub(super) async fn add_owner_registry(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(owner): Path<String>,
    body: axum::body::Bytes,
) -> OpResult<(StatusCode, Json<gantry_api::Registry>)> {
    put_registry(&state, &caller, ops::registries::Of::Owner(&owner), &body).await
}

pub(super) async fn remove_owner_registry(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, host)): Path<(String, String)>,
) -> OpResult<StatusCode> {
    remove_registry(&state, &caller, ops::registries::Of::Owner(&owner), &host).await
}

pub(super) async fn list_server_registries(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> OpResult<Json<Vec<gantry_api::Registry>>> {
    list_registries(&state, &caller, ops::registries::Of::Server).await
}

pub(super) async fn add_server_registry(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: axum::body::Bytes,
) -> OpResult<(StatusCode, Json<gantry_api::Registry>)> {
    put_registry(&state, &caller, ops::registries::Of::Server, &body).await
}

pub(super) async fn remove_server_registry(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(host): Path<String>,
) -> OpResult<StatusCode> {
    remove_registry(&state, &caller, ops::registries::Of::Server, &host).await
}

// ----- API tokens -------------------------------------------------------------------------

/// A server admin sees every token; anyone else their own.
pub(super) async fn list_tokens(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> OpResult<Json<Vec<gantry_api::Token>>> {
    let tokens = ops::tokens::list(&state, caller.require_identity()?).await?;
    Ok(Json(tokens.into_iter().map(views::token).collect()))
}

/// Creates a token and shows it this once; only its hash is kept.
pub(super) async fn create_token(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: axum::body::Bytes,
) -> OpResult<(StatusCode, Json<gantry_api::CreatedToken>)> {
    let who = caller.require_identity()?;
    let created = ops::tokens::create(&state, who, parse_body(&body)?).await?;
    Ok((
        StatusCode::CREATED,
        Json(gantry_api::CreatedToken {
            id: created.stored.id,
            name: created.stored.name,
            admin: created.stored.admin,
            user: created.user.map(|u| u.login),
            token: created.token,
        }),
    ))
}

pub(super) async fn revoke_token(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> OpResult<StatusCode> {
    ops::tokens::revoke(&state, caller.require_identity()?, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- users and roles --------------------------------------------------------------------

/// The caller: their login and whether they are a server admin.
pub(super) async fn who_am_i(caller: Caller) -> OpResult<Json<gantry_api::Whoami>> {
    let who = caller.require_identity()?;
    Ok(Json(gantry_api::Whoami {
        login: who.user.as_ref().map(|u| u.login.clone()),
        token: who.token.name.clone(),
        admin: who.is_admin(),
    }))
}

pub(super) async fn list_users(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> OpResult<Json<Vec<gantry_api::User>>> {
    let users = ops::users::list(&state, caller.require_identity()?).await?;
    Ok(Json(users.into_iter().map(views::user).collect()))
}

pub(super) async fn add_user(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: axum::body::Bytes,
) -> OpResult<(StatusCode, Json<gantry_api::User>)> {
    let who = caller.require_identity()?;
    let user = ops::users::add(&state, who, parse_body(&body)?).await?;
    Ok((StatusCode::CREATED, Json(views::user(user))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UserUpdate {
    admin: bool,
}

pub(super) async fn update_user(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(login): Path<String>,
    body: axum::body::Bytes,
) -> OpResult<Json<gantry_api::User>> {
    let who = caller.require_identity()?;
    let update: UserUpdate = parse_body(&body)?;
    let user = ops::users::set_admin(&state, who, &login, update.admin).await?;
    Ok(Json(views::user(user)))
}

pub(super) async fn remove_user(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(login): Path<String>,
) -> OpResult<StatusCode> {
    ops::users::remove(&state, caller.require_identity()?, &login).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every stored role on the repository: set by an admin, or GitHub's as last read.
pub(super) async fn list_roles(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
) -> OpResult<Json<Vec<gantry_api::RepoRole>>> {
    let who = caller.require_identity()?;
    let roles = ops::users::roles(&state, who, &owner, &name).await?;
    Ok(Json(roles.into_iter().map(views::role).collect()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RoleUpdate {
    role: String,
}

/// A server admin sets a user's role on a repository; it wins over GitHub's.
pub(super) async fn set_role(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name, login)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> OpResult<Json<gantry_api::RoleSet>> {
    let who = caller.require_identity()?;
    let update: RoleUpdate = parse_body(&body)?;
    let role = ops::users::role_named(&update.role)?;
    let (repo, user) = ops::users::set_role(&state, who, &owner, &name, &login, Some(role)).await?;
    Ok(Json(gantry_api::RoleSet {
        login: user.login,
        repo,
        role: role.as_str().to_owned(),
    }))
}

/// Removes the role an admin set; GitHub's permission applies again.
pub(super) async fn remove_role(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name, login)): Path<(String, String, String)>,
) -> OpResult<StatusCode> {
    let who = caller.require_identity()?;
    ops::users::set_role(&state, who, &owner, &name, &login, None).await?;
    Ok(StatusCode::NO_CONTENT)
}
