//! The API's OpenAPI 3 document, served at `/api/openapi.json`: every route of `api` with
//! its method, what it is for, its path parameters, and the schema of its answer, taken
//! from the `gantry_api` types themselves. A test checks that every route is in it.

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Ref, Type};
use utoipa::openapi::{
    ComponentsBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Required,
};

use super::*;

/// What a route answers with on success.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// One value of the named schema.
    One(&'static str),
    /// A list of them.
    Many(&'static str),
    /// `204 No Content`.
    Nothing,
    /// Plain text (a log, the health check).
    Text,
    /// Server-sent events.
    Events,
    /// A JSON object without a schema of its own (a page of log lines).
    Object,
}

/// Every route: method, path, summary, answer.
const ROUTES: &[(HttpMethod, &str, &str, Answer)] = {
    use Answer::*;
    use HttpMethod::{Delete, Get, Patch, Post, Put};
    &[
        (
            Get,
            "/healthz",
            "Whether the server and its database answer",
            Text,
        ),
        (
            Get,
            "/api/repos",
            "The repositories the caller may read",
            Many("Repo"),
        ),
        (Post, "/api/repos", "Registers a repository", One("Repo")),
        (
            Get,
            "/api/repos/{owner}/{name}",
            "A repository",
            One("Repo"),
        ),
        (
            Patch,
            "/api/repos/{owner}/{name}",
            "Changes a repository's settings or credentials",
            One("Repo"),
        ),
        (
            Delete,
            "/api/repos/{owner}/{name}",
            "Removes a repository with its builds",
            Nothing,
        ),
        (
            Get,
            "/api/repos/{owner}/{name}/builds",
            "A page of builds, newest first (branch, status, before, limit)",
            Many("Build"),
        ),
        (
            Get,
            "/api/repos/{owner}/{name}/branches",
            "Each branch's latest build (not pull requests or tags), newest first",
            Many("Build"),
        ),
        (
            Post,
            "/api/repos/{owner}/{name}/builds",
            "Starts a manual build (branch, commit, params, deploy_to)",
            One("BuildDetail"),
        ),
        (
            Get,
            "/api/repos/{owner}/{name}/builds/{number}",
            "A build with its stages, steps and notifications",
            One("BuildDetail"),
        ),
        (
            Post,
            "/api/repos/{owner}/{name}/builds/{number}/restart",
            "Builds the same commit and context again",
            One("BuildDetail"),
        ),
        (
            Post,
            "/api/repos/{owner}/{name}/builds/{number}/promote",
            "Deploys a finished build's commit to a target (target, params): event promote",
            One("BuildDetail"),
        ),
        (
            Post,
            "/api/repos/{owner}/{name}/sign",
            "Signs a pipeline file (data) as `drone sign` does; the first signature makes the repository require signed files",
            One("Signed"),
        ),
        (
            Delete,
            "/api/repos/{owner}/{name}/sign",
            "Stops requiring signed pipeline files (removes the signing key)",
            Nothing,
        ),
        (
            Get,
            "/api/repos/{owner}/{name}/environments",
            "The environments the repository's pipelines deploy to (`deploy:`), each with its state and deployments",
            Many("Environment"),
        ),
        (
            Post,
            "/api/repos/{owner}/{name}/environments/stop",
            "Stops an environment (name): the build of its `on_stop` pipeline, or 204 when it has none and is marked stopped",
            One("BuildDetail"),
        ),
        (
            Post,
            "/api/repos/{owner}/{name}/environments/redeploy",
            "Deploys an earlier successful deployment (name, build) to its environment again: a build of its commit running only what deploys there",
            One("BuildDetail"),
        ),
        (
            Get,
            "/api/repos/{owner}/{name}/environments/protected",
            "The repository's protected environments: who approves their deployments, which branches may deploy",
            Many("ProtectedEnvironment"),
        ),
        (
            Put,
            "/api/repos/{owner}/{name}/environments/protected",
            "Adds or replaces a protected environment rule (pattern, approvers, approver_role, branches); needs admin",
            One("ProtectedEnvironment"),
        ),
        (
            Post,
            "/api/repos/{owner}/{name}/environments/unprotect",
            "Removes the protected environment rule of a pattern (pattern); needs admin",
            Nothing,
        ),
        (
            Post,
            "/api/repos/{owner}/{name}/builds/{number}/stages/{stage}/{decision}",
            "Approves (`approve`) or declines (`decline`) a stage waiting to deploy to a protected environment; only its rule's approvers may",
            One("BuildDetail"),
        ),
        (
            Get,
            "/api/repos/{owner}/{name}/cron",
            "The repository's schedules, with their next run and last build",
            Many("Schedule"),
        ),
        (
            Post,
            "/api/repos/{owner}/{name}/cron",
            "Adds a schedule (name, expression, branch, timezone, params)",
            One("Schedule"),
        ),
        (
            Delete,
            "/api/repos/{owner}/{name}/cron/{cron}",
            "Removes a schedule",
            Nothing,
        ),
        (
            Post,
            "/api/repos/{owner}/{name}/cron/{cron}/run",
            "Runs a schedule now (event cron), leaving its next run as it is",
            One("BuildDetail"),
        ),
        (
            Post,
            "/api/repos/{owner}/{name}/builds/{number}/{action}",
            "cancel, approve or decline a build",
            One("BuildDetail"),
        ),
        (
            Get,
            "/api/repos/{owner}/{name}/builds/{number}/logs/{stage}/{step}",
            "A step's log as text",
            Text,
        ),
        (
            Get,
            "/api/repos/{owner}/{name}/builds/{number}/logs/{stage}/{step}/stream",
            "A step's log, live (server-sent events; Last-Event-ID resumes)",
            Events,
        ),
        (
            Get,
            "/api/repos/{owner}/{name}/builds/{number}/logs/{stage}/{step}/lines",
            "A page of a step's log lines (from, limit)",
            Object,
        ),
        (
            Get,
            "/api/repos/{owner}/{name}/builds/{number}/logs/{stage}/{step}/search",
            "One window of a search of a step's log (q, case, regex, from): matching line numbers",
            One("StepLogSearch"),
        ),
        (
            Get,
            "/api/repos/{owner}/{name}/logs/search",
            "Which recent builds' steps printed a matching line, newest first (q, case, regex, branch, since, last)",
            One("RepoLogSearch"),
        ),
        (
            Get,
            "/api/runners",
            "The runners as last seen",
            Many("Runner"),
        ),
        (
            Get,
            "/api/runners/tokens",
            "Runners' own tokens (names and owners; server admins)",
            Many("RunnerToken"),
        ),
        (
            Post,
            "/api/runners/tokens",
            "Makes a runner's own token, shown this once (name, owners; server admins)",
            One("CreatedRunnerToken"),
        ),
        (
            Delete,
            "/api/runners/tokens/{name}",
            "Revokes a runner's token (server admins)",
            Nothing,
        ),
        (
            Get,
            "/api/retention",
            "What the server keeps, and what its last retention run removed",
            One("Retention"),
        ),
        (
            Get,
            "/api/tokens",
            "The caller's tokens (a server admin: every one)",
            Many("Token"),
        ),
        (
            Post,
            "/api/tokens",
            "Makes a token, shown this once (name, user or admin)",
            One("CreatedToken"),
        ),
        (Delete, "/api/tokens/{id}", "Revokes a token", Nothing),
        (
            Get,
            "/api/repos/{owner}/{name}/notify",
            "A repository's chat targets",
            Many("Target"),
        ),
        (
            Post,
            "/api/repos/{owner}/{name}/notify",
            "Adds a chat target (kind, url, rules, branches, events)",
            One("Target"),
        ),
        (
            Delete,
            "/api/repos/{owner}/{name}/notify/{id}",
            "Removes a chat target",
            Nothing,
        ),
        (
            Post,
            "/api/repos/{owner}/{name}/notify/{id}/test",
            "Queues a test message",
            One("Queued"),
        ),
        (
            Get,
            "/api/notify",
            "The server-wide chat targets",
            Many("Target"),
        ),
        (
            Post,
            "/api/notify",
            "Adds a server-wide chat target",
            One("Target"),
        ),
        (
            Delete,
            "/api/notify/{id}",
            "Removes a server-wide chat target",
            Nothing,
        ),
        (
            Post,
            "/api/notify/{id}/test",
            "Queues a test message",
            One("Queued"),
        ),
        (
            Get,
            "/api/repos/{owner}/{name}/secrets",
            "A repository's secrets, by name",
            Many("Secret"),
        ),
        (
            Post,
            "/api/repos/{owner}/{name}/secrets",
            "Adds or replaces a secret (name, value, allow_pull_requests)",
            One("SecretSaved"),
        ),
        (
            Delete,
            "/api/repos/{owner}/{name}/secrets/{secret}",
            "Removes a secret",
            Nothing,
        ),
        (
            Get,
            "/api/orgs/{owner}/secrets",
            "An owner's secrets, by name",
            Many("Secret"),
        ),
        (
            Post,
            "/api/orgs/{owner}/secrets",
            "Adds or replaces an owner's secret",
            One("SecretSaved"),
        ),
        (
            Delete,
            "/api/orgs/{owner}/secrets/{secret}",
            "Removes an owner's secret",
            Nothing,
        ),
        (
            Get,
            "/api/repos/{owner}/{name}/registries",
            "A repository's registry logins, by host (never passwords)",
            Many("Registry"),
        ),
        (
            Post,
            "/api/repos/{owner}/{name}/registries",
            "Adds or replaces a registry login (host, username, password, allow_pull_requests)",
            One("Registry"),
        ),
        (
            Delete,
            "/api/repos/{owner}/{name}/registries/{host}",
            "Removes a registry login",
            Nothing,
        ),
        (
            Get,
            "/api/orgs/{owner}/registries",
            "An owner's registry logins",
            Many("Registry"),
        ),
        (
            Post,
            "/api/orgs/{owner}/registries",
            "Adds or replaces an owner's registry login",
            One("Registry"),
        ),
        (
            Delete,
            "/api/orgs/{owner}/registries/{host}",
            "Removes an owner's registry login",
            Nothing,
        ),
        (
            Get,
            "/api/registries",
            "The server's registry logins, for every repository",
            Many("Registry"),
        ),
        (
            Post,
            "/api/registries",
            "Adds or replaces a server-wide registry login",
            One("Registry"),
        ),
        (
            Delete,
            "/api/registries/{host}",
            "Removes a server-wide registry login",
            Nothing,
        ),
        (Get, "/api/user", "The caller", One("Whoami")),
        (Get, "/api/users", "The users", Many("User")),
        (
            Post,
            "/api/users",
            "Adds a user by GitHub login",
            One("User"),
        ),
        (
            Patch,
            "/api/users/{login}",
            "Makes a user a server admin, or not",
            One("User"),
        ),
        (
            Delete,
            "/api/users/{login}",
            "Removes a user with their tokens and roles",
            Nothing,
        ),
        (
            Get,
            "/api/repos/{owner}/{name}/roles",
            "The roles held on a repository",
            Many("RepoRole"),
        ),
        (
            Put,
            "/api/repos/{owner}/{name}/roles/{login}",
            "Sets a user's role (it wins over GitHub's)",
            One("RoleSet"),
        ),
        (
            Delete,
            "/api/repos/{owner}/{name}/roles/{login}",
            "Removes the role an admin set",
            Nothing,
        ),
        (Get, "/api/openapi.json", "This document", Object),
    ]
};

/// The document, built once per request (it is small).
pub(super) fn document() -> OpenApi {
    let mut paths = PathsBuilder::new();
    for (method, path, summary, answer) in ROUTES {
        let mut operation = OperationBuilder::new()
            .summary(Some(*summary))
            .response(ok_status(*answer), ok_response(*answer))
            .response("default", refusal());
        for name in path_parameters(path) {
            operation = operation.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
            );
        }
        paths = paths.path(*path, PathItem::new(method.clone(), operation));
    }
    let components = ComponentsBuilder::new()
        .schema_from::<gantry_api::Repo>()
        .schema_from::<gantry_api::Build>()
        .schema_from::<gantry_api::BuildDetail>()
        .schema_from::<gantry_api::Stage>()
        .schema_from::<gantry_api::Step>()
        .schema_from::<gantry_api::Notification>()
        .schema_from::<gantry_api::Token>()
        .schema_from::<gantry_api::CreatedToken>()
        .schema_from::<gantry_api::Whoami>()
        .schema_from::<gantry_api::User>()
        .schema_from::<gantry_api::RepoRole>()
        .schema_from::<gantry_api::RoleSet>()
        .schema_from::<gantry_api::Secret>()
        .schema_from::<gantry_api::SecretSaved>()
        .schema_from::<gantry_api::Registry>()
        .schema_from::<gantry_api::Runner>()
        .schema_from::<gantry_api::RunnerToken>()
        .schema_from::<gantry_api::CreatedRunnerToken>()
        .schema_from::<gantry_api::Target>()
        .schema_from::<gantry_api::Schedule>()
        .schema_from::<gantry_api::Environment>()
        .schema_from::<gantry_api::Deployment>()
        .schema_from::<gantry_api::ProtectedEnvironment>()
        .schema_from::<gantry_api::StageDeploy>()
        .schema_from::<gantry_api::StageApproval>()
        .schema_from::<gantry_api::Retention>()
        .schema_from::<gantry_api::RetentionRun>()
        .schema_from::<gantry_api::ScheduledBuild>()
        .schema_from::<gantry_api::Queued>()
        .schema_from::<gantry_api::StepLogSearch>()
        .schema_from::<gantry_api::LogHit>()
        .schema_from::<gantry_api::RepoLogSearch>()
        .schema_from::<gantry_api::Signed>()
        .schema(
            "Error",
            ObjectBuilder::new()
                .description(Some(
                    "A refusal: `error` is its kind (invalid, unauthorized, forbidden, not_found, conflict, too_large, upstream, unavailable, internal)",
                ))
                .property("error", ObjectBuilder::new().schema_type(Type::String))
                .required("error")
                .property("message", ObjectBuilder::new().schema_type(Type::String))
                .required("message")
                .property("field", ObjectBuilder::new().schema_type(Type::String))
                .property("needed", ObjectBuilder::new().schema_type(Type::String)),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("gantry")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "gantry's JSON API. `Authorization: Bearer TOKEN` for anything that changes state and for private repositories.",
                )),
        )
        .paths(paths.build())
        .components(Some(components))
        .build()
}

