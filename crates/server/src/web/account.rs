//! Signing in and out, the buttons that act on a build (restart, cancel, approve, decline, a
//! manual build), and the account page with its tokens.

use super::*;

// ----- sign-in and actions -------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(super) struct LoginQuery {
    #[serde(default)]
    next: String,
}

#[derive(Template)]
#[template(path = "login.html")]
pub(super) struct LoginTemplate {
    page: PageInfo,
    message: String,
    next: String,
    /// Sign-in with GitHub is configured.
    github: bool,
    /// Also in the `gantry_login` cookie: a form posted from another site has neither.
    csrf: String,
}

/// The cookie that pairs a sign-in form with the browser it was shown to.
const LOGIN_COOKIE: &str = "gantry_login";

/// The sign-in form, with a fresh token in its form and in a cookie (login CSRF: another site
/// cannot sign a visitor in with the attacker's token).
fn login_form(
    state: &AppState,
    session: &Session,
    message: String,
    next: String,
    status: Option<StatusCode>,
) -> Page {
    let csrf = crate::auth::random_secret();
    let mut page = Page::render(LoginTemplate {
        page: page_info(session),
        message,
        next,
        github: state.config.oauth.is_some(),
        csrf: csrf.clone(),
    })
    .with_status(status);
    let secure = if state.config.server_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    if let Ok(cookie) = header::HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}={csrf}; Path=/login; HttpOnly; SameSite=Strict; Max-Age=3600{secure}"
    )) {
        page.0.headers_mut().append(header::SET_COOKIE, cookie);
    }
    page
}

pub(super) async fn login_page(
    State(state): State<Arc<AppState>>,
    session: Session,
    Query(query): Query<LoginQuery>,
) -> Page {
    login_form(&state, &session, String::new(), query.next, None)
}

#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    token: String,
    #[serde(default)]
    next: String,
    #[serde(default)]
    csrf: String,
}

/// Only paths of this server: never an open redirect. The path is resolved as a browser
/// resolves it (tabs and newlines dropped, `\` read as `/`, dots folded) before it is
/// judged, and what is kept is that resolved path.
pub(super) fn safe_next(next: &str) -> String {
    let Ok(here) = reqwest::Url::parse("http://gantry.invalid/") else {
        return "/".to_owned();
    };
    match here.join(next) {
        Ok(url)
            if url.origin() == here.origin()
                && url.username().is_empty()
                && url.password().is_none() =>
        {
            let path = &url[url::Position::BeforePath..];
            // `//host` would leave as a scheme-relative URL.
            if path.starts_with("//") {
                "/".to_owned()
            } else {
                path.to_owned()
            }
        }
        _ => "/".to_owned(),
    }
}

pub(super) async fn login(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, Page> {
    let paired = crate::auth::cookie(&headers, LOGIN_COOKIE).is_some_and(|cookie| {
        !form.csrf.is_empty() && bool::from(cookie.as_bytes().ct_eq(form.csrf.as_bytes()))
    });
    if !paired {
        return Err(login_form(
            &state,
            &Session::default(),
            "This sign-in form expired or was sent from another site: sign in again here."
                .to_owned(),
            form.next,
            Some(StatusCode::FORBIDDEN),
        ));
    }
    let token = form.token.trim();
    let valid = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_graphic())
        && state
            .store
            .token_by_hash(&hash_token(token))
            .await?
            .is_some();
    if !valid {
        return Err(login_form(
            &state,
            &Session::default(),
            "That token is not valid.".to_owned(),
            form.next,
            Some(StatusCode::UNAUTHORIZED),
        ));
    }
    let mut response = Redirect::to(&safe_next(&form.next)).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&state, token, SESSION_LIFETIME.as_secs()),
    );
    Ok(response)
}

pub(super) async fn logout(
    State(state): State<Arc<AppState>>,
    session: Session,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Page> {
    session.check(&form.csrf)?;
    // A GitHub session ends for good; an API token used to sign in stays valid.
    if let Some(identity) = &session.identity
        && identity.token.session
    {
        state.store.revoke_token(identity.token.id).await?;
    }
    let mut response = Redirect::to("/").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&state, "", 0));
    Ok(response)
}

pub(super) async fn restart(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name, number)): Path<(String, String, i64)>,
    Form(form): Form<CsrfForm>,
) -> Result<Redirect, Page> {
    let who = session.actor(&form.csrf)?;
    let (_, restarted) = ops::builds::restart(&state, who, &owner, &name, number).await?;
    Ok(Redirect::to(&format!(
        "/{owner}/{name}/{}",
        restarted.number
    )))
}

#[derive(Debug, Deserialize)]
pub(super) struct PromoteForm {
    #[serde(default)]
    csrf: String,
    target: String,
}

/// The Promote button: deploys the build to the target typed beside it.
pub(super) async fn promote(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name, number)): Path<(String, String, i64)>,
    Form(form): Form<PromoteForm>,
) -> Result<Redirect, Page> {
    let who = session.actor(&form.csrf)?;
    let request = ops::builds::Promotion {
        target: form.target,
        params: Default::default(),
    };
    let (_, promoted) = ops::builds::promote(&state, who, &owner, &name, number, request).await?;
    Ok(Redirect::to(&format!(
        "/{owner}/{name}/{}",
        promoted.number
    )))
}

