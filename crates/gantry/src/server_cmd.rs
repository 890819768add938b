//! `gantry server` (the HTTP server with an embedded runner) and `gantry runner` (a remote
//! runner). Configuration comes from flags whose defaults are `GANTRY_*` variables; signals
//! become shutdown here and nowhere else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use gantry_runner::DEFAULT_PULL_TIMEOUT;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use gantry_runner::{
    Backend, DockerBackend, ExecutorConfig, LocalBackend, RemoteConfig, RemoteRunner,
    RunnerBackends, kubernetes::KubernetesBackend,
};
use gantry_server::{Server, ServerConfig};
use gantry_store::Store;
use tokio_util::sync::CancellationToken;

use crate::pipeline_cmd::parse_param;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunnerBackend {
    /// Docker when the engine answers; without it, only host pipelines of trusted
    /// repositories, and only with --host-pipelines.
    Auto,
    Docker,
    /// Host processes only (no isolation): needs --host-pipelines, and runs trusted
    /// repositories' pipelines only.
    Local,
    /// Pods of a Kubernetes cluster: `kubernetes` pipelines, and `docker` ones unchanged.
    Kubernetes,
}

/// Where a runner with `--backend kubernetes` runs its pods.
#[derive(Debug, Clone, Args)]
pub struct KubernetesArgs {
    /// A kubeconfig file; by default KUBECONFIG, ~/.kube/config, or in a cluster the
    /// runner's own service account.
    #[arg(long, env = "GANTRY_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace build pods run in; by default the kubeconfig's (in a cluster, the
    /// runner's own).
    #[arg(long, env = "GANTRY_KUBE_NAMESPACE")]
    pub kube_namespace: Option<String>,
    /// The image that holds each container of a stage's pod until its step's turn.
    #[arg(long, env = "GANTRY_KUBE_HELPER_IMAGE", default_value = gantry_runner::kubernetes::DEFAULT_HELPER_IMAGE)]
    pub kube_helper_image: String,
    /// Seconds a build pod may stay unschedulable before its stage errors with the
    /// scheduler's reason.
    #[arg(long, env = "GANTRY_KUBE_SCHEDULE_TIMEOUT", default_value_t = 300)]
    pub kube_schedule_timeout: u64,
}

