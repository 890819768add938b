//! The Docker backend, through the engine's API (bollard). Per job: a private network where
//! services and steps reach each other by name, and a workspace volume mounted in every step.
//! The workspace is filled through the engine's archive API, never through a host path, so the
//! runner may itself run in a container with only the Docker socket.
//!
//! Everything created carries the labels `gantry.runner` and `gantry.job`; `destroy` removes
//! what has the job's label, `sweep` what has the runner's (leftovers of a crashed run).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::AttachContainerResults;
use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest, VolumeCreateRequest};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, ListContainersOptionsBuilder,
    ListNetworksOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveVolumeOptionsBuilder, StopContainerOptionsBuilder, UploadToContainerOptionsBuilder,
    WaitContainerOptions,
};
use futures_util::StreamExt;
use gantry_pipeline::model::VolumeSource;
use gantry_pipeline::plan::PlanStep;
use gantry_proto::registry::RegistryCredential;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, BackendError, JobSpec, Output, StepExit, StepSpec};

mod cache;
mod holder;
mod pull;
mod spec;

pub use pull::DEFAULT_PULL_TIMEOUT;
use pull::Pulls;

use spec::{ContainerSpec, docker_name};

const LABEL_RUNNER: &str = "gantry.runner";
const LABEL_JOB: &str = "gantry.job";
/// Marks a network created ahead of time, not yet given to a job.
const LABEL_SPARE: &str = "gantry.spare";

/// Networks created ahead of the jobs that will use them: creating a bridge network is the
/// slowest call before a stage's first container can start (tens of milliseconds), so it is
/// done while the runner waits for work instead.
#[derive(Debug, Default)]
struct Spares {
    ready: Vec<String>,
    creating: usize,
    target: usize,
}

pub struct DockerBackend {
    docker: Docker,
    runner: String,
    /// The images of this engine: present, being pulled.
    pulls: Arc<Pulls>,
    /// Containers being created ahead of their step, by container name.
    prepared: Mutex<HashMap<String, Preparing>>,
    /// Removals of containers made ahead for steps that did not run, by container name.
    discarding: Mutex<HashMap<String, JoinHandle<()>>>,
    spares: Arc<Mutex<Spares>>,
    /// The network of each job set up, by job id.
    networks: Mutex<HashMap<String, StageNetwork>>,
}

/// A stage's own network, and the holder container whose namespace its steps join.
#[derive(Debug, Clone)]
struct StageNetwork {
    name: String,
    /// A spare network carries no job label: it is removed by name.
    spare: bool,
    holder: Option<Holder>,
}

#[derive(Debug, Clone)]
struct Holder {
    id: String,
    /// The steps that join it (`holder::members`).
    members: Arc<HashSet<String>>,
}

impl StageNetwork {
    /// The holder `step` joins, if it joins one.
    fn holder_of(&self, step: &PlanStep) -> Option<&str> {
        self.holder
            .as_ref()
            .filter(|h| h.members.contains(&step.name))
            .map(|h| h.id.as_str())
    }
}

impl std::fmt::Debug for DockerBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerBackend")
            .field("runner", &self.runner)
            .finish()
    }
}

fn engine(context: &str, e: bollard::errors::Error) -> BackendError {
    BackendError::Engine(format!("{context}: {e}"))
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// `registry/name:tag` or `name@sha256:...` into what the pull API wants.
fn split_image(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], &image[last_slash + i + 1..]),
        None => (image, "latest"),
    }
}

impl DockerBackend {
    /// The backend with image pulls given up after `timeout` (the step errors, saying so).
    pub fn with_pull_timeout(mut self, timeout: Duration) -> Self {
        self.pulls = Arc::new(Pulls::new(timeout));
        self
    }

    /// Connects to the engine (`DOCKER_HOST`, or the local socket) and agrees on an API version.
    /// `runner` names this runner in labels; it must be stable across restarts for `sweep`.
    pub async fn connect(runner: &str) -> Result<Self, BackendError> {
        let unreachable = |e: bollard::errors::Error| {
            BackendError::Engine(format!(
                "cannot reach the Docker engine ({e}); start it, or point DOCKER_HOST at it"
            ))
        };
        let docker = Docker::connect_with_defaults().map_err(unreachable)?;
        let docker = docker.negotiate_version().await.map_err(unreachable)?;
        docker.ping().await.map_err(unreachable)?;
        Ok(Self {
            docker,
            runner: runner.to_owned(),
            pulls: Arc::new(Pulls::new(DEFAULT_PULL_TIMEOUT)),
            prepared: Mutex::new(HashMap::new()),
            discarding: Mutex::new(HashMap::new()),
            spares: Arc::default(),
            networks: Mutex::new(HashMap::new()),
        })
    }

