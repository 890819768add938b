//! The Kubernetes backend, through the API server (kube): one pod per stage, as Drone's
//! runner does. The workspace is an `emptyDir` shared by the pod's containers (no volume to
//! attach, every step on one node); services and steps reach each other by name through the
//! pod's host aliases (they share its network). Each container waits as a placeholder until
//! the backend swaps its step's image in (`pod` explains the layout). Variables come from a
//! Secret per stage, registry logins from a pull Secret; both are removed with the pod.
//!
//! Never hang, never lose an end: a watch on the pod feeds every step; a step ends on its
//! container's terminated state (whether or not it was ever seen running), after its log has
//! been read to its end; pull errors, config errors, an unschedulable pod (after
//! `schedule_timeout`, with the scheduler's reason) and eviction end it as errors. Everything
//! carries the `gantry.runner` and `gantry.job` labels; `sweep` removes a runner's leftovers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{AsyncBufRead, AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod, Secret};
use kube::api::{
    AttachParams, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::{Api, Client};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, BackendError, JobSpec, Output, StepExit, StepSpec};

pub mod pod;

pub use pod::PodSettings;

const LABEL_RUNNER: &str = "gantry.runner";
const LABEL_JOB: &str = "gantry.job";

/// How the runner reaches its cluster and what its pods look like.
#[derive(Debug, Clone)]
pub struct KubernetesConfig {
    /// A kubeconfig file; none: `KUBECONFIG`, `~/.kube/config`, or the pod's own service
    /// account when the runner runs in the cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Where build pods run; none: the kubeconfig's namespace (in a cluster, the runner's).
    pub namespace: Option<String>,
    pub helper_image: String,
    /// A pod the scheduler cannot place for this long errors the stage with its reason.
    pub schedule_timeout: Duration,
    /// Seconds a stopped step gets between SIGTERM and SIGKILL.
    pub grace_secs: i64,
    /// A step whose container has not started this long after its turn errors (its image
    /// could not be pulled in time).
    pub pull_timeout: Duration,
}

/// The image whose waiter holds each container until its turn (`images/kube-helper`).
pub const DEFAULT_HELPER_IMAGE: &str = "ghcr.io/gantry-ci/kube-helper:1";

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            namespace: None,
            helper_image: DEFAULT_HELPER_IMAGE.to_owned(),
            schedule_timeout: Duration::from_secs(300),
            grace_secs: 1,
            pull_timeout: crate::DEFAULT_PULL_TIMEOUT,
        }
    }
}

pub struct KubernetesBackend {
    client: Client,
    runner: String,
    settings: PodSettings,
    schedule_timeout: Duration,
    pull_timeout: Duration,
    /// The pod of each job set up, by job id.
    pods: Mutex<HashMap<String, Arc<StagePod>>>,
}

impl std::fmt::Debug for KubernetesBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesBackend")
            .field("runner", &self.runner)
            .field("namespace", &self.settings.namespace)
            .finish()
    }
}

/// A stage's pod as last seen by its watch.
#[derive(Debug)]
struct StagePod {
    name: String,
    seen: watch::Receiver<Seen>,
    watcher: JoinHandle<()>,
}

#[derive(Debug, Clone)]
enum Seen {
    /// Not yet seen.
    Nothing,
    Pod(Box<Pod>),
    /// Deleted by someone else, or the watch could not go on.
    Gone(String),
}

fn api_error(context: &str, e: kube::Error) -> BackendError {
    BackendError::Engine(format!("{context}: {}", describe(&e)))
}

fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 404)
}