impl KubernetesArgs {
    fn config(&self, pull_timeout: Duration) -> gantry_runner::kubernetes::KubernetesConfig {
        gantry_runner::kubernetes::KubernetesConfig {
            kubeconfig: self.kubeconfig.clone(),
            namespace: self.kube_namespace.clone(),
            helper_image: self.kube_helper_image.clone(),
            schedule_timeout: Duration::from_secs(self.kube_schedule_timeout),
            pull_timeout,
            ..gantry_runner::kubernetes::KubernetesConfig::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, env = "GANTRY_ADDR", default_value = "0.0.0.0:8000")]
    pub addr: String,
    /// Holds the SQLite database, the git caches and the generated runner secret.
    #[arg(long, env = "GANTRY_DATA_DIR", default_value = "gantry-data")]
    pub data_dir: PathBuf,
    /// `postgres://user:password@host/db`; by default SQLite in the data directory.
    #[arg(long, env = "GANTRY_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The public base URL used in links; by default http://localhost:PORT.
    #[arg(long, env = "GANTRY_SERVER_URL")]
    pub server_url: Option<String>,
    /// The secret runners present; by default one generated into the data directory.
    #[arg(long, env = "GANTRY_RUNNER_SECRET", hide_env_values = true)]
    pub runner_secret: Option<String>,
    /// Stages the embedded runner runs at once; 0 runs none (use remote runners).
    #[arg(long, env = "GANTRY_RUNNER_CAPACITY", default_value_t = 2)]
    pub runner_capacity: u32,
    /// Where the embedded runner runs steps.
    #[arg(long, env = "GANTRY_RUNNER_BACKEND", value_enum, default_value_t = RunnerBackend::Auto)]
    pub runner_backend: RunnerBackend,
    /// The embedded runner also runs pipelines as processes on this machine (`type: exec`,
    /// and every pipeline with --runner-backend local), for trusted repositories only.
    #[arg(long, env = "GANTRY_RUNNER_HOST_PIPELINES")]
    pub runner_host_pipelines: bool,
    /// Seconds an image pull of the embedded runner may take before its step errors.
    #[arg(long, env = "GANTRY_RUNNER_PULL_TIMEOUT", default_value_t = DEFAULT_PULL_TIMEOUT.as_secs())]
    pub runner_pull_timeout: u64,
    #[command(flatten)]
    pub runner_kubernetes: KubernetesArgs,
    /// Labels the embedded runner offers (KEY=VALUE, repeatable); `platform=os/arch[/variant]`
    /// sets the platform it reports (by default this machine's).
    #[arg(long = "runner-label", value_parser = parse_param)]
    pub runner_labels: Vec<(String, String)>,
    /// The embedded runner's name: stable across restarts and unique among the server's
    /// runners and those of its Docker engine (what it left is removed by name when it starts
    /// again); by default one generated once into the data directory.
    #[arg(long, env = "GANTRY_RUNNER_NAME")]
    pub runner_name: Option<String>,
    /// GitHub's API, for commit statuses (GitHub Enterprise: https://HOST/api/v3).
    #[arg(
        long,
        env = "GANTRY_GITHUB_API_URL",
        default_value = "https://api.github.com"
    )]
    pub github_api_url: String,
    /// A token for commit statuses of repositories without one of their own, and for
    /// fetches from --github-url (never from another host; never given to steps).
    #[arg(long, env = "GANTRY_GITHUB_TOKEN", hide_env_values = true)]
    pub github_token: Option<String>,
    /// A GitHub App's id: each stage's clone and steps get an installation token of the App
    /// restricted to their repository (`contents: read`), revoked when the stage ends.
    #[arg(long, env = "GANTRY_GITHUB_APP_ID", requires = "github_app_key_file")]
    pub github_app_id: Option<u64>,
    /// The GitHub App's private key (the .pem file from the App's settings page).
    #[arg(long, env = "GANTRY_GITHUB_APP_KEY_FILE", requires = "github_app_id")]
    pub github_app_key_file: Option<PathBuf>,
    /// The key secrets are sealed with (64 hex digits); by default one generated into the
    /// data directory (`secret-key`, mode 0600).
    #[arg(long, env = "GANTRY_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// GitHub's web address, for sign-in and the one host the server's token is sent to by
    /// git (GitHub Enterprise: https://HOST).
    #[arg(long, env = "GANTRY_GITHUB_URL", default_value = "https://github.com")]
    pub github_url: String,
    /// The GitHub OAuth app's client id; sign-in with GitHub is offered when set.
    #[arg(long, env = "GANTRY_GITHUB_CLIENT_ID")]
    pub github_client_id: Option<String>,
    #[arg(long, env = "GANTRY_GITHUB_CLIENT_SECRET", hide_env_values = true)]
    pub github_client_secret: Option<String>,
    /// Address ranges chat and webhook targets may reach although they are loopback, private
    /// or link-local (comma-separated CIDRs, e.g. 10.20.0.0/16 for an internal chat server);
    /// by default only public addresses are reached.
    #[arg(long, env = "GANTRY_NOTIFY_ALLOW_NET", value_delimiter = ',')]
    pub notify_allow_net: Vec<ipnet::IpNet>,
    /// Lock names (`lock:` of a pipeline) shared by every owner's repositories
    /// (comma-separated); any other lock is its owner's alone.
    #[arg(long, env = "GANTRY_GLOBAL_LOCKS", value_delimiter = ',')]
    pub global_locks: Vec<String>,
    /// GitHub logins that are server admins (comma-separated).
    #[arg(long, env = "GANTRY_ADMINS", value_delimiter = ',')]
    pub admins: Vec<String>,
    /// An OpenSSH known_hosts file: the host keys SSH git servers (ssh:// and git@host:
    /// clone URLs) may present, beside GitHub's published ones, which are built in.
    #[arg(long, env = "GANTRY_SSH_KNOWN_HOSTS")]
    pub ssh_known_hosts: Option<PathBuf>,
    /// When set, `GET /metrics` answers only requests with `Authorization: Bearer TOKEN`
    /// (by default it is open, like `/healthz` and `/readyz`).
    #[arg(long, env = "GANTRY_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Builds that finished more than this many days ago are removed (0 keeps them all)...
    #[arg(long, env = "GANTRY_KEEP_BUILDS_DAYS", default_value_t = gantry_server::Retention::default().build_days)]
    pub keep_builds_days: u32,
    /// ...except the newest this many of each repository's branch.
    #[arg(long, env = "GANTRY_KEEP_BUILDS_PER_BRANCH", default_value_t = gantry_server::Retention::default().builds_per_branch)]
    pub keep_builds_per_branch: u32,
    /// Step logs of builds that finished more than this many days ago are removed; the
    /// builds stay (0 keeps all logs).
    #[arg(long, env = "GANTRY_KEEP_LOGS_DAYS", default_value_t = gantry_server::Retention::default().log_days)]
    pub keep_logs_days: u32,
    /// Processed webhook deliveries and sent chat messages and commit statuses are kept this
    /// many days (0: for ever).
    #[arg(long, env = "GANTRY_KEEP_DELIVERIES_DAYS", default_value_t = gantry_server::Retention::default().delivery_days)]
    pub keep_deliveries_days: u32,
    /// A cache (`cache:` paths, Woodpecker's named volumes) on a runner is started afresh
    /// when it is older than this many days.
    #[arg(long, env = "GANTRY_KEEP_CACHES_DAYS", default_value_t = gantry_server::Retention::default().cache_days)]
    pub keep_caches_days: u32,
    /// A cache that a stage grew past this many MiB is removed after the stage.
    #[arg(long = "cache-max-size-mib", env = "GANTRY_CACHE_MAX_SIZE_MIB", default_value_t = gantry_server::Retention::default().cache_max_mib)]
    pub cache_max_mib: u64,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct RunnerArgs {
    /// Manages runners' tokens instead of running a runner.
    #[command(subcommand)]
    pub command: Option<crate::client::RunnerCommand>,
    /// The server's URL.
    #[arg(long, env = "GANTRY_SERVER", required = true)]
    pub server: Option<String>,
    /// This runner's own token, from `gantry runner register NAME` (run it with --name NAME).
    #[arg(long, env = "GANTRY_RUNNER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Deprecated: the server's shared runner secret, which lets a runner act as any other;
    /// give each runner its own --token instead.
    #[arg(long, env = "GANTRY_RUNNER_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Stages run at once.
    #[arg(long, env = "GANTRY_RUNNER_CAPACITY", default_value_t = 2)]
    pub capacity: u32,
    /// Labels this runner offers; a stage's `node` labels must all be among them.
    /// `platform=os/arch[/variant]` sets the platform it reports (by default this machine's).
    #[arg(long = "labels", value_parser = parse_param, value_delimiter = ',')]
    pub labels: Vec<(String, String)>,
    /// Stable across restarts (what it held before a restart is ended at once) and unique:
    /// the server refuses a second live runner of one name; by default one generated once
    /// into the data directory (the host name and a random suffix).
    #[arg(long, env = "GANTRY_RUNNER_NAME")]
    pub name: Option<String>,
    /// Keeps the runner's generated name and its lineage (a token its instances carry), so
    /// that a restart is known as one, and its workspaces for host pipelines.
    #[arg(
        long,
        env = "GANTRY_RUNNER_DATA_DIR",
        default_value = "gantry-runner-data"
    )]
    pub data_dir: PathBuf,
    #[arg(long, env = "GANTRY_RUNNER_BACKEND", value_enum, default_value_t = RunnerBackend::Auto)]
    pub backend: RunnerBackend,
    /// Also run pipelines as processes on this machine (`type: exec`, and every pipeline
    /// with --backend local), for trusted repositories only.
    #[arg(long, env = "GANTRY_RUNNER_HOST_PIPELINES")]
    pub host_pipelines: bool,
    /// Seconds an image pull may take before its step errors.
    #[arg(long, env = "GANTRY_RUNNER_PULL_TIMEOUT", default_value_t = DEFAULT_PULL_TIMEOUT.as_secs())]
    pub pull_timeout: u64,
    #[command(flatten)]
    pub kubernetes: KubernetesArgs,
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GANTRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("while starting the runtime")
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Cancels `first` on the first Ctrl-C or SIGTERM, and `second` on the next.
fn on_signals(first: CancellationToken, second: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        for token in [first, second] {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            token.cancel();
        }
    });
}