    /// Keeps `count` networks created ahead of time for the next jobs (typically the
    /// runner's capacity). They carry this runner's label, so `sweep` removes what a killed
    /// runner left; `remove_spares` removes them on shutdown.
    pub fn keep_spare_networks(&self, count: usize) {
        if let Ok(mut spares) = self.spares.lock() {
            spares.target = count;
        }
        self.refill_spares();
    }

    fn refill_spares(&self) {
        let Ok(mut spares) = self.spares.lock() else {
            return;
        };
        while spares.ready.len() + spares.creating < spares.target {
            spares.creating += 1;
            let (docker, runner, shared) = (
                self.docker.clone(),
                self.runner.clone(),
                Arc::clone(&self.spares),
            );
            tokio::spawn(async move {
                let name = format!(
                    "gantry-spare-{}-{}",
                    docker_name(&runner),
                    crate::random_hex(6)
                );
                let created = docker
                    .create_network(NetworkCreateRequest {
                        name: name.clone(),
                        driver: Some("bridge".to_owned()),
                        labels: Some(HashMap::from([
                            (LABEL_RUNNER.to_owned(), runner),
                            (LABEL_SPARE.to_owned(), "true".to_owned()),
                        ])),
                        ..Default::default()
                    })
                    .await;
                if let Ok(mut spares) = shared.lock() {
                    spares.creating -= 1;
                    match created {
                        Ok(_) => spares.ready.push(name),
                        Err(e) => tracing::warn!(error = %e, "creating a spare network failed"),
                    }
                }
            });
        }
    }

    fn take_spare(&self) -> Option<String> {
        let taken = self.spares.lock().ok()?.ready.pop();
        self.refill_spares();
        taken
    }

    /// Stops keeping spare networks and removes those not in use.
    pub async fn remove_spares(&self) {
        if let Ok(mut spares) = self.spares.lock() {
            spares.target = 0;
        }
        for _ in 0..200 {
            let creating = self.spares.lock().map_or(0, |s| s.creating);
            if creating == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ready = self
            .spares
            .lock()
            .map(|mut s| std::mem::take(&mut s.ready))
            .unwrap_or_default();
        for name in ready {
            let _ = self.docker.remove_network(&name).await;
        }
    }

    /// The job's network: a spare it took, or one named after it.
    fn job_network(&self, job: &JobSpec) -> StageNetwork {
        self.networks
            .lock()
            .ok()
            .and_then(|n| n.get(&job.id).cloned())
            .unwrap_or_else(|| StageNetwork {
                name: spec::network(job),
                spare: false,
                holder: None,
            })
    }

    fn record_network(&self, job: &JobSpec, network: StageNetwork) {
        if let Ok(mut networks) = self.networks.lock() {
            networks.insert(job.id.clone(), network);
        }
    }

    /// Starts the stage's network holder when two or more of its steps can join it; None
    /// when fewer can or the engine's architecture has no holder program.
    async fn start_holder(
        &self,
        job: &JobSpec,
        network: &str,
        labels: HashMap<String, String>,
    ) -> Result<Option<Holder>, BackendError> {
        let members = holder::members(&job.stage);
        if members.len() < 2 || !holder::ensure_image(&self.docker).await? {
            return Ok(None);
        }
        let id = holder::create(&self.docker, job, network, &members, labels).await?;
        Ok(Some(Holder {
            id,
            members: Arc::new(members),
        }))
    }

    /// The containers, networks and volumes that match a label filter (`key` or `key=value`).
    async fn labelled(&self, label: &str) -> Result<Labelled, BackendError> {
        let filters = HashMap::from([("label", vec![label.to_owned()])]);
        let containers = self
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| engine("listing containers", e))?;
        let networks = self
            .docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| engine("listing networks", e))?;
        let volumes = self
            .docker
            .list_volumes(Some(
                ListVolumesOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| engine("listing volumes", e))?;
        Ok(Labelled {
            containers,
            networks,
            volumes: volumes.volumes.unwrap_or_default(),
        })
    }

