//! A real Kubernetes cluster on this machine for the tests: etcd (Debian's `etcd-server`),
//! and the API server, controller manager, scheduler and a kubelet built from Debian's
//! source package by `scripts/test-kubernetes`; pods run in the local Docker engine. Started
//! once per test binary ([`Cluster::shared`]) on free loopback ports, in a folder of its own;
//! every process is watched by a shell that stops it when the test binary exits, and the
//! kubelet's watcher removes the containers of the cluster's pods then.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{TempDir, repo_root};

/// The image the sandbox of every pod runs (Kubernetes' own `pause`, built from source).
pub const PAUSE_IMAGE: &str = "k8s.gcr.io/pause:3.2";
/// gantry's helper image, built offline by `scripts/kube-helper-image`.
pub const HELPER_IMAGE: &str = "gantry/kube-helper:test";

#[derive(Debug)]
pub struct Cluster {
    dir: TempDir,
    bin: PathBuf,
    /// `https://127.0.0.1:PORT`
    pub server: String,
    /// A prefix of this cluster's own: its namespaces start with it.
    pub prefix: String,
    admin: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn run(command: &mut Command, what: &str) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Cluster {
    /// The cluster of this test binary, started at the first call (a minute or so).
    pub fn shared() -> &'static Cluster {
        static CLUSTER: OnceLock<Cluster> = OnceLock::new();
        CLUSTER.get_or_init(Cluster::start)
    }