/// The runner secret: given, or generated once into the data directory (mode 0600).
fn runner_secret(given: Option<&str>, data_dir: &Path) -> anyhow::Result<String> {
    if let Some(secret) = given {
        if secret.len() < 16 {
            bail!("the runner secret is too short: use at least 16 characters");
        }
        return Ok(secret.to_owned());
    }
    let path = data_dir.join("runner-secret");
    if let Ok(secret) = std::fs::read_to_string(&path) {
        return Ok(secret.trim().to_owned());
    }
    let secret = gantry_server::random_secret();
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("while writing {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    Ok(secret)
}

/// Who a runner is: its name (given, or generated once into its data folder) and the
/// lineage of its instances (a token kept in the folder, so that a restart is known as one).
/// Holds a lock on the folder for that name while the runner lives, so two processes of one
/// folder never act as one runner.
struct RunnerIdentity {
    name: String,
    lineage: String,
    _lock: std::fs::File,
}

/// `text` as a file name: letters, digits, `-`, `_` and `.`.
fn file_name_of(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The trimmed text of `path`, or `make()` written there when it has none.
fn kept(path: &Path, make: impl FnOnce() -> String) -> anyhow::Result<String> {
    if let Ok(text) = std::fs::read_to_string(path)
        && !text.trim().is_empty()
    {
        return Ok(text.trim().to_owned());
    }
    let text = make();
    std::fs::write(path, format!("{text}\n"))
        .with_context(|| format!("while writing {}", path.display()))?;
    Ok(text)
}

impl RunnerIdentity {
    fn claim(data_dir: &Path, given: Option<&str>, prefix: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir).with_context(|| {
            format!(
                "while creating the runner's data folder {}",
                data_dir.display()
            )
        })?;
        let random = || -> String { gantry_server::random_secret().chars().take(8).collect() };
        let name = match given.map(str::trim).filter(|n| !n.is_empty()) {
            Some(name) => name.to_owned(),
            None => kept(&data_dir.join("runner-name"), || {
                format!("{prefix}{}-{}", host_name(), random())
            })?,
        };
        let file_name = file_name_of(&name);
        let lock_path = data_dir.join(format!("runner-{file_name}.lock"));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("while opening {}", lock_path.display()))?;
        if lock.try_lock().is_err() {
            bail!(
                "another gantry process runs a runner named `{name}` from {}: give each runner its own data folder (--data-dir) or name (--name)",
                data_dir.display()
            );
        }
        let lineage = kept(
            &data_dir.join(format!("runner-{file_name}.lineage")),
            random,
        )?;
        Ok(Self {
            name,
            lineage,
            _lock: lock,
        })
    }
}

