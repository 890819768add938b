//! Caches between builds: named volumes on the runner's engine that outlive the stage,
//! one per repository, scope (branch, pull request, tag) and cache name. A scope's first
//! build starts from the default branch's copy; a cache past its age is started afresh and
//! one grown past the size cap after a stage is removed. They carry no runner or job label,
//! so stage teardown and runner sweeps leave them.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, VolumeCreateRequest};
use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveVolumeOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt;
use gantry_pipeline::plan::CacheSpec;
use sha2::{Digest, Sha256};

use super::{engine, is_not_found};
use crate::backend::BackendError;

/// The labels of the job the containers that read and fill caches work for.
pub type Labels = HashMap<String, String>;

/// Marks a cache volume; its value is `REPO SCOPE NAME`, for people reading `docker volume ls`.
pub const LABEL_CACHE: &str = "gantry.cache";
/// When the cache volume was created, seconds since the epoch.
const LABEL_CREATED: &str = "gantry.cache.created";

/// The engine's name of one cache: the same for every runner and build that shares it.
pub fn volume_name(spec: &CacheSpec, scope: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{}\0{scope}\0{name}", spec.repo).as_bytes());
    format!("gantry-cache-{}", hex::encode(&digest[..12]))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Makes each cache of the stage ready: expired caches are removed first, a missing one is
/// created and filled from its fallback scope's. `image` is any image of the stage, used for
/// the containers (never started) that copy a fallback in.
pub async fn prepare(
    docker: &Docker,
    spec: &CacheSpec,
    names: &[&str],
    image: Option<&str>,
    labels: &Labels,
) -> Result<(), BackendError> {
    expire(docker, spec.max_age_secs).await?;
    for name in names {
        let volume = volume_name(spec, &spec.scope, name);
        match docker.inspect_volume(&volume).await {
            Ok(_) => continue,
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(engine("reading a cache volume", e)),
        }
        let volume_labels = HashMap::from([
            (
                LABEL_CACHE.to_owned(),
                format!("{} {} {name}", spec.repo, spec.scope),
            ),
            (LABEL_CREATED.to_owned(), now().to_string()),
        ]);
        docker
            .create_volume(VolumeCreateRequest {
                name: Some(volume.clone()),
                labels: Some(volume_labels),
                ..Default::default()
            })
            .await
            .map_err(|e| engine("creating a cache volume", e))?;
        let (Some(fallback), Some(image)) = (&spec.fallback, image) else {
            continue;
        };
        let from = volume_name(spec, fallback, name);
        match docker.inspect_volume(&from).await {
            Ok(_) => copy(docker, (image, labels), &from, &volume, spec.max_bytes).await?,
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(engine("reading a cache volume", e)),
        }
    }
    Ok(())
}

/// Removes caches created longer than `max_age_secs` ago (one in use by a running stage
/// stays until its next use).
async fn expire(docker: &Docker, max_age_secs: u64) -> Result<(), BackendError> {
    let filters = HashMap::from([("label", vec![LABEL_CREATED.to_owned()])]);
    let volumes = docker
        .list_volumes(Some(
            ListVolumesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| engine("listing cache volumes", e))?;
    let oldest = now().saturating_sub(i64::try_from(max_age_secs).unwrap_or(i64::MAX));
    for volume in volumes.volumes.unwrap_or_default() {
        let created = volume
            .labels
            .get(LABEL_CREATED)
            .and_then(|c| c.parse::<i64>().ok())
            .unwrap_or(0);
        if created < oldest {
            remove(docker, &volume.name).await;
        }
    }
    Ok(())
}

async fn remove(docker: &Docker, volume: &str) {
    let options = RemoveVolumeOptionsBuilder::default().build();
    if let Err(e) = docker.remove_volume(volume, Some(options)).await
        && !is_not_found(&e)
    {
        tracing::info!(%volume, error = %e, "a cache volume stays (in use?)");
    }
}

/// Copies one volume's files into another through two containers that are created and
/// never started: the archive of the first goes into the second, mounted at the same path.
/// A fallback bigger than `max_bytes` is not copied (the cache starts empty).
async fn copy(
    docker: &Docker,
    (image, labels): (&str, &Labels),
    from: &str,
    to: &str,
    max_bytes: u64,
) -> Result<(), BackendError> {
    let archive = match read_archive(docker, (image, labels), from, max_bytes, true).await? {
        Archive::Within(bytes) => bytes,
        Archive::Over => {
            tracing::info!(%from, "the default branch's cache is over the size cap: not copied");
            return Ok(());
        }
    };
    let target = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            mounted(image, to, labels),
        )
        .await
        .map_err(|e| engine("creating the container that fills a cache", e))?;
    let options = UploadToContainerOptionsBuilder::default().path(AT).build();
    let uploaded = docker
        .upload_to_container(
            &target.id,
            Some(options),
            bollard::body_full(archive.into()),
        )
        .await
        .map_err(|e| engine("filling a cache", e));
    drop_container(docker, &target.id).await;
    uploaded
}

/// Where the containers that read and fill caches mount them.
const AT: &str = "/gantry-cache";

/// A container (created, never started) with `volume` mounted at [`AT`], carrying the job's
/// labels so that a sweep removes it if the runner dies before it does.
fn mounted(image: &str, volume: &str, labels: &Labels) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(image.to_owned()),
        labels: Some(labels.clone()),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{volume}:{AT}")]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn drop_container(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    if let Err(e) = docker.remove_container(id, Some(options)).await {
        tracing::warn!(container = %id, error = %e, "a cache copy container stays");
    }
}

