//! Protected environments and the approvals they ask for. A repository's rules name the
//! environments they protect by a glob; the server applies them when it makes a build (a
//! stage deploying from a branch the rule does not list is skipped, one that needs approval
//! is stored `blocked` with a snapshot of who may approve). A stage is approved or declined
//! once: the update only takes a stage that is still `blocked` and waits for an approval.

use gantry_pipeline::glob::{Mode, glob_match};
use serde::{Deserialize, Serialize};

use crate::db;
use crate::{Event, Result, Role, Status, Store, StoreError};

/// A repository's rule for the environments whose names match `pattern`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedEnvironment {
    pub id: i64,
    pub repo_id: i64,
    pub pattern: String,
    /// Logins who may approve.
    pub approvers: Vec<String>,
    /// Anyone with at least this role on the repository may approve.
    pub approver_role: Option<Role>,
    /// Branch globs (and `refs/tags/GLOB` for tags) that may deploy; empty: any.
    pub branches: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ProtectedEnvironment {
    pub fn protects(&self, environment: &str) -> bool {
        glob_match(&self.pattern, environment, Mode::Path)
    }

    /// Whether a build of `branch`, or of `tag`, may deploy: its branch name, or
    /// `refs/tags/TAG`, matches one of the rule's globs. A branch named like a ref
    /// (`refs/tags/v1` is a valid branch name) never passes a limit.
    pub fn allows_ref(&self, branch: &str, tag: Option<&str>) -> bool {
        if self.branches.is_empty() {
            return true;
        }
        let reference = match tag {
            Some(tag) => format!("refs/tags/{tag}"),
            None if branch.starts_with("refs/") => return false,
            None => branch.to_owned(),
        };
        self.branches
            .iter()
            .any(|glob| glob_match(glob, &reference, Mode::Path))
    }

    /// Who must approve a deployment to `environment`, when anyone must.
    pub fn approval(&self, environment: &str) -> Option<StageApproval> {
        (!self.approvers.is_empty() || self.approver_role.is_some()).then(|| StageApproval {
            environment: environment.to_owned(),
            users: self.approvers.clone(),
            role: self.approver_role,
        })
    }
}

/// A new or replaced rule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewProtection {
    pub pattern: String,
    pub approvers: Vec<String>,
    pub approver_role: Option<Role>,
    pub branches: Vec<String>,
}

/// Who may let a stage that deploys to a protected environment start, as its rule said when
/// the build was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageApproval {
    pub environment: String,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub role: Option<Role>,
}

impl StageApproval {
    /// Whether the user `login` (none for a service token, which no name stands for),
    /// with `role` on the repository, may approve or decline.
    pub fn allows(&self, login: Option<&str>, role: Role) -> bool {
        login.is_some_and(|login| {
            self.users
                .iter()
                .any(|user| user.eq_ignore_ascii_case(login))
        }) || self.role.is_some_and(|needed| role >= needed)
    }

    /// "alice, bob or a user with the admin role".
    pub fn approvers(&self) -> String {
        let mut who: Vec<String> = self.users.clone();
        if let Some(role) = self.role {
            who.push(format!("a user with the {role} role"));
        }
        match who.split_last() {
            None => "nobody".to_owned(),
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        }
    }
}