impl KubernetesBackend {
    /// Connects to the API server and checks that it answers. `runner` names this runner in
    /// labels; it must be stable across restarts for `sweep`.
    pub async fn connect(runner: &str, config: KubernetesConfig) -> Result<Self, BackendError> {
        let unreachable = |e: String| {
            BackendError::Engine(format!(
                "cannot reach the Kubernetes API server ({e}); check the kubeconfig (--kubeconfig, KUBECONFIG) or the runner's service account"
            ))
        };
        let client_config = match &config.kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| unreachable(format!("{}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .map_err(|e| unreachable(e.to_string()))?
            }
            None => kube::Config::infer()
                .await
                .map_err(|e| unreachable(e.to_string()))?,
        };
        let namespace = config
            .namespace
            .clone()
            .unwrap_or_else(|| client_config.default_namespace.clone());
        let client = Client::try_from(client_config).map_err(|e| unreachable(describe(&e)))?;
        client
            .apiserver_version()
            .await
            .map_err(|e| unreachable(describe(&e)))?;
        Ok(Self {
            client,
            runner: runner.to_owned(),
            settings: PodSettings {
                namespace,
                helper_image: config.helper_image,
                grace_secs: config.grace_secs,
            },
            schedule_timeout: config.schedule_timeout,
            pull_timeout: config.pull_timeout,
            pods: Mutex::new(HashMap::new()),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.settings.namespace
    }

    fn pods_api(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }

    fn secrets_api(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }

    fn stage_pod(&self, job: &JobSpec) -> Result<Arc<StagePod>, BackendError> {
        self.pods
            .lock()
            .ok()
            .and_then(|pods| pods.get(&job.id).cloned())
            .ok_or_else(|| {
                BackendError::Engine(format!("job {} has no pod: it was not set up", job.id))
            })
    }

    /// Removes every pod and Secret this runner made (what a killed runner left).
    pub async fn sweep(&self) -> Result<(), BackendError> {
        self.remove_selected(&pod::runner_selector(&self.runner), true)
            .await
    }

    /// Pods (not being deleted) and Secrets of this runner still in the cluster.
    pub async fn leftovers(&self) -> Result<(usize, usize), BackendError> {
        let selector = ListParams::default().labels(&pod::runner_selector(&self.runner));
        let pods = self
            .pods_api()
            .list(&selector)
            .await
            .map_err(|e| api_error("listing pods", e))?;
        let secrets = self
            .secrets_api()
            .list(&selector)
            .await
            .map_err(|e| api_error("listing secrets", e))?;
        let live = pods
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count();
        Ok((live, secrets.items.len()))
    }

    /// Deletes the pods and Secrets `selector` picks; with `wait`, waits (bounded) for the
    /// pods to be gone. A stage's end does not wait: its deleted pod's containers are stopped
    /// by the kubelet within the grace period, and the pod goes a few seconds later.
    async fn remove_selected(&self, selector: &str, wait: bool) -> Result<(), BackendError> {
        let list = ListParams::default().labels(selector);
        let pods = self
            .pods_api()
            .list(&list)
            .await
            .map_err(|e| api_error("listing the stage's pods", e))?;
        let delete = DeleteParams {
            grace_period_seconds: u32::try_from(self.settings.grace_secs).ok(),
            ..DeleteParams::default()
        };
        let mut names = Vec::new();
        for pod in pods.items {
            let Some(name) = pod.metadata.name else {
                continue;
            };
            match self.pods_api().delete(&name, &delete).await {
                Ok(_) => names.push(name),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(api_error(&format!("deleting pod {name}"), e)),
            }
        }
        let secrets = self
            .secrets_api()
            .list(&list)
            .await
            .map_err(|e| api_error("listing the stage's secrets", e))?;
        for secret in secrets.items {
            let Some(name) = secret.metadata.name else {
                continue;
            };
            match self
                .secrets_api()
                .delete(&name, &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(api_error(&format!("deleting secret {name}"), e)),
            }
        }
        if !wait {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs(30 + self.settings.grace_secs.unsigned_abs());
        for name in names {
            loop {
                match self.pods_api().get_opt(&name).await {
                    Ok(None) => break,
                    Ok(Some(_)) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Ok(Some(_)) => {
                        return Err(BackendError::Engine(format!(
                            "pod {name} was still terminating 30 s after it was deleted; its node may be unreachable"
                        )));
                    }
                    Err(e) => return Err(api_error(&format!("waiting for pod {name} to go"), e)),
                }
            }
        }
        Ok(())
    }

    /// Follows the pod: every change of it is sent to `seen`, from a list and then a watch,
    /// again from the latest version whenever a watch ends, so no change is missed for long.
    fn watch_pod(&self, name: &str) -> (watch::Receiver<Seen>, JoinHandle<()>) {
        let (tx, rx) = watch::channel(Seen::Nothing);
        let api = self.pods_api();
        let name = name.to_owned();
        let handle = tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let version = match api.get_opt(&name).await {
                    Ok(Some(pod)) => {
                        let version = pod.metadata.resource_version.clone().unwrap_or_default();
                        tx.send_replace(Seen::Pod(Box::new(pod)));
                        failures = 0;
                        version
                    }
                    Ok(None) => {
                        tx.send_replace(Seen::Gone("the stage's pod was deleted".to_owned()));
                        return;
                    }
                    Err(e) => {
                        failures += 1;
                        if failures > 30 {
                            tx.send_replace(Seen::Gone(format!(
                                "the stage's pod could not be read for a minute: {}",
                                describe(&e)
                            )));
                            return;
                        }
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        continue;
                    }
                };
                let params = WatchParams::default()
                    .fields(&format!("metadata.name={name}"))
                    .timeout(60);
                let Ok(stream) = api.watch(&params, &version).await else {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                };
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod)) => {
                            tx.send_replace(Seen::Pod(Box::new(pod)));
                        }
                        Ok(WatchEvent::Deleted(_)) => {
                            tx.send_replace(Seen::Gone("the stage's pod was deleted".to_owned()));
                            return;
                        }
                        Ok(WatchEvent::Bookmark(_)) => {}
                        Ok(WatchEvent::Error(_)) | Err(_) => break,
                    }
                }
            }
        });
        (rx, handle)
    }

    /// Waits until `check` says something of the pod (`Some`), or the pod is gone or failed.
    async fn wait_for<T>(
        seen: &mut watch::Receiver<Seen>,
        mut check: impl FnMut(&Pod) -> Option<T>,
    ) -> Result<T, BackendError> {
        loop {
            {
                let current = seen.borrow_and_update();
                match &*current {
                    Seen::Nothing => {}
                    Seen::Gone(why) => return Err(BackendError::Engine(why.clone())),
                    Seen::Pod(pod) => {
                        // First: an evicted pod's step is often seen killed (exit 137)
                        // before the pod is seen gone, and it did not fail on its own.
                        if let Some(why) = pod_failed(pod) {
                            return Err(BackendError::Engine(why));
                        }
                        if let Some(found) = check(pod) {
                            return Ok(found);
                        }
                    }
                }
            }
            if seen.changed().await.is_err() {
                return Err(BackendError::Engine(
                    "the watch of the stage's pod ended".to_owned(),
                ));
            }
        }
    }

    /// The scheduler's latest reason for not placing `pod`, from its events.
    async fn scheduling_reason(&self, pod: &str, fallback: String) -> String {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        let params = ListParams::default().fields(&format!(
            "involvedObject.name={pod},reason=FailedScheduling"
        ));
        match events.list(&params).await {
            Ok(list) => list
                .items
                .into_iter()
                .max_by_key(|e| e.last_timestamp.clone().map(|t| t.0))
                .and_then(|e| e.message)
                .unwrap_or(fallback),
            Err(_) => fallback,
        }
    }

    /// Why the kubelet failed to start `container` since `since`, from its warning events
    /// (a pull that failed, a container that could not be created), if it said.
    async fn container_failure(
        &self,
        pod: &str,
        container: &str,
        image: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Option<BackendError> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        let params = ListParams::default().fields(&format!(
            "involvedObject.name={pod},involvedObject.fieldPath=spec.containers{{{container}}},type=Warning"
        ));
        let list = events.list(&params).await.ok()?;
        let mut failures: Vec<(chrono::DateTime<chrono::Utc>, String)> = list
            .items
            .into_iter()
            .filter_map(|e| {
                let at = e
                    .last_timestamp
                    .map(|t| t.0)
                    .or(e.event_time.map(|t| t.0))?;
                let at = chrono::DateTime::<chrono::Utc>::from_timestamp(at.as_second(), 0)?;
                (at >= since && e.reason.as_deref() == Some("Failed")).then_some((at, e.message?))
            })
            .collect();
        failures.sort();
        // "Failed to pull image X: why" says more than the "Error: ErrImagePull" beside it.
        let message = failures
            .iter()
            .rev()
            .map(|(_, m)| m)
            .find(|m| !m.starts_with("Error: "))
            .or(failures.last().map(|(_, m)| m))?
            .clone();
        Some(
            if message.contains("pull image") || message.contains("ErrImagePull") {
                BackendError::ImagePull {
                    image: image.to_owned(),
                    reason: message,
                }
            } else {
                BackendError::Engine(format!("container {container} could not start: {message}"))
            },
        )
    }

    /// Swaps a container's image, which makes the kubelet replace it.
    async fn set_image(&self, pod: &str, container: &str, image: &str) -> Result<(), BackendError> {
        let patch = serde_json::json!({
            "spec": { "containers": [ { "name": container, "image": image } ] }
        });
        self.pods_api()
            .patch(pod, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .map_err(|e| api_error(&format!("starting container {container}"), e))?;
        Ok(())
    }
}

