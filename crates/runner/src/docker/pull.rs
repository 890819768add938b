//! Images on the runner: each pulled once at a time per runner (stages that need the same
//! image wait for one pull), within the runner's pull timeout, with the login of its
//! registry, and told in the step's log as it happens (which image, from where, each layer
//! once, how far the downloads got every few seconds, bytes and time at the end), or that
//! the image was already here. Each line starts with `gantry: `, as every line gantry adds to
//! a step's log does, so that readers (and the log view) tell them from the step's output.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt;
use gantry_pipeline::model::Pull;
use gantry_proto::registry::RegistryCredential;
use tokio::sync::mpsc;

use super::split_image;
use crate::backend::BackendError;

/// How long a pull may take by default (`--pull-timeout`).
pub const DEFAULT_PULL_TIMEOUT: Duration = Duration::from_secs(600);

/// The images of one runner's engine.
#[derive(Debug)]
pub(super) struct Pulls {
    /// Images known to be present, so that `if-not-exists` asks the engine once.
    present: Mutex<HashSet<String>>,
    /// One pull per image at a time.
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    timeout: Duration,
}

impl Pulls {
    pub(super) fn new(timeout: Duration) -> Self {
        Self {
            present: Mutex::default(),
            in_flight: Mutex::default(),
            timeout,
        }
    }

    fn known(&self, image: &str) -> bool {
        self.present.lock().is_ok_and(|p| p.contains(image))
    }

    /// Makes sure `image` is present, pulling it as `pull` says with `login` when its
    /// registry needs one; what a pull does is told to `tell` as it happens.
    pub(super) async fn ensure(
        &self,
        docker: &Docker,
        image: &str,
        pull: Pull,
        login: Option<&RegistryCredential>,
        tell: &mpsc::UnboundedSender<String>,
    ) -> Result<(), BackendError> {
        if self.known(image) && pull != Pull::Always {
            say(tell, already_here(image));
            return Ok(());
        }
        let gate = self
            .in_flight
            .lock()
            .map(|mut pulls| Arc::clone(pulls.entry(image.to_owned()).or_default()))
            .unwrap_or_default();
        let fetched = self
            .one_at_a_time(&gate, docker, image, pull, login, tell)
            .await;
        // The last stage done with this image lets go of its gate: a runner meets many images
        // (one tag per commit) and keeps none of their gates.
        if let Ok(mut pulls) = self.in_flight.lock()
            && Arc::strong_count(&gate) <= 2
        {
            pulls.remove(image);
        }
        fetched
    }

    /// The pull of `image` under its `gate`, unless another stage's pull ended while this one
    /// waited for it.
    async fn one_at_a_time(
        &self,
        gate: &tokio::sync::Mutex<()>,
        docker: &Docker,
        image: &str,
        pull: Pull,
        login: Option<&RegistryCredential>,
        tell: &mpsc::UnboundedSender<String>,
    ) -> Result<(), BackendError> {
        let waited = gate.try_lock().is_err();
        let _held = gate.lock().await;
        if waited && self.known(image) {
            say(
                tell,
                format!(
                    "{image} was pulled for another stage on this runner while this one waited"
                ),
            );
            return Ok(());
        }
        let fetched = tokio::time::timeout(self.timeout, fetch(docker, image, pull, login, tell))
            .await
            .unwrap_or_else(|_| {
                Err(BackendError::ImagePull {
                    image: image.to_owned(),
                    reason: format!(
                        "the pull took longer than this runner's pull timeout ({}; `--pull-timeout`)",
                        match self.timeout.as_secs() {
                            0 => format!("{} ms", self.timeout.as_millis()),
                            secs => format!("{secs} s"),
                        }
                    ),
                })
            });
        if fetched.is_ok()
            && let Ok(mut present) = self.present.lock()
        {
            present.insert(image.to_owned());
        }
        fetched
    }
}

/// Tells one line of gantry's in the step's log.
fn say(tell: &mpsc::UnboundedSender<String>, line: String) {
    let _ = tell.send(format!("gantry: {line}"));
}

fn already_here(image: &str) -> String {
    format!("image {image} is already on this runner")
}

/// How often a long download says how far it got.
const DOWNLOADING_EVERY: Duration = Duration::from_secs(5);

/// What a pull's progress events add up to: each layer's size once, told when it is done,
/// and how far the downloads got.
#[derive(Default)]
struct Progress {
    sizes: BTreeMap<String, i64>,
    downloaded: BTreeMap<String, i64>,
    done: Vec<String>,
    lines: Vec<String>,
    /// Lines already told.
    told: usize,
}