/// After a stage: a cache of it grown past the cap is removed, so the next build starts it
/// afresh rather than fill the runner's disk. A cache is measured by reading its archive
/// (the engine's own disk-usage answer differs across API versions), up to the cap at most.
/// Returns the caches removed.
pub async fn enforce_cap(
    docker: &Docker,
    spec: &CacheSpec,
    names: &[&str],
    (image, labels): (&str, &Labels),
) -> Result<Vec<String>, BackendError> {
    let mut removed = Vec::new();
    for name in names {
        let volume = volume_name(spec, &spec.scope, name);
        if let Archive::Over =
            read_archive(docker, (image, labels), &volume, spec.max_bytes, false).await?
        {
            remove(docker, &volume).await;
            removed.push((*name).to_owned());
        }
    }
    Ok(removed)
}

/// A volume's archive, read no further than a limit.
enum Archive {
    /// The whole archive (empty when it was only measured).
    Within(Vec<u8>),
    Over,
}

/// Reads the archive of `volume` through a container that is created and never started,
/// keeping its bytes when `keep`; stops past `limit` bytes.
async fn read_archive(
    docker: &Docker,
    (image, labels): (&str, &Labels),
    volume: &str,
    limit: u64,
    keep: bool,
) -> Result<Archive, BackendError> {
    let reader = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            mounted(image, volume, labels),
        )
        .await
        .map_err(|e| engine("creating the container that reads a cache", e))?;
    let options = DownloadFromContainerOptionsBuilder::default()
        .path(&format!("{AT}/."))
        .build();
    let mut stream = docker.download_from_container(&reader.id, Some(options));
    let mut size: u64 = 0;
    let mut bytes = Vec::new();
    let mut result = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                size = size.saturating_add(chunk.len() as u64);
                if size > limit {
                    result = Some(Ok(Archive::Over));
                    break;
                }
                if keep {
                    bytes.extend_from_slice(&chunk);
                }
            }
            Err(e) => {
                result = Some(Err(engine("reading a cache", e)));
                break;
            }
        }
    }
    drop(stream);
    drop_container(docker, &reader.id).await;
    result.unwrap_or(Ok(Archive::Within(bytes)))
}