/// Why the whole pod is lost (evicted, failed), if it is.
fn pod_failed(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    if pod.metadata.deletion_timestamp.is_some() {
        return Some("the stage's pod is being deleted".to_owned());
    }
    match status.reason.as_deref() {
        Some("Evicted") => Some(format!(
            "the stage's pod was evicted from its node: {}",
            status.message.as_deref().unwrap_or("no reason given")
        )),
        Some(reason) if status.phase.as_deref() == Some("Failed") => Some(format!(
            "the stage's pod failed: {reason}: {}",
            status.message.as_deref().unwrap_or_default()
        )),
        _ => None,
    }
}

fn container_status<'p>(pod: &'p Pod, name: &str) -> Option<&'p ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
}

/// Waiting reasons that end a step at once as an error (the kubelet would only retry them).
fn waiting_error(status: &ContainerStatus, image: &str) -> Option<BackendError> {
    let waiting = status.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    let message = waiting.message.clone().unwrap_or_else(|| reason.to_owned());
    match reason {
        "ImagePullBackOff" | "ErrImageNeverPull" | "InvalidImageName" => {
            Some(BackendError::ImagePull {
                image: image.to_owned(),
                reason: message,
            })
        }
        "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
            Some(BackendError::Engine(format!(
                "container {} could not start: {reason}: {message}",
                status.name
            )))
        }
        _ => None,
    }
}