/// The Approve and Decline buttons of a stage waiting to deploy to a protected environment.
pub(super) async fn decide(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name, number, stage, decision)): Path<(String, String, i64, i64, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Redirect, Page> {
    let Some(decision) = ops::environments::Decision::parse(&decision) else {
        return Err(not_found().await);
    };
    let who = session.actor(&form.csrf)?;
    ops::environments::decide(
        &state,
        Some(who),
        (&owner, &name),
        (number, stage),
        decision,
    )
    .await?;
    Ok(Redirect::to(&format!("/{owner}/{name}/{number}")))
}

/// The Cancel, Approve and Decline buttons.
pub(super) async fn act(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name, number, action)): Path<(String, String, i64, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Redirect, Page> {
    let Some(action) = crate::BuildAction::parse(&action) else {
        return Err(not_found().await);
    };
    let who = session.actor(&form.csrf)?;
    ops::builds::act(&state, who, &owner, &name, number, action).await?;
    Ok(Redirect::to(&format!("/{owner}/{name}/{number}")))
}

#[derive(Debug, Deserialize)]
pub(super) struct ManualForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    branch: String,
    /// KEY=VALUE lines.
    #[serde(default)]
    params: String,
    /// The build whose page holds the form: a refusal is shown there.
    from: Option<i64>,
}

pub(super) async fn manual_build(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name)): Path<(String, String)>,
    Form(form): Form<ManualForm>,
) -> Result<Response, Page> {
    let who = session.actor(&form.csrf)?;
    let started = async {
        let mut params = BTreeMap::new();
        for line in form.params.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let Some((key, value)) = line.split_once('=') else {
                return Err(OpError::invalid_field(
                    "params",
                    format!("`{line}` is not KEY=VALUE."),
                ));
            };
            params.insert(key.trim().to_owned(), value.to_owned());
        }
        let request = ops::builds::ManualBuild {
            branch: Some(form.branch.clone()),
            params,
            ..ops::builds::ManualBuild::default()
        };
        ops::builds::create(&state, who, &owner, &name, request).await
    }
    .await;
    match (started, form.from) {
        (Ok((_, build)), _) => {
            Ok(Redirect::to(&format!("/{owner}/{name}/{}", build.number)).into_response())
        }
        // The build page again, with the reason beside the form.
        (Err(e), Some(from)) if shown_beside_the_form(&e) => {
            let page = build_view(&state, &session, (&owner, &name, from), Some(e)).await?;
            Ok(page.into_response())
        }
        (Err(e), _) => Err(Page::from(e)),
    }
}

// ----- account -------------------------------------------------------------------------

pub(super) struct TokenRow {
    id: i64,
    name: String,
    kind: &'static str,
    created: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "account.html")]
pub(super) struct AccountTemplate {
    page: PageInfo,
    login: Option<String>,
    admin: bool,
    tokens: Vec<TokenRow>,
    /// A token just created: shown this once.
    created: Option<String>,
    /// Why the token form was just refused; empty when it was not.
    refused: String,
}

/// The signed-in identity, or a redirect to the sign-in page that comes back here.
pub(super) fn signed_in(session: &Session) -> Result<&Identity, Page> {
    session.identity.as_ref().ok_or_else(|| {
        Page(Box::new(
            Redirect::to("/login?next=/account").into_response(),
        ))
    })
}

pub(super) async fn account(
    state: &AppState,
    session: &Session,
    created: Option<String>,
    refused: Option<OpError>,
) -> Result<Page, Page> {
    let who = signed_in(session)?;
    let tokens = match &who.user {
        Some(user) => state.store.tokens_of(user.id).await?,
        None => vec![who.token.clone()],
    };
    let status = refused.as_ref().map(OpError::status);
    let page = Page::render(AccountTemplate {
        page: page_info(session),
        login: who.user.as_ref().map(|u| u.login.clone()),
        admin: who.is_admin(),
        tokens: tokens
            .into_iter()
            .map(|t| TokenRow {
                current: t.id == who.token.id,
                kind: if t.session {
                    "browser session"
                } else if t.admin {
                    "admin token"
                } else {
                    "API token"
                },
                id: t.id,
                name: t.name,
                created: age(t.created_at),
            })
            .collect(),
        created,
        refused: refused.map(|e| e.public_message()).unwrap_or_default(),
    });
    Ok(page.with_status(status))
}

pub(super) async fn account_page(
    State(state): State<Arc<AppState>>,
    session: Session,
) -> Result<Page, Page> {
    account(&state, &session, None, None).await
}

#[derive(Debug, Deserialize)]
pub(super) struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

/// Creates an API token for the signed-in user and shows it once.
pub(super) async fn create_token(
    State(state): State<Arc<AppState>>,
    session: Session,
    Form(form): Form<TokenForm>,
) -> Result<Page, Page> {
    let who = session.actor(&form.csrf)?;
    let new = ops::tokens::NewToken {
        name: form.name,
        ..ops::tokens::NewToken::default()
    };
    match ops::tokens::create(&state, who, new).await {
        Ok(created) => account(&state, &session, Some(created.token), None).await,
        // The page again, with the reason beside the form.
        Err(e) if shown_beside_the_form(&e) => account(&state, &session, None, Some(e)).await,
        Err(e) => Err(Page::from(e)),
    }
}

pub(super) async fn revoke_token(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Result<Redirect, Page> {
    let who = session.actor(&form.csrf)?;
    let token = ops::tokens::revoke(&state, who, id).await?;
    Ok(Redirect::to(if token.id == who.token.id {
        "/"
    } else {
        "/account"
    }))
}