impl Progress {
    fn event(
        &mut self,
        layer: Option<String>,
        status: Option<&str>,
        current: Option<i64>,
        total: Option<i64>,
    ) {
        let (Some(layer), Some(status)) = (layer, status) else {
            return;
        };
        if let Some(total) = total.filter(|t| *t > 0) {
            self.sizes.insert(layer.clone(), total);
        }
        if status == "Downloading"
            && let Some(current) = current
        {
            self.downloaded.insert(layer.clone(), current);
        }
        let short: String = layer.chars().take(12).collect();
        match status {
            "Pull complete" => {
                let size = self.sizes.get(&layer).copied().unwrap_or(0);
                self.lines
                    .push(format!("layer {short}: {}", human_bytes(size)));
                self.done.push(layer);
            }
            "Already exists" => {
                self.lines
                    .push(format!("layer {short}: already on this runner"));
            }
            _ => {}
        }
    }

    /// How far the downloads got, when any is under way.
    fn downloading(&self) -> Option<String> {
        let got: i64 = self.downloaded.values().sum();
        let of: i64 = self
            .downloaded
            .keys()
            .filter_map(|layer| self.sizes.get(layer))
            .sum();
        (got > 0).then(|| format!("downloading: {} of {}", human_bytes(got), human_bytes(of)))
    }

    /// The lines not told yet.
    fn untold(&mut self) -> Vec<String> {
        let new = self.lines[self.told..].to_vec();
        self.told = self.lines.len();
        new
    }

    fn bytes(&self) -> i64 {
        self.done
            .iter()
            .filter_map(|layer| self.sizes.get(layer))
            .sum()
    }
}

fn human_bytes(bytes: i64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / f64::from(1 << 20)),
        b if b >= 1 << 10 => format!("{:.1} kB", b as f64 / f64::from(1 << 10)),
        b => format!("{b} B"),
    }
}

async fn fetch(
    docker: &Docker,
    image: &str,
    pull: Pull,
    login: Option<&RegistryCredential>,
    tell: &mpsc::UnboundedSender<String>,
) -> Result<(), BackendError> {
    let present = docker.inspect_image(image).await.is_ok();
    match pull {
        Pull::IfNotExists | Pull::Never if present => {
            say(tell, already_here(image));
            return Ok(());
        }
        Pull::Never => {
            return Err(BackendError::ImagePull {
                image: image.to_owned(),
                reason: "it is not on this machine and the step says `pull: never`".to_owned(),
            });
        }
        _ => {}
    }
    let host = gantry_proto::registry::image_registry(image);
    let how = match login {
        Some(login) => format!(
            "with the login of `{}` from {}",
            login.username, login.source
        ),
        None => "without a login".to_owned(),
    };
    let mut progress = Progress::default();
    progress
        .lines
        .push(format!("pulling {image} from {host} {how}"));
    let tell_new = |progress: &mut Progress| {
        for line in progress.untold() {
            say(tell, line);
        }
    };
    tell_new(&mut progress);
    let started = Instant::now();
    let mut last_told = Instant::now();
    let (from_image, tag) = split_image(image);
    let options = CreateImageOptionsBuilder::default()
        .from_image(from_image)
        .tag(tag)
        .build();
    let credentials = login.map(|login| DockerCredentials {
        username: Some(login.username.clone()),
        password: Some(login.password.clone()),
        serveraddress: Some(login.host.clone()),
        ..Default::default()
    });
    let mut events = docker.create_image(Some(options), None, credentials);
    let mut failure = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(info) => {
                if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                    failure = Some(detail);
                }
                let detail = info.progress_detail.unwrap_or_default();
                progress.event(
                    info.id,
                    info.status.as_deref(),
                    detail.current,
                    detail.total,
                );
                if last_told.elapsed() >= DOWNLOADING_EVERY
                    && let Some(line) = progress.downloading()
                {
                    progress.lines.push(line);
                    last_told = Instant::now();
                }
                tell_new(&mut progress);
            }
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
    }
    match failure {
        // `pull: always` still runs a present image when the registry cannot be reached.
        Some(reason) if present => {
            progress.lines.push(format!(
                "the pull failed ({}); running the copy already on this runner",
                pull_failure(image, login, &reason)
            ));
            tell_new(&mut progress);
            Ok(())
        }
        Some(reason) => Err(BackendError::ImagePull {
            image: image.to_owned(),
            reason: pull_failure(image, login, &reason),
        }),
        None => {
            let layers = progress.done.len();
            let bytes = human_bytes(progress.bytes());
            progress.lines.push(format!(
                "pulled {image}: {layers} new layer{}, {bytes} in {:.1} s",
                if layers == 1 { "" } else { "s" },
                started.elapsed().as_secs_f64()
            ));
            tell_new(&mut progress);
            Ok(())
        }
    }
}