/// The scheduled condition: `Some(Ok)` once scheduled, `Some(Err(why))` while unschedulable.
fn scheduled(pod: &Pod) -> Option<Result<(), String>> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")?;
    match condition.status.as_str() {
        "True" => Some(Ok(())),
        _ if condition.reason.as_deref() == Some("Unschedulable") => Some(Err(condition
            .message
            .clone()
            .unwrap_or_else(|| "no node fits it".to_owned()))),
        _ => None,
    }
}

/// How far a step's container is after its image was swapped in.
enum Progress {
    Waiting,
    /// Its own instance runs or ran.
    Started,
    /// The placeholder was stopped and nothing replaced it.
    Stalled,
}

fn started_progress(status: &ContainerStatus, placeholder: &str) -> Progress {
    let running = running_id(status).is_some_and(|id| id != placeholder);
    if running || ended_other_than(status, placeholder).is_some() {
        return Progress::Started;
    }
    let placeholder_stopped = status
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .is_some_and(|t| {
            t.container_id.as_deref().or(status.container_id.as_deref()) == Some(placeholder)
        });
    if placeholder_stopped {
        Progress::Stalled
    } else {
        Progress::Waiting
    }
}

/// The id of `container`'s instance once it runs the helper image (the pod's `gantry`
/// container, or a step's placeholder), or why it never will.
fn helper_running(
    pod: &Pod,
    container: &str,
    helper_image: &str,
) -> Option<Result<String, BackendError>> {
    let status = container_status(pod, container)?;
    if let Some(error) = waiting_error(status, helper_image) {
        return Some(Err(error));
    }
    if let Some(ended) = status.state.as_ref().and_then(|s| s.terminated.as_ref()) {
        // With `restartPolicy: Never` it will not run again.
        return Some(Err(BackendError::Engine(format!(
            "container {container} stopped before its turn ({}, exit code {}): something outside gantry stopped it",
            ended.reason.as_deref().unwrap_or("no reason given"),
            ended.exit_code
        ))));
    }
    running_id(status).map(Ok)
}