    async fn remove_labelled(&self, label: &str) -> Result<(), BackendError> {
        let found = self.labelled(label).await?;
        // Removing containers one by one costs a round trip each; ask for all at once.
        let removals = found
            .containers
            .into_iter()
            .filter_map(|c| c.id)
            .map(|id| async move {
                let options = RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build();
                match self.docker.remove_container(&id, Some(options)).await {
                    Ok(()) => Ok(()),
                    Err(e) if is_not_found(&e) => Ok(()),
                    Err(e) => Err(engine("removing a container", e)),
                }
            });
        for removed in futures_util::future::join_all(removals).await {
            removed?;
        }
        for network in found.networks {
            let Some(id) = network.id else { continue };
            match self.docker.remove_network(&id).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(engine("removing a network", e)),
            }
        }
        for volume in found.volumes {
            let options = RemoveVolumeOptionsBuilder::default().force(true).build();
            match self.docker.remove_volume(&volume.name, Some(options)).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(engine("removing a volume", e)),
            }
        }
        Ok(())
    }

    /// Removes everything this runner ever created: leftovers of a run that crashed.
    pub async fn sweep(&self) -> Result<(), BackendError> {
        self.remove_labelled(&format!("{LABEL_RUNNER}={}", self.runner))
            .await
    }

    /// Removes what other runners left, for those `is_gone` says are gone for good (e.g.
    /// `gantry exec` processes that were killed). Returns the runners swept.
    pub async fn sweep_gone(
        &self,
        is_gone: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>, BackendError> {
        let found = self.labelled(LABEL_RUNNER).await?;
        let runners: HashSet<String> = found
            .containers
            .into_iter()
            .filter_map(|c| c.labels?.remove(LABEL_RUNNER))
            .chain(
                found
                    .networks
                    .into_iter()
                    .filter_map(|n| n.labels?.remove(LABEL_RUNNER)),
            )
            .chain(
                found
                    .volumes
                    .into_iter()
                    .filter_map(|mut v| v.labels.remove(LABEL_RUNNER)),
            )
            .collect();
        let gone: Vec<String> = runners
            .into_iter()
            .filter(|r| r != &self.runner && is_gone(r))
            .collect();
        for runner in &gone {
            self.remove_labelled(&format!("{LABEL_RUNNER}={runner}"))
                .await?;
        }
        Ok(gone)
    }

    /// How many containers, networks and volumes carry this runner's label.
    pub async fn leftovers(&self) -> Result<(usize, usize, usize), BackendError> {
        let found = self
            .labelled(&format!("{LABEL_RUNNER}={}", self.runner))
            .await?;
        Ok((
            found.containers.len(),
            found.networks.len(),
            found.volumes.len(),
        ))
    }

    /// A step that runs an image: any of the stage's images will do for the containers that
    /// only hold its volumes (created, never started), since it is needed anyway.
    fn image_step(job: &JobSpec) -> Option<(&PlanStep, &str)> {
        job.stage
            .steps
            .iter()
            .chain(&job.stage.services)
            .filter(|s| s.run)
            .find_map(|s| Some((s, s.image.as_deref()?)))
    }

    fn cache_names(job: &JobSpec) -> Vec<&str> {
        job.stage
            .volumes
            .iter()
            .filter(|v| v.source == VolumeSource::Cache)
            .map(|v| v.name.as_str())
            .collect()
    }
}