/// Presents the runner, then (its name now its own) removes what its earlier life left and
/// runs it until `stop`; the reason when the server refused it.
async fn run_runner(
    identity: RunnerIdentity,
    backends: Backends,
    runner: RemoteRunner,
    capacity: u32,
    stop: CancellationToken,
    abort: CancellationToken,
) -> Result<(), gantry_runner::RemoteError> {
    let outcome = async {
        runner.introduce(&stop).await?;
        backends.prepare(capacity).await;
        runner.run(stop, abort).await
    }
    .await;
    backends.shut_down().await;
    drop(identity);
    outcome
}

/// The runner's backends: Docker (when chosen and reachable) or a Kubernetes cluster (when
/// chosen), and host processes (when declared with --host-pipelines).
struct Backends {
    docker: Option<Arc<DockerBackend>>,
    kubernetes: Option<Arc<KubernetesBackend>>,
    host: Option<Arc<dyn Backend>>,
}

impl Backends {
    fn runner(&self, config: RemoteConfig) -> RemoteRunner {
        RemoteRunner::new(
            config,
            RunnerBackends {
                docker: self
                    .docker
                    .as_ref()
                    .map(|d| Arc::clone(d) as Arc<dyn Backend>),
                kubernetes: self
                    .kubernetes
                    .as_ref()
                    .map(|k| Arc::clone(k) as Arc<dyn Backend>),
                host: self.host.clone(),
            },
        )
    }

    /// Removes what this runner left when it was last killed, and makes its spare networks.
    async fn prepare(&self, capacity: u32) {
        if let Some(docker) = &self.docker {
            if let Err(e) = docker.sweep().await {
                tracing::warn!(error = %e, "removing what an earlier run left failed");
            }
            docker.keep_spare_networks(capacity as usize);
        }
        if let Some(kubernetes) = &self.kubernetes
            && let Err(e) = kubernetes.sweep().await
        {
            tracing::warn!(error = %e, "removing the pods an earlier run left failed");
        }
    }

