//! One client for every call the server makes to GitHub's REST API (`--github-api`): each
//! request carries GitHub's media type, gantry's user agent and a time limit, and every
//! failure says what was asked and how GitHub answered, never the URL (it may hold a token).
//! Repository visibility, the signed-in user, a user's permission on a repository, a GitHub
//! App's installation tokens, and the address of a commit's statuses all go through here.

use reqwest::{Method, RequestBuilder};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// How long one call may take.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct GitHubClient {
    http: reqwest::Client,
    api: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitHubError {
    #[error("GitHub refused the request for {what}: HTTP {status}{hint}")]
    Refused {
        what: String,
        status: u16,
        hint: &'static str,
    },
    #[error("asking GitHub for {what} failed: {message}")]
    Request { what: String, message: String },
}

impl GitHubError {
    /// GitHub's HTTP status, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            GitHubError::Refused { status, .. } => Some(*status),
            GitHubError::Request { .. } => None,
        }
    }
}

impl GitHubClient {
    pub fn new(http: reqwest::Client, api: &str) -> Self {
        Self {
            http,
            api: api.trim_end_matches('/').to_owned(),
        }
    }

    /// A request to `path` (`/repos/...`), with `token` as its bearer when given.
    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let request = self
            .http
            .request(method, format!("{}{path}", self.api))
            .header("accept", "application/vnd.github+json")
            .header("user-agent", "gantry")
            .timeout(TIMEOUT);
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `request` and reads its JSON answer. `what` names what was asked (for the
    /// error); `hint` says how to fix a refusal.
    pub async fn json<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
        what: &str,
        hint: &'static str,
    ) -> Result<T, GitHubError> {
        let failed = |e: reqwest::Error| GitHubError::Request {
            what: what.to_owned(),
            message: e.without_url().to_string(),
        };
        let response = request.send().await.map_err(failed)?;
        let status = response.status();
        if !status.is_success() {
            return Err(GitHubError::Refused {
                what: what.to_owned(),
                status: status.as_u16(),
                hint,
            });
        }
        response.json().await.map_err(failed)
    }

    /// Sends `request` for its status alone.
    pub async fn status(&self, request: RequestBuilder, what: &str) -> Result<u16, GitHubError> {
        request
            .send()
            .await
            .map(|response| response.status().as_u16())
            .map_err(|e| GitHubError::Request {
                what: what.to_owned(),
                message: e.without_url().to_string(),
            })
    }

    /// Whether `owner/name` is private (`GET /repos/{owner}/{name}`), asked with `token`
    /// when there is one.
    pub async fn repository_private(
        &self,
        owner: &str,
        name: &str,
        token: Option<&str>,
    ) -> Result<bool, GitHubError> {
        #[derive(Deserialize)]
        struct Answer {
            private: bool,
        }
        let request = self.request(Method::GET, &format!("/repos/{owner}/{name}"), token);
        let answer: Answer = self
            .json(request, &format!("the repository {owner}/{name}"), "")
            .await?;
        Ok(answer.private)
    }

    /// The account a user's token belongs to: its login and GitHub's id for it (the
    /// account, as logins can be renamed and taken by someone else).
    pub async fn user(&self, token: &str) -> Result<(String, i64), GitHubError> {
        #[derive(Deserialize)]
        struct User {
            login: String,
            id: i64,
        }
        let user: User = self
            .json(
                self.request(Method::GET, "/user", Some(token)),
                "the user",
                "",
            )
            .await?;
        Ok((user.login, user.id))
    }

    /// Where a repository's deployments are created; their statuses go to
    /// `{this}/{id}/statuses`.
    pub fn deployments_url(&self, owner: &str, name: &str) -> String {
        format!("{}/repos/{owner}/{name}/deployments", self.api)
    }

    /// Where a commit's statuses are posted.
    pub fn status_url(&self, owner: &str, name: &str, commit: &str) -> String {
        format!("{}/repos/{owner}/{name}/statuses/{commit}", self.api)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_the_api_address_once() {
        let github = GitHubClient::new(reqwest::Client::new(), "https://ghe.example/api/v3/");
        assert_eq!(
            github.status_url("acme", "app", "abc"),
            "https://ghe.example/api/v3/repos/acme/app/statuses/abc"
        );
        let request = github
            .request(Method::GET, "/user", Some("t0ken"))
            .build()
            .expect("a request");
        assert_eq!(request.url().as_str(), "https://ghe.example/api/v3/user");
        assert_eq!(request.headers()["accept"], "application/vnd.github+json");
        assert_eq!(request.headers()["authorization"], "Bearer t0ken");
    }
}
