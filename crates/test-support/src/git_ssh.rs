//! A git server over SSH for tests: Debian's OpenSSH `sshd` on a loopback port, with a host
//! key and a client (deploy) key made for the test, serving a [`GitRepo`] to the holder of
//! that key only, as GitHub serves a repository to its deploy keys.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{GitRepo, TempDir};

#[derive(Debug)]
pub struct SshGitServer {
    /// `ssh://USER@127.0.0.1:PORT/path/of/the/repository`.
    pub url: String,
    /// The deploy key's private half (OpenSSH format), as a user would paste it.
    pub deploy_key: String,
    /// The `known_hosts` line of this server's host key.
    pub known_hosts: String,
    /// Another key, whose public half the server does not accept.
    pub stranger_key: String,
    child: Child,
    dir: TempDir,
}

const SSHD: &str = "/usr/sbin/sshd";

impl SshGitServer {
    /// Starts `sshd` for `repo`. Needs Debian's `openssh-server` (`./scripts/test` installs
    /// it).
    pub fn start(repo: &GitRepo) -> Self {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install Debian's openssh-server (./scripts/test does)"
        );
        let dir = TempDir::new("sshd");
        for name in ["host_key", "deploy_key", "stranger_key"] {
            let path = dir.path().join(name);
            let made = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(&path)
                .status()
                .expect("runs ssh-keygen");
            assert!(made.success(), "ssh-keygen made {name}");
        }
        let read = |name: &str| {
            std::fs::read_to_string(dir.path().join(name))
                .unwrap_or_else(|e| panic!("reading {name}: {e}"))
        };
        std::fs::write(
            dir.path().join("authorized_keys"),
            read("deploy_key.pub").as_bytes(),
        )
        .expect("writes authorized_keys");
        // sshd's privilege separation folder; present on a machine that ran sshd before.
        let _ = std::fs::create_dir_all("/run/sshd");
        let user = current_user();
        let (child, port) = (0..5)
            .find_map(|_| spawn_sshd(dir.path(), &user))
            .unwrap_or_else(|| panic!("sshd did not start:\n{}", read("sshd.log")));
        let host_key: Vec<String> = read("host_key.pub")
            .split_whitespace()
            .take(2)
            .map(str::to_owned)
            .collect();
        Self {
            url: format!("ssh://{user}@127.0.0.1:{port}{}", repo.url()),
            deploy_key: read("deploy_key"),
            known_hosts: format!("[127.0.0.1]:{port} {}\n", host_key.join(" ")),
            stranger_key: read("stranger_key"),
            child,
            dir,
        }
    }

    /// What sshd logged (who was refused, and why).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for SshGitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("runs id");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// sshd on a free port, once it accepts connections; `None` when it lost the port to
/// another process between choosing and binding it.
fn spawn_sshd(dir: &Path, user: &str) -> Option<(Child, u16)> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port();
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nPidFile {dir}/sshd.pid\n\
             AuthorizedKeysFile {dir}/authorized_keys\nAllowUsers {user}\nPubkeyAuthentication yes\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
             StrictModes no\nUsePAM no\nUseDNS no\nLogLevel VERBOSE\n",
            dir = dir.display()
        ),
    )
    .expect("writes sshd_config");
    let log = std::fs::File::create(dir.join("sshd.log")).expect("a log file");
    let mut child = Command::new(SSHD)
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starts sshd");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((child, port));
        }
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}