    fn start() -> Cluster {
        let root = repo_root();
        let bin = PathBuf::from(run(
            Command::new(root.join("scripts/test-kubernetes")).stderr(Stdio::inherit()),
            "scripts/test-kubernetes (builds the test cluster's binaries)",
        ));
        run(
            &mut Command::new(root.join("scripts/kube-helper-image")),
            "scripts/kube-helper-image",
        );
        let has_pause = Command::new("docker")
            .args(["image", "inspect", PAUSE_IMAGE])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has_pause {
            let dir = TempDir::new("pause-image");
            std::fs::copy(bin.join("pause"), dir.path().join("pause")).expect("copy pause");
            run(
                Command::new("sh").arg("-c").arg(format!(
                    "tar -C {} -c pause | docker import --change 'ENTRYPOINT [\"/pause\"]' - {PAUSE_IMAGE}",
                    dir.path().display()
                )),
                "importing the pause image",
            );
        }
        let dir = TempDir::new("kubernetes");
        let d = dir.path().to_owned();
        let prefix = format!("gt{}", std::process::id());
        let admin_token = format!("admin-{}", std::process::id());
        std::fs::write(
            d.join("tokens.csv"),
            format!("{admin_token},admin,admin,system:masters\n"),
        )
        .expect("write the token file");
        run(
            Command::new("openssl")
                .args(["genrsa", "-out"])
                .arg(d.join("sa.key"))
                .arg("2048")
                .stderr(Stdio::null()),
            "openssl genrsa",
        );
        run(
            Command::new("openssl")
                .args(["rsa", "-pubout", "-in"])
                .arg(d.join("sa.key"))
                .arg("-out")
                .arg(d.join("sa.pub"))
                .stderr(Stdio::null()),
            "openssl rsa -pubout",
        );
        let (etcd_port, peer_port, api_port, kubelet_port) =
            (free_port(), free_port(), free_port(), free_port());
        let server = format!("https://127.0.0.1:{api_port}");
        let admin = d.join("admin.kubeconfig");
        write_kubeconfig(&admin, &server, &admin_token, "default");
        let arg = |k: &str, v: &Path| format!("--{k}={}", v.display());
        let cluster = Cluster {
            dir,
            bin: bin.clone(),
            server: server.clone(),
            prefix,
            admin: admin.clone(),
        };
        cluster.daemon(
            "etcd",
            Path::new("etcd"),
            &[
                arg("data-dir", &d.join("etcd")),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
                format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
                format!("--initial-cluster=default=http://127.0.0.1:{peer_port}"),
                "--log-level=error".to_owned(),
            ],
            false,
        );
        cluster.daemon(
            "kube-apiserver",
            &bin.join("kube-apiserver"),
            &[
                format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
                format!("--secure-port={api_port}"),
                "--bind-address=127.0.0.1".to_owned(),
                "--advertise-address=127.0.0.1".to_owned(),
                "--insecure-port=0".to_owned(),
                arg("cert-dir", &d.join("apiserver-certs")),
                arg("token-auth-file", &d.join("tokens.csv")),
                "--authorization-mode=Node,RBAC".to_owned(),
                arg("service-account-key-file", &d.join("sa.pub")),
                arg("service-account-signing-key-file", &d.join("sa.key")),
                "--service-account-issuer=https://kubernetes.default.svc".to_owned(),
                "--service-cluster-ip-range=10.211.0.0/24".to_owned(),
                "--kubelet-preferred-address-types=InternalIP".to_owned(),
                "--allow-privileged=true".to_owned(),
                "--v=0".to_owned(),
            ],
            false,
        );
        cluster.until("the API server answers", Duration::from_secs(90), || {
            cluster.try_kubectl(&["get", "--raw", "/readyz"]).is_some()
        });
        let kubeconfig = arg("kubeconfig", &admin);
        cluster.daemon(
            "kube-controller-manager",
            &bin.join("kube-controller-manager"),
            &[
                kubeconfig.clone(),
                arg("service-account-private-key-file", &d.join("sa.key")),
                arg("root-ca-file", &d.join("apiserver-certs/apiserver.crt")),
                "--leader-elect=false".to_owned(),
                "--port=0".to_owned(),
                "--secure-port=0".to_owned(),
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service,-route".to_owned(),
                "--v=0".to_owned(),
            ],
            false,
        );
        cluster.daemon(
            "kube-scheduler",
            &bin.join("kube-scheduler"),
            &[
                kubeconfig.clone(),
                "--leader-elect=false".to_owned(),
                "--port=0".to_owned(),
                "--secure-port=0".to_owned(),
                "--v=0".to_owned(),
            ],
            false,
        );
        let node = format!("{}-node", cluster.prefix);
        // The kubelet refuses a loopback node address; the API server reaches it (for logs
        // and exec) at the machine's first address.
        let host_ip = run(Command::new("hostname").arg("-I"), "hostname -I")
            .split_whitespace()
            .next()
            .expect("the machine has an address")
            .to_owned();
        cluster.daemon(
            "kubelet",
            &bin.join("kubelet"),
            &[
                kubeconfig,
                format!("--hostname-override={node}"),
                format!("--node-ip={host_ip}"),
                format!("--port={kubelet_port}"),
                "--read-only-port=0".to_owned(),
                "--healthz-port=0".to_owned(),
                arg("root-dir", &d.join("kubelet")),
                arg("cert-dir", &d.join("kubelet-certs")),
                arg("volume-plugin-dir", &d.join("kubelet-plugins")),
                "--container-runtime=docker".to_owned(),
                "--cgroup-driver=cgroupfs".to_owned(),
                "--cgroups-per-qos=false".to_owned(),
                "--enforce-node-allocatable=".to_owned(),
                "--fail-swap-on=false".to_owned(),
                "--oom-score-adj=0".to_owned(),
                format!("--pod-infra-container-image={PAUSE_IMAGE}"),
                "--image-gc-high-threshold=100".to_owned(),
                "--image-gc-low-threshold=99".to_owned(),
                "--eviction-hard=memory.available<1Mi,nodefs.available<1%,imagefs.available<1%"
                    .to_owned(),
                "--serialize-image-pulls=false".to_owned(),
                "--v=0".to_owned(),
            ],
            true,
        );
        // Ready, and its not-ready taint lifted by the node lifecycle controller.
        cluster.until("the node is ready", Duration::from_secs(120), || {
            cluster
                .try_kubectl(&[
                    "get",
                    "node",
                    &node,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.spec.taints}",
                ])
                .is_some_and(|s| s.trim() == "True")
        });
        cluster
    }

    /// Starts `program` in the background, watched by a shell that stops it when the test
    /// binary is gone (and, for the kubelet, removes the containers of the cluster's pods).
    fn daemon(&self, name: &str, program: &Path, args: &[String], kubelet: bool) {
        let log = self.dir.path().join(format!("{name}.log"));
        let quoted: Vec<String> = std::iter::once(program.display().to_string())
            .chain(args.iter().cloned())
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect();
        let cleanup = if kubelet {
            format!(
                "docker ps -aq --filter label=io.kubernetes.docker.type | while read -r id; do \
                   ns=$(docker inspect -f '{{{{index .Config.Labels \"io.kubernetes.pod.namespace\"}}}}' \"$id\" 2>/dev/null); \
                   case \"$ns\" in {}*) docker rm -f \"$id\" >/dev/null 2>&1;; esac; done; \
                 sleep 2; grep -F ' {dir}/' /proc/mounts | cut -d' ' -f2 | sort -r | xargs -r umount -l; \
                 rm -rf '{dir}'",
                self.prefix,
                dir = self.dir.path().display()
            )
        } else {
            String::new()
        };
        // The watcher runs in the background of a shell that ends at once (so it is waited
        // for here), in a process group of its own: stopping the test binary's group
        // (Ctrl-C) leaves the watcher, which then stops its program.
        let script = format!(
            "( {} > '{}' 2>&1 & child=$!; \
               while kill -0 {} 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 0.5; done; \
               kill $child 2>/dev/null; sleep 1; kill -9 $child 2>/dev/null; {cleanup} ) &",
            quoted.join(" "),
            log.display(),
            std::process::id()
        );
        let started = Command::new("sh")
            .arg("-c")
            .arg(script)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        assert!(started.success(), "starting {name}: {started}");
    }

    fn until(&self, what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ready() {
            if start.elapsed() > limit {
                let logs: Vec<String> = [
                    "etcd",
                    "kube-apiserver",
                    "kube-controller-manager",
                    "kube-scheduler",
                    "kubelet",
                ]
                .iter()
                .map(|n| {
                    let text = std::fs::read_to_string(self.dir.path().join(format!("{n}.log")))
                        .unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(15).collect();
                    format!(
                        "--- {n}:\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )
                })
                .collect();
                panic!(
                    "the test cluster: waited {limit:?} for {what}\n{}",
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    pub fn kubectl_path(&self) -> PathBuf {
        self.bin.join("kubectl")
    }

    pub fn helm_path(&self) -> PathBuf {
        self.bin.join("helm")
    }

    /// The cluster administrator's kubeconfig.
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin
    }

    fn try_kubectl(&self, args: &[&str]) -> Option<String> {
        let out = Command::new(self.kubectl_path())
            .arg(format!("--kubeconfig={}", self.admin.display()))
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// `kubectl ARGS` as the administrator; panics with its output when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        run(
            Command::new(self.kubectl_path())
                .arg(format!("--kubeconfig={}", self.admin.display()))
                .args(args),
            &format!("kubectl {}", args.join(" ")),
        )
    }

    /// `kubectl apply` of a manifest given as text, in `namespace`.
    pub fn apply(&self, namespace: &str, manifest: &str) {
        let mut child = Command::new(self.kubectl_path())
            .arg(format!("--kubeconfig={}", self.admin.display()))
            .args(["apply", "-n", namespace, "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl apply");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(manifest.as_bytes())
            .expect("write the manifest");
        let out = child.wait_with_output().expect("kubectl apply");
        assert!(
            out.status.success(),
            "kubectl apply failed: {}\n{manifest}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A namespace of this cluster's own, new on every call.
    pub fn namespace(&self, name: &str) -> String {
        static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let namespace = format!("{}-{name}-{n}", self.prefix);
        self.kubectl(&["create", "namespace", &namespace]);
        namespace
    }

    /// A new build namespace with the runner's service account, Role and RoleBinding as the
    /// chart (`charts/gantry`) makes them, and a kubeconfig that authenticates as that account.
    pub fn runner_namespace(&self, name: &str) -> (String, PathBuf) {
        let namespace = self.namespace(name);
        let rbac = self.helm(&[
            "template",
            "gantry",
            &chart_dir().display().to_string(),
            "--namespace",
            &namespace,
            "--show-only",
            "templates/runner-serviceaccount.yaml",
            "--show-only",
            "templates/runner-rbac.yaml",
        ]);
        self.apply(&namespace, &rbac);
        let kubeconfig = self.service_account_kubeconfig(&namespace, "gantry-runner");
        (namespace, kubeconfig)
    }

    /// `helm ARGS` as the administrator; panics with its output when it fails.
    pub fn helm(&self, args: &[&str]) -> String {
        run(
            Command::new(self.helm_path())
                .arg(format!("--kubeconfig={}", self.admin.display()))
                .args(args),
            &format!("helm {}", args.join(" ")),
        )
    }

    /// `helm ARGS`, its success and everything it printed.
    pub fn try_helm(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(self.helm_path())
            .arg(format!("--kubeconfig={}", self.admin.display()))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("helm: {e}"));
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// A kubeconfig that authenticates as the service account `account` of `namespace`
    /// (its token, made by the controller manager), for RBAC as a runner in the cluster has it.
    pub fn service_account_kubeconfig(&self, namespace: &str, account: &str) -> PathBuf {
        let mut token = String::new();
        self.until(
            &format!("a token for service account {namespace}/{account}"),
            Duration::from_secs(60),
            || {
                let Some(secret) = self.try_kubectl(&[
                    "-n",
                    namespace,
                    "get",
                    "serviceaccount",
                    account,
                    "-o",
                    "jsonpath={.secrets[0].name}",
                ]) else {
                    return false;
                };
                if secret.is_empty() {
                    return false;
                }
                let Some(encoded) = self.try_kubectl(&[
                    "-n",
                    namespace,
                    "get",
                    "secret",
                    &secret,
                    "-o",
                    "jsonpath={.data.token}",
                ]) else {
                    return false;
                };
                use base64::Engine;
                match base64::engine::general_purpose::STANDARD.decode(encoded.trim()) {
                    Ok(bytes) if !bytes.is_empty() => {
                        token = String::from_utf8_lossy(&bytes).into_owned();
                        true
                    }
                    _ => false,
                }
            },
        );
        let path = self
            .dir
            .path()
            .join(format!("{namespace}-{account}.kubeconfig"));
        write_kubeconfig(&path, &self.server, &token, namespace);
        path
    }
}

/// The chart, `charts/gantry`.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/gantry")
}

fn write_kubeconfig(path: &Path, server: &str, token: &str, namespace: &str) {
    std::fs::write(
        path,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {server}
    insecure-skip-tls-verify: true
users:
- name: test
  user:
    token: {token}
contexts:
- name: test
  context:
    cluster: test
    user: test
    namespace: {namespace}
current-context: test
"
        ),
    )
    .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