#[async_trait]
impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn setup(&self, job: &JobSpec) -> Result<(), BackendError> {
        let labels = spec::labels(&self.runner, job);
        let mut network = match self.take_spare() {
            Some(spare) => StageNetwork {
                name: spare,
                spare: true,
                holder: None,
            },
            None => {
                let name = spec::network(job);
                self.docker
                    .create_network(NetworkCreateRequest {
                        name: name.clone(),
                        driver: Some("bridge".to_owned()),
                        labels: Some(labels.clone()),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| engine("creating the stage's network", e))?;
                StageNetwork {
                    name,
                    spare: false,
                    holder: None,
                }
            }
        };
        // Recorded before the next await: `destroy` removes a spare network by this name even
        // when setup stops half-way.
        self.record_network(job, network.clone());
        // Without a holder, each step joins the stage's network on its own: slower, the same.
        match self.start_holder(job, &network.name, labels.clone()).await {
            Ok(holder) => network.holder = holder,
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "the stage's steps join its network one by one")
            }
        }
        self.record_network(job, network);
        let mut volumes = vec![(spec::workspace_volume(job), false)];
        for volume in &job.stage.volumes {
            if let VolumeSource::Temp { memory } = volume.source {
                volumes.push((spec::stage_volume(job, &volume.name), memory));
            }
        }
        if let Some(spec) = &job.stage.cache {
            let image = Self::image_step(job);
            if let Some((step, image)) = image {
                let login = RegistryCredential::for_image(&job.registries, image);
                self.pulls
                    .ensure(&self.docker, image, step.pull, login, &untold())
                    .await?;
            }
            let image = image.map(|(_, image)| image);
            cache::prepare(&self.docker, spec, &Self::cache_names(job), image, &labels).await?;
        }
        for (name, memory) in volumes {
            let driver_opts = memory.then(|| {
                HashMap::from([
                    ("type".to_owned(), "tmpfs".to_owned()),
                    ("device".to_owned(), "tmpfs".to_owned()),
                ])
            });
            self.docker
                .create_volume(VolumeCreateRequest {
                    name: Some(name),
                    driver_opts,
                    labels: Some(labels.clone()),
                    ..Default::default()
                })
                .await
                .map_err(|e| engine("creating a volume", e))?;
        }
        Ok(())
    }

    async fn import_workspace(&self, job: &JobSpec, dir: &Path) -> Result<(), BackendError> {
        // A container that is created but never started is enough to write into its volumes.
        let Some((step, image)) = Self::image_step(job) else {
            return Ok(());
        };
        let image = image.to_owned();
        let login = RegistryCredential::for_image(&job.registries, &image);
        self.pulls
            .ensure(&self.docker, &image, step.pull, login, &untold())
            .await?;
        let archive = crate::backend::pack_directory(dir).await?;
        let name = format!("gantry-{}-import", docker_name(&job.id));
        let body = ContainerCreateBody {
            image: Some(image),
            labels: Some(spec::labels(&self.runner, job)),
            host_config: Some(HostConfig {
                binds: Some(spec::binds(job, &[])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let container = self
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await
            .map_err(|e| engine("creating the container that fills the workspace", e))?;
        let options = UploadToContainerOptionsBuilder::default()
            .path(&job.stage.workspace)
            .build();
        let uploaded = self
            .docker
            .upload_to_container(
                &container.id,
                Some(options),
                bollard::body_full(archive.into()),
            )
            .await
            .map_err(|e| engine("copying the workspace in", e));
        let removed = self
            .docker
            .remove_container(
                &container.id,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await
            .map_err(|e| engine("removing the container that filled the workspace", e));
        uploaded.and(removed)
    }

    fn prepare_step(&self, job: &JobSpec, step: &StepSpec<'_>) {
        let network = self.job_network(job);
        let Ok(spec) = spec::container_spec(
            job,
            step,
            &network.name,
            network.holder_of(step.step),
            spec::labels(&self.runner, job),
        ) else {
            return;
        };
        let Ok(mut prepared) = self.prepared.lock() else {
            return;
        };
        if prepared.contains_key(&spec.name) {
            return;
        }
        let name = spec.name.clone();
        prepared.insert(
            name,
            Preparing::start(self.docker.clone(), Arc::clone(&self.pulls), spec),
        );
    }

    async fn run_step(
        &self,
        job: &JobSpec,
        step: &StepSpec<'_>,
        output: Output,
        cancel: CancellationToken,
    ) -> Result<StepExit, BackendError> {
        let network = self.job_network(job);
        let spec = spec::container_spec(
            job,
            step,
            &network.name,
            network.holder_of(step.step),
            spec::labels(&self.runner, job),
        )?;
        let step_name = spec.step.clone();
        let name = spec.name.clone();
        let ready = self.prepared.lock().ok().and_then(|mut p| p.remove(&name));
        let Preparing { mut task, mut told } = match ready {
            Some(preparing) => preparing,
            None => Preparing::start(self.docker.clone(), Arc::clone(&self.pulls), spec),
        };
        // What the pull does is told in the step's log as it happens, before its output.
        let tell = async |line: String| {
            let _ = output.send(format!("{line}\n").into_bytes()).await;
        };
        let ready = loop {
            tokio::select! {
                Some(line) = told.recv() => tell(line).await,
                joined = &mut task => {
                    while let Ok(line) = told.try_recv() {
                        tell(line).await;
                    }
                    break joined.map_err(|e| BackendError::Engine(format!("creating the container failed: {e}")))??;
                }
                () = cancel.cancelled() => {
                    // The engine may still finish creating it: leave that for `destroy` to
                    // wait for and remove, rather than abandon a container the listing might
                    // miss.
                    if let Ok(mut prepared) = self.prepared.lock() {
                        prepared.insert(name, Preparing { task, told });
                    }
                    return Ok(StepExit::Killed);
                }
            }
        };
        // The container stays until `destroy`, which removes all of the job's at once.
        self.attend(ready, &step_name, output, &cancel).await
    }

    fn discard_step(&self, job: &JobSpec, step: &PlanStep) {
        let name = spec::container_name(job, step, 1);
        let Some(preparing) = self.prepared.lock().ok().and_then(|mut p| p.remove(&name)) else {
            return;
        };
        let docker = self.docker.clone();
        let removal = tokio::spawn(async move {
            if let Ok(Ok(ready)) = preparing.task.await {
                let options = RemoveContainerOptionsBuilder::default().force(true).build();
                let _ = docker.remove_container(&ready.id, Some(options)).await;
            }
        });
        if let Ok(mut discarding) = self.discarding.lock() {
            discarding.retain(|_, removal| !removal.is_finished());
            discarding.insert(name, removal);
        }
    }

    async fn destroy(&self, job: &JobSpec) -> Result<(), BackendError> {
        // A container still being created ahead of its step would appear after the listing
        // below: wait for those first (a request already sent completes even if abandoned).
        let prefix = format!("gantry-{}-", docker_name(&job.id));
        let pending: Vec<JoinHandle<Result<Ready, BackendError>>> =
            take_named(&self.prepared, &prefix)
                .into_iter()
                .map(|preparing| preparing.task)
                .collect();
        // A removal of a discarded one must end before the one below asks for it again.
        let discarding = take_named(&self.discarding, &prefix);
        // A pull can take long; past a bound, give up on it (it creates nothing until done).
        let waits = futures_util::future::join(
            futures_util::future::join_all(pending),
            futures_util::future::join_all(discarding),
        );
        let _ = tokio::time::timeout(Duration::from_secs(30), waits).await;
        self.remove_labelled(&format!("{LABEL_JOB}={}", job.id))
            .await?;
        if let (Some(spec), Some((_, image))) = (&job.stage.cache, Self::image_step(job)) {
            for name in cache::enforce_cap(
                &self.docker,
                spec,
                &Self::cache_names(job),
                (image, &spec::labels(&self.runner, job)),
            )
            .await?
            {
                tracing::warn!(cache = %name, cap = spec.max_bytes, repo = %spec.repo, "a cache grew past the size cap: removed, the next build starts it afresh");
            }
        }
        // A spare network carries no job label: removed by name, once its containers are.
        let network = self
            .networks
            .lock()
            .ok()
            .and_then(|mut n| n.remove(&job.id));
        if let Some(StageNetwork {
            name, spare: true, ..
        }) = network
        {
            match self.docker.remove_network(&name).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(engine("removing the stage's network", e)),
            }
        }
        Ok(())
    }
}

impl DockerBackend {
    /// Starts the container, streams its output and waits for it; stops it when `cancel` fires.
    async fn attend(
        &self,
        ready: Ready,
        step: &str,
        output: Output,
        cancel: &CancellationToken,
    ) -> Result<StepExit, BackendError> {
        let Ready { id, attached } = ready;
        let id = id.as_str();
        let logs = tokio::spawn(async move {
            let mut stream = attached.output;
            while let Some(Ok(chunk)) = stream.next().await {
                if output.send(chunk.into_bytes().to_vec()).await.is_err() {
                    return;
                }
            }
        });
        self.docker
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .map_err(|e| engine(&format!("starting the container of step `{step}`"), e))?;
        let mut wait = self.docker.wait_container(id, None::<WaitContainerOptions>);
        let mut killed = false;
        let code = loop {
            tokio::select! {
                next = wait.next() => {
                    break match next {
                        Some(Ok(response)) => response.status_code,
                        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
                        Some(Err(e)) => return Err(engine(&format!("waiting for step `{step}`"), e)),
                        None => return Err(BackendError::Engine(format!("the engine stopped reporting on step `{step}`"))),
                    };
                }
                () = cancel.cancelled(), if !killed => {
                    killed = true;
                    let options = StopContainerOptionsBuilder::default().t(1).build();
                    let _ = self.docker.stop_container(id, Some(options)).await;
                }
            }
        };
        // The engine delivers logs after the container exits, a large log well after: drain
        // it to the end, so no line is lost. Only a cancelled step stops waiting early.
        if killed {
            let _ = tokio::time::timeout(Duration::from_secs(5), logs).await;
            return Ok(StepExit::Killed);
        }
        let _ = logs.await;
        Ok(StepExit::Exited(i32::try_from(code).unwrap_or(i32::MAX)))
    }
}

/// Takes the entries whose container name starts with `prefix` (a job's) out of `map`.
fn take_named<T>(map: &Mutex<HashMap<String, T>>, prefix: &str) -> Vec<T> {
    let Ok(mut map) = map.lock() else {
        return Vec::new();
    };
    let names: Vec<String> = map
        .keys()
        .filter(|n| n.starts_with(prefix))
        .cloned()
        .collect();
    names.iter().filter_map(|n| map.remove(n)).collect()
}

/// Where a pull outside any step's log tells what it does: nowhere (the stage's setup).
fn untold() -> mpsc::UnboundedSender<String> {
    mpsc::unbounded_channel().0
}

/// A step's container being created (its image pulled first), and the lines its pull tells.
#[derive(Debug)]
struct Preparing {
    task: JoinHandle<Result<Ready, BackendError>>,
    told: mpsc::UnboundedReceiver<String>,
}

/// A step's container, created and attached to: only its start remains.
struct Ready {
    id: String,
    attached: AttachContainerResults,
}

impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ready").field("id", &self.id).finish()
    }
}

impl Preparing {
    fn start(docker: Docker, pulls: Arc<Pulls>, spec: ContainerSpec) -> Self {
        let (tell, told) = mpsc::unbounded_channel();
        let task = tokio::spawn(create_container(docker, pulls, spec, tell));
        Self { task, told }
    }
}

/// Creates a container once its image is there, and attaches to its output.
///
/// Output is taken by attaching to the container before it starts, not from `/logs`: the
/// engine's log driver may rotate (`max-size`), and a follower of `/logs` then loses what
/// rotated away before it read it. Attached output comes straight from the container (the
/// engine connects its pipes before it answers the attach). No `logs` replay: it would
/// repeat whatever the container wrote while the replay ran.
async fn create_container(
    docker: Docker,
    pulls: Arc<Pulls>,
    spec: ContainerSpec,
    tell: mpsc::UnboundedSender<String>,
) -> Result<Ready, BackendError> {
    pulls
        .ensure(&docker, &spec.image, spec.pull, spec.login.as_ref(), &tell)
        .await?;
    let options = CreateContainerOptionsBuilder::default()
        .name(&spec.name)
        .build();
    let step = &spec.step;
    let id = docker
        .create_container(Some(options), spec.body)
        .await
        .map_err(|e| engine(&format!("creating the container of step `{step}`"), e))?
        .id;
    let options = AttachContainerOptionsBuilder::default()
        .stream(true)
        .stdout(true)
        .stderr(true)
        .logs(false)
        .build();
    let attached = docker
        .attach_container(&id, Some(options))
        .await
        .map_err(|e| engine(&format!("attaching to the container of step `{step}`"), e))?;
    Ok(Ready { id, attached })
}

/// What the engine holds under a label.
struct Labelled {
    containers: Vec<bollard::models::ContainerSummary>,
    networks: Vec<bollard::models::Network>,
    volumes: Vec<bollard::models::Volume>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_split_for_the_pull_api() {
        assert_eq!(split_image("alpine"), ("alpine", "latest"));
        assert_eq!(split_image("alpine:3"), ("alpine", "3"));
        assert_eq!(
            split_image("registry:5000/team/app:1.2"),
            ("registry:5000/team/app", "1.2")
        );
        assert_eq!(
            split_image("registry:5000/team/app"),
            ("registry:5000/team/app", "latest")
        );
        assert_eq!(split_image("app@sha256:abc"), ("app@sha256:abc", ""));
    }

    #[test]
    fn names_are_safe_for_docker() {
        assert_eq!(docker_name("job/1 x"), "job-1-x");
    }
}
