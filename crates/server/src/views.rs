//! Store rows made into the API's answers (`gantry_api`): the one place that decides what of
//! a row a caller sees. A row's credentials (webhook secret, tokens, deploy key, a chat
//! webhook's path) have no field to go to.

use gantry_store as store;

use crate::AppState;
use crate::error::OpResult;

pub fn repo(state: &AppState, repo: store::Repo) -> gantry_api::Repo {
    gantry_api::Repo {
        id: repo.id,
        full_name: repo.full_name(),
        has_webhook_secret: !repo.webhook_secret.is_empty(),
        has_github_token: !repo.github_token.is_empty(),
        has_ssh_key: !repo.ssh_key.is_empty(),
        signed_files: !repo.signing_key.is_empty(),
        webhook_url: format!("{}/hook/github", state.config.server_url),
        owner: repo.owner,
        name: repo.name,
        clone_url: repo.clone_url,
        link: repo.link,
        config_path: repo.config_path,
        default_branch: repo.default_branch,
        trusted: repo.trusted,
        visibility: repo.visibility.as_str().to_owned(),
        timeout_secs: repo.timeout_secs,
        active: repo.active,
        created_at: repo.created_at,
        updated_at: repo.updated_at,
        fork_policy: repo.fork_policy.as_str().to_owned(),
    }
}

pub fn build(build: store::Build) -> gantry_api::Build {
    gantry_api::Build {
        id: build.id,
        repo_id: build.repo_id,
        number: build.number,
        parent: build.parent,
        event: build.event.as_str().to_owned(),
        action: build.action,
        reference: build.reference,
        branch: build.branch,
        tag: build.tag,
        commit: build.commit,
        message: build.message,
        author: build.author,
        sender: build.sender,
        pull_request: build.pull_request,
        source_branch: build.source_branch,
        target_branch: build.target_branch,
        deploy_to: build.deploy_to,
        params: build.params,
        status: build.status,
        error: build.error,
        cancel_requested: build.cancel_requested,
        created_at: build.created_at,
        started_at: build.started_at,
        finished_at: build.finished_at,
        fork: build.fork,
        logs_removed_at: build.logs_removed_at,
    }
}

/// The retention settings and what the last run removed.
pub fn retention(
    retention: crate::Retention,
    last: Option<(i64, gantry_store::RetentionReport)>,
) -> gantry_api::Retention {
    gantry_api::Retention {
        build_days: retention.build_days,
        builds_per_branch: retention.builds_per_branch,
        log_days: retention.log_days,
        delivery_days: retention.delivery_days,
        message_days: retention.message_days,
        every_secs: retention.every.as_secs(),
        cache_days: retention.cache_days,
        cache_max_mib: retention.cache_max_mib,
        last_run: last.map(|(at, r)| gantry_api::RetentionRun {
            at,
            builds: r.builds,
            build_logs: r.build_logs,
            log_lines: r.log_lines,
            deliveries: r.deliveries,
            messages: r.messages,
            bytes_freed: r.bytes_freed,
            batches: r.batches,
        }),
    }
}

/// A schedule with the build its last run made.
pub fn schedule(listed: crate::ops::schedules::Listed) -> gantry_api::Schedule {
    let schedule = listed.schedule;
    gantry_api::Schedule {
        name: schedule.name,
        expression: schedule.expression,
        timezone: schedule.timezone,
        branch: schedule.branch,
        params: schedule.params,
        next_run_at: schedule.next_run_at,
        last_run_at: schedule.last_run_at,
        last_build: listed.last_build.map(|b| gantry_api::ScheduledBuild {
            number: b.number,
            status: b.status,
        }),
        last_error: schedule.last_error,
        created_by: schedule.created_by,
        created_at: schedule.created_at,
    }
}

pub fn environment(environment: store::Environment) -> gantry_api::Environment {
    gantry_api::Environment {
        state: environment.state.as_str().to_owned(),
        deployments: environment
            .deployments
            .into_iter()
            .map(|d| gantry_api::Deployment {
                action: d.action.as_str().to_owned(),
                build: d.build_number,
                status: d.status,
                commit: d.commit,
                branch: d.branch,
                author: d.author,
                url: d.url,
                created_at: d.created_at,
                finished_at: d.finished_at,
            })
            .collect(),
        name: environment.name,
        slug: environment.slug,
        url: environment.url,
        on_stop: environment.on_stop,
        auto_stop_at: environment.auto_stop_at,
        branch: environment.branch,
        pull_request: environment.pull_request,
        branch_gone: environment.branch_gone,
    }
}