/// `GET /api/openapi.json`.
pub(super) async fn openapi_json() -> Json<OpenApi> {
    Json(document())
}

/// The `{...}` segments of a route.
fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

fn ok_status(answer: Answer) -> &'static str {
    match answer {
        Answer::Nothing => "204",
        _ => "200",
    }
}

fn ok_response(answer: Answer) -> utoipa::openapi::Response {
    let json = |schema: utoipa::openapi::RefOr<utoipa::openapi::Schema>| {
        ResponseBuilder::new()
            .description("the answer")
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(schema)).build(),
            )
            .build()
    };
    match answer {
        Answer::One(name) => json(Ref::from_schema_name(name).into()),
        Answer::Many(name) => json(ArrayBuilder::new().items(Ref::from_schema_name(name)).into()),
        Answer::Object => json(ObjectBuilder::new().into()),
        Answer::Nothing => ResponseBuilder::new().description("done").build(),
        Answer::Text => ResponseBuilder::new()
            .description("plain text")
            .content(
                "text/plain",
                ContentBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                    .build(),
            )
            .build(),
        Answer::Events => ResponseBuilder::new()
            .description("server-sent events: `line` (data: {n, t, text}, id: the line's number), then `end`")
            .content("text/event-stream", ContentBuilder::new().build())
            .build(),
    }
}

fn refusal() -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description("a refusal")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Error")))
                .build(),
        )
        .build()
}
