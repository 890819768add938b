//! The local backend: each step is a host process (`sh -c SCRIPT`) in a temporary workspace
//! folder of its own, with the step's environment. No images, no isolation: for machines
//! without Docker, for trusted pipelines (`type: exec`) and for fast tests.
//!
//! Every step runs in its own process group, so that cancelling it stops what its script
//! started too (a `sleep` in a loop, a server in the background), and nothing holds its
//! output open after it is gone.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, BackendError, JobSpec, Output, StepExit, StepSpec};

/// Host variables a step keeps, so that tools can be found and behave.
const PASSED_THROUGH: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TERM",
];

/// How long a cancelled step gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_millis(1500);

#[derive(Debug)]
pub struct LocalBackend {
    /// Where workspaces are made: one folder per job.
    root: PathBuf,
}

impl LocalBackend {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The folder under which each job gets its own.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Workspaces under the system's temporary folder.
    pub fn in_temp_dir() -> Self {
        Self::new(std::env::temp_dir().join("gantry-local"))
    }

    fn job_dir(&self, job: &JobSpec) -> PathBuf {
        let safe: String = job
            .id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.root.join(safe)
    }

    /// The job's workspace folder, where `stage.workspace` (a container path) is for docker.
    pub fn workspace(&self, job: &JobSpec) -> PathBuf {
        self.job_dir(job).join("workspace")
    }
}

#[async_trait]
impl Backend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn setup(&self, job: &JobSpec) -> Result<(), BackendError> {
        let workspace = self.workspace(job);
        tokio::fs::create_dir_all(&workspace).await.map_err(|e| {
            BackendError::io(format!("creating the workspace {}", workspace.display()), e)
        })?;
        Ok(())
    }

    async fn import_workspace(&self, job: &JobSpec, dir: &Path) -> Result<(), BackendError> {
        let from = dir.to_owned();
        let to = self.workspace(job);
        tokio::task::spawn_blocking(move || copy_tree(&from, &to))
            .await
            .map_err(|e| BackendError::Engine(format!("copying the workspace failed: {e}")))?
    }

    async fn run_step(
        &self,
        job: &JobSpec,
        step: &StepSpec<'_>,
        output: Output,
        cancel: CancellationToken,
    ) -> Result<StepExit, BackendError> {
        let plan_step = step.step;
        let Some(script) = &plan_step.script else {
            return Err(BackendError::Unsupported(format!(
                "step `{}` has no commands: plugins need the docker backend",
                plan_step.name
            )));
        };
        if !plan_step.options.is_empty() || plan_step.privileged {
            return Err(BackendError::Unsupported(format!(
                "step `{}` sets Docker container options (privileged, dns, devices, ports, limits...), which a step run on the runner's host cannot honour: run it on a runner with Docker",
                plan_step.name
            )));
        }
        let workspace = self.workspace(job);
        let container_workspace = job.stage.workspace.as_str();
        // Steps see the real folder wherever the plan says the workspace is.
        let working_dir = match plan_step.working_dir.strip_prefix(container_workspace) {
            Some(rest) => workspace.join(rest.trim_start_matches('/')),
            None => workspace.clone(),
        };
        let mut command = Command::new(&plan_step.shell);
        command
            .arg("-c")
            .arg(script)
            .current_dir(&working_dir)
            .env_clear()
            .envs(
                PASSED_THROUGH
                    .iter()
                    .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))),
            )
            .envs(&step.environment)
            .env("CI_WORKSPACE", &workspace)
            .env("DRONE_WORKSPACE", &workspace)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| {
            BackendError::io(
                format!(
                    "starting `{}` for step `{}`",
                    plan_step.shell, plan_step.name
                ),
                e,
            )
        })?;
        let group = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(Pid::from_raw);
        let _group_guard = GroupGuard(group);
        let stdout = child
            .stdout
            .take()
            .map(|s| tokio::spawn(pump(s, output.clone())));
        let stderr = child
            .stderr
            .take()
            .map(|s| tokio::spawn(pump(s, output.clone())));
        drop(output);
        let exit = tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|e| BackendError::io(format!("waiting for step `{}`", plan_step.name), e))?;
                // The script is done; anything it left running in its group goes with it.
                signal_group(group, Signal::KILL);
                StepExit::Exited(status.code().unwrap_or(128 + 9))
            }
            () = cancel.cancelled() => {
                signal_group(group, Signal::TERM);
                if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
                    signal_group(group, Signal::KILL);
                    let _ = child.wait().await;
                }
                signal_group(group, Signal::KILL);
                StepExit::Killed
            }
        };
        for pump in [stdout, stderr].into_iter().flatten() {
            let _ = pump.await;
        }
        Ok(exit)
    }

    async fn destroy(&self, job: &JobSpec) -> Result<(), BackendError> {
        let dir = self.job_dir(job);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BackendError::io(format!("removing {}", dir.display()), e)),
        }
    }
}

/// Kills the step's process group when the step is dropped half-way (its task aborted).
struct GroupGuard(Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        signal_group(self.0, Signal::KILL);
    }
}

fn signal_group(group: Option<Pid>, signal: Signal) {
    if let Some(group) = group {
        // The group may be gone already; that is the point.
        let _ = kill_process_group(group, signal);
    }
}

async fn pump(mut from: impl AsyncRead + Unpin, to: Output) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.send(buffer[..n].to_vec()).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), BackendError> {
    std::fs::create_dir_all(to)
        .map_err(|e| BackendError::io(format!("creating {}", to.display()), e))?;
    let entries = std::fs::read_dir(from)
        .map_err(|e| BackendError::io(format!("reading {}", from.display()), e))?;
    for entry in entries {
        let entry =
            entry.map_err(|e| BackendError::io(format!("reading {}", from.display()), e))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry
            .file_type()
            .map_err(|e| BackendError::io(format!("reading {}", source.display()), e))?;
        if kind.is_dir() {
            copy_tree(&source, &target)?;
        } else if kind.is_symlink() {
            let link = std::fs::read_link(&source)
                .map_err(|e| BackendError::io(format!("reading {}", source.display()), e))?;
            std::os::unix::fs::symlink(&link, &target)
                .map_err(|e| BackendError::io(format!("linking {}", target.display()), e))?;
        } else {
            std::fs::copy(&source, &target)
                .map_err(|e| BackendError::io(format!("copying {}", source.display()), e))?;
        }
    }
    Ok(())
}