/// A build with its stages, steps and notifications, read from the store.
pub async fn build_detail(
    state: &AppState,
    repo: &store::Repo,
    found: store::Build,
) -> OpResult<gantry_api::BuildDetail> {
    let mut stages = Vec::new();
    let rows = state.store.stages_with_steps(found.id).await?;
    let seen = if rows
        .iter()
        .any(|(s, _)| matches!(s.status, store::Status::Pending))
    {
        crate::waiting::runners_seen(state).await?
    } else {
        Vec::new()
    };
    let deployments = state.store.build_deployments(found.id).await?;
    for (row, steps) in rows {
        let waiting = crate::waiting::reason(state, &seen, repo, &row).await?;
        let deploy =
            deployments
                .iter()
                .find(|d| d.stage_id == row.id)
                .map(|d| gantry_api::StageDeploy {
                    environment: d.environment.clone(),
                    url: d.url.clone(),
                    action: d.action.as_str().to_owned(),
                });
        stages.push(gantry_api::Stage {
            waiting,
            deploy,
            ..stage(row, steps)
        });
    }
    let notifications = state
        .store
        .build_messages(found.id)
        .await?
        .into_iter()
        .map(notification)
        .collect();
    Ok(gantry_api::BuildDetail {
        link: format!(
            "{}/{}/{}/{}",
            state.config.server_url, repo.owner, repo.name, found.number
        ),
        repo: repo.full_name(),
        build: build(found),
        stages,
        notifications,
    })
}

pub fn stage(stage: store::Stage, steps: Vec<store::Step>) -> gantry_api::Stage {
    gantry_api::Stage {
        id: stage.id,
        build_id: stage.build_id,
        number: stage.number,
        name: stage.name,
        status: stage.status,
        error: stage.error,
        depends_on: stage.depends_on,
        labels: stage.labels,
        platform: stage.platform,
        backend: stage.backend,
        runner: stage.runner,
        created_at: stage.created_at,
        started_at: stage.started_at,
        finished_at: stage.finished_at,
        steps: steps.into_iter().map(step).collect(),
        waiting: None,
        deploy: None,
        approval: stage.approval.map(|approval| gantry_api::StageApproval {
            environment: approval.environment,
            users: approval.users,
            role: approval.role.map(|r| r.as_str().to_owned()),
            decided_by: stage.decided_by,
        }),
    }
}

pub fn protection(rule: store::ProtectedEnvironment) -> gantry_api::ProtectedEnvironment {
    gantry_api::ProtectedEnvironment {
        pattern: rule.pattern,
        approvers: rule.approvers,
        approver_role: rule.approver_role.map(|r| r.as_str().to_owned()),
        branches: rule.branches,
        created_at: rule.created_at,
        updated_at: rule.updated_at,
    }
}

pub fn step(step: store::Step) -> gantry_api::Step {
    gantry_api::Step {
        id: step.id,
        stage_id: step.stage_id,
        number: step.number,
        name: step.name,
        kind: step.kind.as_str().to_owned(),
        status: step.status,
        exit_code: step.exit_code,
        error: step.error,
        started_at: step.started_at,
        finished_at: step.finished_at,
    }
}

pub fn notification(message: store::OutboxMessage) -> gantry_api::Notification {
    gantry_api::Notification {
        id: message.id,
        build_id: message.build_id,
        kind: message.kind.as_str().to_owned(),
        state: message.state.as_str().to_owned(),
        attempts: message.attempts,
        next_attempt_at: message.next_attempt_at,
        last_error: message.last_error,
        created_at: message.created_at,
        sent_at: message.sent_at,
    }
}

pub fn token(token: store::Token) -> gantry_api::Token {
    gantry_api::Token {
        id: token.id,
        name: token.name,
        admin: token.admin,
        user_id: token.user_id,
        session: token.session,
        created_at: token.created_at,
        last_used_at: token.last_used_at,
    }
}

pub fn user(user: store::User) -> gantry_api::User {
    gantry_api::User {
        id: user.id,
        login: user.login,
        admin: user.admin,
        created_at: user.created_at,
        last_login_at: user.last_login_at,
    }
}

pub fn role(role: store::RepoRole) -> gantry_api::RepoRole {
    gantry_api::RepoRole {
        repo_id: role.repo_id,
        user_id: role.user_id,
        login: role.login,
        source: role.source.as_str().to_owned(),
        role: role.role.as_str().to_owned(),
        fetched_at: role.fetched_at,
    }
}

pub fn secret(secret: store::SecretInfo) -> gantry_api::Secret {
    gantry_api::Secret {
        name: secret.name,
        allow_pull_requests: secret.allow_pull_requests,
        environment: secret.environment,
        created_at: secret.created_at,
        updated_at: secret.updated_at,
    }
}

pub fn registry(registry: store::RegistryInfo) -> gantry_api::Registry {
    gantry_api::Registry {
        host: registry.host,
        username: registry.username,
        allow_pull_requests: registry.allow_pull_requests,
        created_at: registry.created_at,
        updated_at: registry.updated_at,
    }
}

pub fn runner(runner: store::Runner) -> gantry_api::Runner {
    gantry_api::Runner {
        name: runner.name,
        instance: gantry_proto::shown_instance(&runner.instance).to_owned(),
        labels: runner.labels,
        platform: runner.platform,
        capacity: runner.capacity,
        offer: runner.offer,
        last_seen_at: runner.last_seen_at,
    }
}

pub fn target(target: store::NotifyTarget) -> gantry_api::Target {
    gantry_api::Target {
        id: target.id,
        repo_id: target.repo_id,
        kind: target.kind.as_str().to_owned(),
        url: crate::notify::host_of(&target.url),
        rules: target
            .rules
            .iter()
            .map(|rule| rule.as_str().to_owned())
            .collect(),
        branches: target.branches,
        events: target.events,
        created_at: target.created_at,
    }
}
