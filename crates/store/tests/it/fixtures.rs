//! What the store's tests and its benchmark build on: a two-pipeline file, a repository, a
//! runner's claim. Shared by path with `benches/store.rs` (a bench cannot use a test's modules).

use std::collections::BTreeMap;

use gantry_store::{ClaimRequest, NewRepo, Store, Visibility, now_ms};

pub const TWO_STAGES: &str = "\
kind: pipeline
name: build
clone: {disable: true}
steps:
  - name: compile
    image: busybox
    commands: [make]
  - name: test
    image: busybox
    commands: [make test]
---
kind: pipeline
name: deploy
clone: {disable: true}
depends_on: [build]
steps:
  - name: ship
    image: busybox
    commands: [ship]
";

pub async fn repo(store: &Store, name: &str) -> gantry_store::Repo {
    store
        .create_repo(&NewRepo {
            owner: "acme".into(),
            name: name.into(),
            clone_url: format!("https://git.example/acme/{name}.git"),
            link: String::new(),
            webhook_secret: "s3cret".into(),
            config_path: String::new(),
            default_branch: "main".into(),
            trusted: false,
            visibility: Some(Visibility::Public),
            timeout_secs: 600,
            github_token: String::new(),
            fork_policy: "run".into(),
            ssh_key: String::new(),
        })
        .await
        .expect("creates the repository")
}

pub fn runner(name: &str) -> ClaimRequest {
    ClaimRequest {
        runner: name.into(),
        instance: format!("{name}-1"),
        labels: BTreeMap::new(),
        platform: "linux/amd64".into(),
        offer: gantry_proto::Offer {
            docker: true,
            kubernetes: false,
            host: false,
        },
        lease_until: now_ms() + 60_000,
        owners: Vec::new(),
    }
}