    async fn shut_down(&self) {
        if let Some(docker) = &self.docker {
            docker.remove_spares().await;
        }
    }
}

async fn backends(
    choice: RunnerBackend,
    host_pipelines: bool,
    name: &str,
    work_dir: PathBuf,
    pull_timeout: Duration,
    kubernetes: &KubernetesArgs,
) -> anyhow::Result<Backends> {
    if choice == RunnerBackend::Local && !host_pipelines {
        bail!(
            "the local backend runs steps as processes on this machine, with this process's rights: add --host-pipelines (GANTRY_RUNNER_HOST_PIPELINES=true) to declare that it may; it then runs trusted repositories' pipelines only"
        );
    }
    let host = host_pipelines.then(|| Arc::new(LocalBackend::new(work_dir)) as Arc<dyn Backend>);
    if choice == RunnerBackend::Kubernetes {
        let backend = KubernetesBackend::connect(name, kubernetes.config(pull_timeout))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        tracing::info!(
            namespace = backend.namespace(),
            "build pods run on Kubernetes"
        );
        return Ok(Backends {
            docker: None,
            kubernetes: Some(Arc::new(backend)),
            host,
        });
    }
    let docker = match choice {
        RunnerBackend::Local | RunnerBackend::Kubernetes => None,
        RunnerBackend::Docker | RunnerBackend::Auto => match DockerBackend::connect(name)
            .await
            .map(|docker| docker.with_pull_timeout(pull_timeout))
        {
            // What it left when it was last killed is removed once the server has agreed
            // that the name is this runner's (`Backends::prepare`).
            Ok(docker) => Some(Arc::new(docker)),
            Err(e) if choice == RunnerBackend::Auto && host.is_some() => {
                tracing::warn!(error = %e, "no Docker engine: this runner takes only host pipelines of trusted repositories");
                None
            }
            Err(e) if choice == RunnerBackend::Auto => {
                tracing::warn!(error = %e, "no Docker engine: this runner takes no work until Docker answers at its next start (untrusted pipelines never run on the host; --host-pipelines lets it run trusted repositories' pipelines here)");
                None
            }
            Err(e) => return Err(anyhow::anyhow!("{e}")),
        },
    };
    Ok(Backends {
        docker,
        kubernetes: None,
        host,
    })
}