#[derive(Debug, sqlx::FromRow)]
struct ProtectionRow {
    id: i64,
    repo_id: i64,
    pattern: String,
    approvers: String,
    approver_role: Option<String>,
    branches: String,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<ProtectionRow> for ProtectedEnvironment {
    type Error = StoreError;
    fn try_from(row: ProtectionRow) -> Result<Self> {
        Ok(ProtectedEnvironment {
            id: row.id,
            repo_id: row.repo_id,
            pattern: row.pattern,
            approvers: serde_json::from_str(&row.approvers)
                .map_err(|e| StoreError::corrupt("protected environment approvers", e))?,
            approver_role: row
                .approver_role
                .map(|role| role.parse())
                .transpose()
                .map_err(|e| StoreError::corrupt("protected environment role", e))?,
            branches: serde_json::from_str(&row.branches)
                .map_err(|e| StoreError::corrupt("protected environment branches", e))?,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

impl Store {
    /// A repository's protection rules, by pattern.
    pub async fn protected_environments(&self, repo_id: i64) -> Result<Vec<ProtectedEnvironment>> {
        db::query_as::<ProtectionRow>(
            "SELECT id, repo_id, pattern, approvers, approver_role, branches, created_at, \
             updated_at FROM protected_environments WHERE repo_id = $1 ORDER BY pattern",
        )
        .bind(repo_id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(ProtectedEnvironment::try_from)
        .collect()
    }

    /// Adds the rule, or replaces the one with the same pattern.
    pub async fn put_protected_environment(&self, repo_id: i64, new: &NewProtection) -> Result<()> {
        let now = self.clock.now_ms();
        let json = |list: &Vec<String>| serde_json::to_string(list).expect("strings serialise");
        db::query(
            "INSERT INTO protected_environments (repo_id, pattern, approvers, approver_role, \
             branches, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) \
             ON CONFLICT (repo_id, pattern) DO UPDATE SET approvers = $3, approver_role = $4, \
             branches = $5, updated_at = $6",
        )
        .bind(repo_id)
        .bind(&new.pattern)
        .bind(json(&new.approvers))
        .bind(new.approver_role.map(Role::as_str))
        .bind(json(&new.branches))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_protected_environment(&self, repo_id: i64, pattern: &str) -> Result<()> {
        let done =
            db::query("DELETE FROM protected_environments WHERE repo_id = $1 AND pattern = $2")
                .bind(repo_id)
                .bind(pattern)
                .execute(&self.pool)
                .await?
                .rows_affected();
        if done == 0 {
            return Err(StoreError::NotFound(format!(
                "protected environment `{pattern}`"
            )));
        }
        Ok(())
    }

    /// Lets a stage waiting for approval start (or wait for its dependencies), recording
    /// who approved it. `false` when it was not waiting for one (approved or declined
    /// already, or skipped or killed meanwhile).
    pub async fn approve_stage(&self, stage_id: i64, who: &str) -> Result<bool> {
        let now = self.clock.now_ms();
        let mut tx = self.begin().await?;
        let build_id: Option<i64> = db::query_scalar(
            "UPDATE stages SET status = CASE WHEN depends_on = '[]' THEN 'pending' \
             ELSE 'waiting' END, decided_by = $2 \
             WHERE id = $1 AND status = 'blocked' AND approval IS NOT NULL RETURNING build_id",
        )
        .bind(stage_id)
        .bind(who)
        .fetch_optional(&mut tx)
        .await?;
        if let Some(build_id) = build_id {
            super::advance_build(&mut tx, build_id, now).await?;
        }
        tx.commit().await?;
        if let Some(build) = build_id {
            self.publish_all(vec![Event::BuildChanged { build }, Event::Queued])
                .await;
        }
        Ok(build_id.is_some())
    }

    /// Ends a stage waiting for approval as `declined`, recording who declined it; the
    /// stages after it are skipped and the build moves on. `false` when it was not waiting.
    pub async fn decline_stage(&self, stage_id: i64, who: &str) -> Result<bool> {
        let now = self.clock.now_ms();
        let mut tx = self.begin().await?;
        let reason = format!("declined by {who}");
        let build_id: Option<i64> = db::query_scalar(
            "UPDATE stages SET status = $2, error = $3, decided_by = $4, finished_at = $5 \
             WHERE id = $1 AND status = 'blocked' AND approval IS NOT NULL RETURNING build_id",
        )
        .bind(stage_id)
        .bind(Status::Declined.as_str())
        .bind(&reason)
        .bind(who)
        .bind(now)
        .fetch_optional(&mut tx)
        .await?;
        if let Some(build_id) = build_id {
            db::query(
                "UPDATE steps SET status = 'skipped' WHERE stage_id = $1 AND status = 'pending'",
            )
            .bind(stage_id)
            .execute(&mut tx)
            .await?;
            super::advance_build(&mut tx, build_id, now).await?;
        }
        tx.commit().await?;
        if let Some(build) = build_id {
            self.publish(Event::BuildChanged { build }).await;
        }
        Ok(build_id.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str, branches: &[&str]) -> ProtectedEnvironment {
        ProtectedEnvironment {
            id: 1,
            repo_id: 1,
            pattern: pattern.into(),
            approvers: vec!["alice".into()],
            approver_role: Some(Role::Admin),
            branches: branches.iter().map(|b| b.to_string()).collect(),
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn a_rule_protects_the_names_its_glob_matches_and_limits_branches() {
        let review = rule("review/*", &[]);
        assert!(review.protects("review/feature-x"));
        assert!(!review.protects("review/a/b"), "`*` does not cross `/`");
        assert!(!review.protects("production"));
        assert!(review.allows_ref("anything", None));
        let production = rule("production", &["main", "release/*", "refs/tags/v*"]);
        assert!(production.allows_ref("release/1.2", None));
        assert!(!production.allows_ref("feature/x", None));
        assert!(production.allows_ref("", Some("v1.0")));
        assert!(!production.allows_ref("", Some("main")), "a tag named main");
        assert!(
            !production.allows_ref("refs/tags/v1", None),
            "a branch named like a tag"
        );
    }

    #[test]
    fn an_approval_names_who_may_give_it() {
        let approval = rule("production", &[])
            .approval("production")
            .expect("alice and admins approve");
        assert!(
            approval.allows(Some("Alice"), Role::Read),
            "logins ignore case"
        );
        assert!(approval.allows(Some("carol"), Role::Admin));
        assert!(approval.allows(None, Role::Admin), "an admin service token");
        assert!(!approval.allows(Some("bob"), Role::Write));
        assert!(
            !approval.allows(None, Role::Write),
            "a service token named alice is not alice"
        );
        assert_eq!(approval.approvers(), "alice or a user with the admin role");
        let mut open = rule("staging", &[]);
        open.approvers.clear();
        open.approver_role = None;
        assert_eq!(open.approval("staging"), None, "nobody to ask: no approval");
    }
}