/// The id of the container instance running now, if it runs.
fn running_id(status: &ContainerStatus) -> Option<String> {
    status.state.as_ref()?.running.as_ref()?;
    status.container_id.clone()
}

/// How a container instance other than `placeholder` ended, if it did.
fn ended_other_than(status: &ContainerStatus, placeholder: &str) -> Option<Ended> {
    let terminated = status.state.as_ref()?.terminated.as_ref()?;
    let id = terminated
        .container_id
        .as_deref()
        .or(status.container_id.as_deref());
    if id == Some(placeholder) {
        return None;
    }
    Some(Ended {
        code: terminated.exit_code,
        reason: terminated.reason.clone(),
        message: terminated.message.clone(),
    })
}

#[derive(Debug, Clone)]
struct Ended {
    code: i32,
    reason: Option<String>,
    message: Option<String>,
}

#[async_trait]
impl Backend for KubernetesBackend {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    async fn setup(&self, job: &JobSpec) -> Result<(), BackendError> {
        let manifests = pod::build(&self.runner, job, &self.settings)?;
        let name = pod::pod_name(job);
        self.secrets_api()
            .create(&PostParams::default(), &manifests.env)
            .await
            .map_err(|e| api_error("creating the stage's secret", e))?;
        if let Some(pull) = &manifests.pull {
            self.secrets_api()
                .create(&PostParams::default(), pull)
                .await
                .map_err(|e| api_error("creating the stage's image pull secret", e))?;
        }
        self.pods_api()
            .create(&PostParams::default(), &manifests.pod)
            .await
            .map_err(|e| api_error("creating the stage's pod", e))?;
        let (mut seen, watcher) = self.watch_pod(&name);
        if let Ok(mut pods) = self.pods.lock() {
            pods.insert(
                job.id.clone(),
                Arc::new(StagePod {
                    name: name.clone(),
                    seen: seen.clone(),
                    watcher,
                }),
            );
        }
        // Placed, or refused with the scheduler's reason once it has been refused for long.
        let mut unschedulable_since: Option<tokio::time::Instant> = None;
        loop {
            let unschedulable = {
                let current = seen.borrow_and_update();
                match &*current {
                    Seen::Nothing => None,
                    Seen::Gone(why) => return Err(BackendError::Engine(why.clone())),
                    Seen::Pod(pod) => {
                        if let Some(why) = pod_failed(pod) {
                            return Err(BackendError::Engine(why));
                        }
                        match scheduled(pod) {
                            Some(Ok(())) => return Ok(()),
                            Some(Err(why)) => Some(why),
                            None => None,
                        }
                    }
                }
            };
            if let Some(why) = unschedulable {
                let since = *unschedulable_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= self.schedule_timeout {
                    let reason = self.scheduling_reason(&name, why).await;
                    return Err(BackendError::Engine(format!(
                        "no node could take the stage's pod for {} s: {reason}",
                        since.elapsed().as_secs()
                    )));
                }
            }
            tokio::select! {
                changed = seen.changed() => if changed.is_err() {
                    return Err(BackendError::Engine("the watch of the stage's pod ended".to_owned()));
                },
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    async fn import_workspace(&self, job: &JobSpec, dir: &Path) -> Result<(), BackendError> {
        let stage_pod = self.stage_pod(job)?;
        let archive = crate::backend::pack_directory(dir).await?;
        let mut seen = stage_pod.seen.clone();
        Self::wait_for(&mut seen, |pod| {
            helper_running(pod, pod::HELPER, &self.settings.helper_image)
        })
        .await??;
        let busybox = pod::HELPER_BUSYBOX;
        let script = format!(
            "{busybox} head -c {} | {busybox} tar -x -f - -C \"$0\"",
            archive.len()
        );
        let params = AttachParams::default()
            .container(pod::HELPER)
            .stdin(true)
            .stdout(false)
            .stderr(true);
        let mut process = self
            .pods_api()
            .exec(
                &stage_pod.name,
                vec![busybox, "sh", "-c", &script, &job.stage.workspace],
                &params,
            )
            .await
            .map_err(|e| api_error("copying the workspace into the pod", e))?;
        let status = process.take_status();
        let mut stderr = process.stderr();
        if let Some(mut stdin) = process.stdin() {
            stdin
                .write_all(&archive)
                .await
                .map_err(|e| BackendError::io("copying the workspace into the pod", e))?;
            let _ = stdin.flush().await;
        }
        let mut said = Vec::new();
        if let Some(stderr) = stderr.as_mut() {
            let _ = tokio::io::AsyncReadExt::read_to_end(stderr, &mut said).await;
        }
        let status = match status {
            Some(status) => status.await,
            None => None,
        };
        let _ = process.join().await;
        match status {
            Some(s) if s.status.as_deref() == Some("Success") => Ok(()),
            other => Err(BackendError::Engine(format!(
                "filling the workspace in the pod failed: {} {}",
                other.and_then(|s| s.message).unwrap_or_default(),
                String::from_utf8_lossy(&said).trim()
            ))),
        }
    }

    async fn run_step(
        &self,
        job: &JobSpec,
        step: &StepSpec<'_>,
        output: Output,
        cancel: CancellationToken,
    ) -> Result<StepExit, BackendError> {
        let plan_step = step.step;
        let Some(image) = plan_step.image.clone() else {
            return Err(BackendError::Unsupported(format!(
                "step `{}` has no image",
                plan_step.name
            )));
        };
        if image == self.settings.helper_image {
            return Err(BackendError::Unsupported(format!(
                "step `{}` runs the helper image `{image}`, which holds every container of the pod until its turn; use another image",
                plan_step.name
            )));
        }
        if job.environments.get(&plan_step.name) != Some(&step.environment) {
            return Err(BackendError::Engine(format!(
                "step `{}` has other variables than when its pod was made",
                plan_step.name
            )));
        }
        let stage_pod = self.stage_pod(job)?;
        let container = pod::container_name(plan_step, step.attempt);
        let mut seen = stage_pod.seen.clone();
        let helper = self.settings.helper_image.clone();
        // Its placeholder runs: the instance the step's will replace.
        let placeholder = tokio::select! {
            _ = cancel.cancelled() => return Ok(StepExit::Killed),
            found = Self::wait_for(&mut seen, |pod| helper_running(pod, &container, &helper)) => found??,
        };
        self.set_image(&stage_pod.name, &container, &image).await?;
        // Its own instance appears (running or already ended), or cannot.
        let swapped_at = tokio::time::Instant::now();
        let since = chrono::Utc::now() - chrono::Duration::seconds(1);
        loop {
            let progress = {
                let current = seen.borrow_and_update();
                match &*current {
                    Seen::Nothing => Progress::Waiting,
                    Seen::Gone(why) => return Err(BackendError::Engine(why.clone())),
                    Seen::Pod(pod) => {
                        if let Some(why) = pod_failed(pod) {
                            return Err(BackendError::Engine(why));
                        }
                        match container_status(pod, &container) {
                            None => Progress::Waiting,
                            Some(status) => {
                                if let Some(error) = waiting_error(status, &image) {
                                    return Err(error);
                                }
                                started_progress(status, &placeholder)
                            }
                        }
                    }
                }
            };
            match progress {
                Progress::Started => break,
                // The kubelet stopped the placeholder and could not start the step (with
                // `restartPolicy: Never` it will not try again): its events say why.
                Progress::Stalled => {
                    if let Some(error) = self
                        .container_failure(&stage_pod.name, &container, &image, since)
                        .await
                    {
                        return Err(error);
                    }
                }
                Progress::Waiting => {}
            }
            if swapped_at.elapsed() > self.pull_timeout {
                return Err(BackendError::ImagePull {
                    image,
                    reason: format!(
                        "its container had not started {} s after it was asked to (a pull that slow, or a node that does not answer)",
                        self.pull_timeout.as_secs()
                    ),
                });
            }
            tokio::select! {
                _ = cancel.cancelled() => {
                    self.set_image(&stage_pod.name, &container, &helper).await?;
                    return Ok(StepExit::Killed);
                }
                changed = seen.changed() => if changed.is_err() {
                    return Err(BackendError::Engine("the watch of the stage's pod ended".to_owned()));
                },
                _ = tokio::time::sleep(Duration::from_millis(700)) => {}
            }
        }
        // Its log to the end (it ends when the container does), while a cancel swaps the
        // placeholder back in, which stops the step with the pod's grace period.
        let log = self.follow_log(&stage_pod.name, &container, output.clone());
        let mut log = std::pin::pin!(log);
        let mut killed = false;
        let log_result = loop {
            tokio::select! {
                result = &mut log => break result,
                _ = cancel.cancelled(), if !killed => {
                    killed = true;
                    self.set_image(&stage_pod.name, &container, &helper).await?;
                }
            }
        };
        log_result?;
        if killed {
            // Its log ended: it has stopped (the placeholder may already run again, so its
            // end may never show as the container's state).
            return Ok(StepExit::Killed);
        }
        let ended = Self::wait_for(&mut seen, |pod| {
            ended_other_than(container_status(pod, &container)?, &placeholder)
        })
        .await?;
        match ended.reason.as_deref() {
            Some("ContainerCannotRun" | "StartError") => Err(BackendError::Engine(format!(
                "step `{}` could not start: {}",
                plan_step.name,
                ended.message.unwrap_or_default()
            ))),
            _ => Ok(StepExit::Exited(ended.code)),
        }
    }

    async fn destroy(&self, job: &JobSpec) -> Result<(), BackendError> {
        let stage_pod = self.pods.lock().ok().and_then(|mut p| p.remove(&job.id));
        let removed = self
            .remove_selected(&pod::job_selector(&self.runner, job), false)
            .await;
        if let Some(stage_pod) = stage_pod {
            stage_pod.watcher.abort();
        }
        removed
    }
}

impl KubernetesBackend {
    /// Sends the container's log to `output` until it ends.
    async fn follow_log(
        &self,
        pod: &str,
        container: &str,
        output: Output,
    ) -> Result<(), BackendError> {
        let params = LogParams {
            container: Some(container.to_owned()),
            follow: true,
            ..LogParams::default()
        };
        let stream = self
            .pods_api()
            .log_stream(pod, &params)
            .await
            .map_err(|e| api_error(&format!("reading the log of container {container}"), e))?;
        let mut stream = std::pin::pin!(stream);
        loop {
            let chunk = stream.fill_buf().await.map_err(|e| {
                BackendError::io(format!("reading the log of container {container}"), e)
            })?;
            if chunk.is_empty() {
                return Ok(());
            }
            let bytes = chunk.to_vec();
            let n = bytes.len();
            stream.as_mut().consume(n);
            if output.send(bytes).await.is_err() {
                return Ok(());
            }
        }
    }
}