/// The key for secrets at rest: given, or the data directory's `secret-key`, or a new one
/// written there (mode 0600), unless the database already holds sealed data: then a
/// missing key is an error, never a silent new key.
async fn secret_key(
    given: Option<&str>,
    data_dir: &Path,
    store: &Store,
) -> anyhow::Result<gantry_server::secrets::SecretKey> {
    use gantry_server::secrets::{SecretKey, has_sealed_data};
    if let Some(text) = given {
        return SecretKey::from_hex(text)
            .ok_or_else(|| anyhow::anyhow!("GANTRY_SECRET_KEY must be 64 hex digits (32 bytes)"));
    }
    let path = data_dir.join("secret-key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return SecretKey::from_hex(&text)
            .ok_or_else(|| anyhow::anyhow!("{} does not hold 64 hex digits", path.display()));
    }
    if has_sealed_data(store).await? {
        bail!(
            "this database holds secrets, but no secret key was given: set GANTRY_SECRET_KEY, or restore {}",
            path.display()
        );
    }
    let (key, text) = SecretKey::generate();
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("while writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(key)
}

pub fn server(args: &ServerArgs) -> anyhow::Result<ExitCode> {
    init_tracing();
    let runtime = runtime()?;
    let served = runtime.block_on(serve(args));
    // A git fetch or a compile still running on a blocking thread holds no claim that
    // outlives its lease; waiting for it could hold shutdown for as long as it runs.
    runtime.shutdown_timeout(Duration::from_secs(5));
    served
}

async fn serve(args: &ServerArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.data_dir).with_context(|| {
        format!(
            "while creating the data directory {}",
            args.data_dir.display()
        )
    })?;
    let database = match &args.database_url {
        Some(url) => url.clone(),
        None => args
            .data_dir
            .join("gantry.db")
            .to_string_lossy()
            .into_owned(),
    };
    let store = Store::open(&database).await.with_context(|| {
        format!(
            "while opening the database {}",
            if database.contains("://") {
                "from GANTRY_DATABASE_URL"
            } else {
                &database
            }
        )
    })?;
    let listener = tokio::net::TcpListener::bind(&args.addr)
        .await
        .with_context(|| format!("while listening on {}", args.addr))?;
    let local = listener.local_addr()?;
    let server_url = args
        .server_url
        .clone()
        .unwrap_or_else(|| format!("http://localhost:{}", local.port()));
    let secret = runner_secret(args.runner_secret.as_deref(), &args.data_dir)?;
    let config = server_config(args, &store, server_url.clone(), secret.clone()).await?;
    if !args.admins.is_empty() {
        // The list is the truth at each start: whoever left it is no longer an admin.
        store
            .set_admins(&args.admins)
            .await
            .context("while applying --admins")?;
    }
    let server = Server::new(store, config);
    server
        .verify_secret_key()
        .await
        .context("while checking the secret key")?;
    if let Some(token) = server.ensure_admin_token().await? {
        eprintln!(
            "gantry: created the admin API token (shown once; only its hash is stored):\n\n    {token}\n"
        );
    }
    tracing::info!(addr = %local, url = %server_url, database = server.store().dialect(), "gantry server listening");

    let stop = CancellationToken::new();
    let abort = CancellationToken::new();
    on_signals(stop.clone(), abort.clone());
    let runner = if args.runner_capacity > 0 {
        Some(embedded_runner(args, local, secret, stop.clone(), abort.clone()).await?)
    } else {
        None
    };
    let server_stop = CancellationToken::new();
    let serving = tokio::spawn({
        let server_stop = server_stop.clone();
        async move {
            server
                .run(listener, async move { server_stop.cancelled().await })
                .await
        }
    });
    stop.cancelled().await;
    tracing::info!("shutting down");
    let refused = match runner {
        Some(runner) => runner
            .await
            .context("the embedded runner's task failed")?
            .err(),
        None => None,
    };
    server_stop.cancel();
    serving.await.context("the server task failed")??;
    match refused {
        Some(e) => Err(anyhow::anyhow!(e).context("the embedded runner was refused")),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// The server's configuration from its flags (and the secret key, checked against `store`).
async fn server_config(
    args: &ServerArgs,
    store: &Store,
    server_url: String,
    secret: String,
) -> anyhow::Result<ServerConfig> {
    let mut config = ServerConfig::new(args.data_dir.clone(), server_url, secret);
    config.github_api = args.github_api_url.clone();
    config.github_token = args.github_token.clone().filter(|t| !t.is_empty());
    config.github_url = args.github_url.trim_end_matches('/').to_owned();
    if let (Some(id), Some(path)) = (args.github_app_id, &args.github_app_key_file) {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("while reading the GitHub App key {}", path.display()))?;
        let app = gantry_server::github_app::GitHubApp::from_pem(id, &pem)
            .with_context(|| format!("in {}", path.display()))?;
        config.github_app = Some(Arc::new(app));
    }
    config.outbound.allowed = args.notify_allow_net.clone();
    config.global_locks = args.global_locks.clone();
    config.metrics_token = args.metrics_token.clone().filter(|t| !t.is_empty());
    config.retention = gantry_server::Retention {
        build_days: args.keep_builds_days,
        builds_per_branch: args.keep_builds_per_branch,
        log_days: args.keep_logs_days,
        delivery_days: args.keep_deliveries_days,
        message_days: args.keep_deliveries_days,
        cache_days: args.keep_caches_days,
        cache_max_mib: args.cache_max_mib,
        ..gantry_server::Retention::default()
    };
    if let Some(path) = &args.ssh_known_hosts {
        let lines = std::fs::read_to_string(path)
            .with_context(|| format!("while reading the SSH known hosts {}", path.display()))?;
        config.ssh_known_hosts.push_str(&lines);
    }
    config.secret_key = secret_key(args.secret_key.as_deref(), &args.data_dir, store).await?;
    config.oauth = match (&args.github_client_id, &args.github_client_secret) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
            Some(gantry_server::oauth::OAuthConfig {
                github_url: args.github_url.clone(),
                client_id: id.clone(),
                client_secret: secret.clone(),
                admins: args.admins.clone(),
            })
        }
        (Some(_), None) | (None, Some(_)) => {
            bail!(
                "sign-in with GitHub needs both GANTRY_GITHUB_CLIENT_ID and GANTRY_GITHUB_CLIENT_SECRET"
            )
        }
        _ => None,
    };
    Ok(config)
}