/// What a failed pull means for the user, from the engine's words: a login refused (naming
/// the host and where the login came from, never its password), a login missing (how to add
/// one), an image that does not exist, a registry that cannot be reached.
fn pull_failure(image: &str, login: Option<&RegistryCredential>, engine: &str) -> String {
    let host = gantry_proto::registry::image_registry(image);
    let said = engine.to_ascii_lowercase();
    let refused = [
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "denied",
    ]
    .iter()
    .any(|word| said.contains(word));
    if refused {
        return match login {
            Some(login) => format!(
                "registry {host} refused the login of `{}` from {}: check that credential ({engine})",
                login.username, login.source
            ),
            None => format!(
                "registry {host} needs a login and gantry has none for it: add one with `gantry registry add OWNER/REPO {host} --username USER --password-stdin`, or name a secret holding a Docker config.json in the pipeline's `image_pull_secrets` ({engine})"
            ),
        };
    }
    if ["manifest unknown", "not found", "does not exist"]
        .iter()
        .any(|word| said.contains(word))
    {
        return format!("the image does not exist in registry {host} ({engine})");
    }
    if [
        "connection refused",
        "no such host",
        "dial tcp",
        "i/o timeout",
        "timeout",
        "network is unreachable",
    ]
    .iter()
    .any(|word| said.contains(word))
    {
        return format!("registry {host} cannot be reached ({engine})");
    }
    engine.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The engine's words for a failed pull become what the user can do about it, naming the
    /// registry and the login's source, never its password.
    #[test]
    fn a_failed_pull_says_what_to_do() {
        let login = RegistryCredential {
            host: "127.0.0.1:5055".into(),
            username: "ci".into(),
            password: "hunter2".into(),
            source: "registry entry of acme/app".into(),
        };
        let image = "127.0.0.1:5055/gantry/busybox:latest";
        let refused = pull_failure(
            image,
            Some(&login),
            "Head \"http://127.0.0.1:5055/v2/gantry/busybox/manifests/latest\": unauthorized: authentication required",
        );
        assert!(
            refused.starts_with(
                "registry 127.0.0.1:5055 refused the login of `ci` from registry entry of acme/app"
            ),
            "{refused}"
        );
        assert!(!refused.contains("hunter2"));
        let missing = pull_failure(
            image,
            None,
            "Head \"http://127.0.0.1:5055/v2/gantry/busybox/manifests/latest\": no basic auth credentials",
        );
        assert!(missing.contains("needs a login and gantry has none for it: add one with `gantry registry add OWNER/REPO 127.0.0.1:5055"), "{missing}");
        assert!(missing.contains("image_pull_secrets"), "{missing}");
        let absent = pull_failure(
            image,
            Some(&login),
            "manifest for 127.0.0.1:5055/gantry/nope:latest not found: manifest unknown",
        );
        assert!(
            absent.starts_with("the image does not exist in registry 127.0.0.1:5055"),
            "{absent}"
        );
        let down = pull_failure(
            "ghcr.io/a/b",
            None,
            "Get \"https://ghcr.io/v2/\": dial tcp: lookup ghcr.io: no such host",
        );
        assert!(
            down.starts_with("registry ghcr.io cannot be reached"),
            "{down}"
        );
    }

    /// Progress events become one line per layer when it is done, never one per event.
    #[test]
    fn layers_are_told_once_with_their_size() {
        let mut progress = Progress::default();
        for (layer, status, current, total) in [
            ("aaaa1111bbbb2222", "Pulling fs layer", None, None),
            (
                "aaaa1111bbbb2222",
                "Downloading",
                Some(1024 * 1024),
                Some(3 * 1024 * 1024),
            ),
            (
                "aaaa1111bbbb2222",
                "Downloading",
                Some(2 * 1024 * 1024),
                Some(3 * 1024 * 1024),
            ),
            ("cccc", "Already exists", None, None),
        ] {
            progress.event(Some(layer.to_owned()), Some(status), current, total);
        }
        assert_eq!(
            progress.downloading().as_deref(),
            Some("downloading: 2.0 MB of 3.0 MB")
        );
        assert_eq!(progress.untold(), ["layer cccc: already on this runner"]);
        for (layer, status, total) in [
            ("aaaa1111bbbb2222", "Download complete", None),
            ("aaaa1111bbbb2222", "Extracting", Some(3 * 1024 * 1024)),
            ("aaaa1111bbbb2222", "Pull complete", None),
        ] {
            progress.event(Some(layer.to_owned()), Some(status), None, total);
        }
        progress.event(None, Some("Digest: sha256:abc"), None, None);
        assert_eq!(progress.untold(), ["layer aaaa1111bbbb: 3.0 MB"]);
        assert_eq!(
            progress.lines,
            [
                "layer cccc: already on this runner",
                "layer aaaa1111bbbb: 3.0 MB"
            ]
        );
        assert_eq!(progress.bytes(), 3 * 1024 * 1024);
    }
}