/// Starts the embedded runner: it reaches the server where it listens, and on shutdown stops
/// its stages and reports them as killed before the server stops listening.
async fn embedded_runner(
    args: &ServerArgs,
    local: std::net::SocketAddr,
    secret: String,
    stop: CancellationToken,
    abort: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<Result<(), gantry_runner::RemoteError>>> {
    let identity = RunnerIdentity::claim(&args.data_dir, args.runner_name.as_deref(), "embedded@")?;
    let backends = backends(
        args.runner_backend,
        args.runner_host_pipelines,
        &identity.name,
        args.data_dir.join("workspaces"),
        Duration::from_secs(args.runner_pull_timeout),
        &args.runner_kubernetes,
    )
    .await?;
    // The embedded runner reaches the server where it listens (loopback when it listens
    // on every interface).
    let reach = match local.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            format!("127.0.0.1:{}", local.port())
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => format!("[::1]:{}", local.port()),
        _ => local.to_string(),
    };
    let mut labels: BTreeMap<String, String> = args.runner_labels.iter().cloned().collect();
    let platform = RemoteConfig::platform_from_labels(&mut labels);
    let config = RemoteConfig {
        server: format!("http://{reach}"),
        secret,
        name: identity.name.clone(),
        labels,
        capacity: args.runner_capacity,
        platform,
        executor: ExecutorConfig::default(),
        lineage: Some(identity.lineage.clone()),
    };
    let runner = backends.runner(config);
    // On shutdown, running stages are stopped and reported as killed before the server
    // stops listening, so none is left running.
    let capacity = args.runner_capacity;
    Ok(tokio::spawn(async move {
        let stopping = stop.clone();
        let abort_on_stop = abort.clone();
        tokio::spawn(async move {
            stopping.cancelled().await;
            abort_on_stop.cancel();
        });
        let ran = run_runner(identity, backends, runner, capacity, stop.clone(), abort).await;
        if ran.is_err() {
            // A server whose embedded runner is refused stops, as a runner would.
            stop.cancel();
        }
        ran
    }))
}

pub fn runner(args: &RunnerArgs) -> anyhow::Result<ExitCode> {
    if let Some(command) = &args.command {
        return crate::client::runner_tokens(command);
    }
    init_tracing();
    let server = args
        .server
        .clone()
        .context("--server (GANTRY_SERVER) is required to run a runner")?;
    let credential = match (&args.token, &args.secret) {
        (Some(token), _) => token.clone(),
        (None, Some(secret)) => {
            tracing::warn!(
                "the shared runner secret (--secret) is deprecated: it lets a runner act as any other; give this runner its own token with `gantry runner register NAME` and --token"
            );
            secret.clone()
        }
        (None, None) => bail!(
            "the runner needs its token: make one with `gantry runner register NAME` (a server admin) and pass it with --token (GANTRY_RUNNER_TOKEN)"
        ),
    };
    runtime()?.block_on(async {
        let identity = RunnerIdentity::claim(&args.data_dir, args.name.as_deref(), "")?;
        let name = identity.name.clone();
        let mut labels: BTreeMap<String, String> = args.labels.iter().cloned().collect();
        let platform = RemoteConfig::platform_from_labels(&mut labels);
        let backends = backends(
            args.backend,
            args.host_pipelines,
            &name,
            args.data_dir.join("workspaces"),
            Duration::from_secs(args.pull_timeout),
            &args.kubernetes,
        )
        .await?;
        let config = RemoteConfig {
            server: server.clone(),
            secret: credential,
            name: name.clone(),
            labels,
            capacity: args.capacity,
            platform,
            executor: ExecutorConfig::default(),
            lineage: Some(identity.lineage.clone()),
        };
        tracing::info!(%name, %server, capacity = args.capacity, docker = backends.docker.is_some(), kubernetes = backends.kubernetes.is_some(), host_pipelines = backends.host.is_some(), "gantry runner started");
        let stop = CancellationToken::new();
        let abort = CancellationToken::new();
        on_signals(stop.clone(), abort.clone());
        // The first signal stops taking work and lets running stages finish; the second
        // cancels them.
        let runner = backends.runner(config);
        run_runner(identity, backends, runner, args.capacity, stop, abort)
            .await
            .context("the server refused the runner")?;
        Ok(ExitCode::SUCCESS)
    })
}
