//! One address in front of several servers, as replicas run behind a load balancer: a TCP
//! round-robin of the test's own. Each connection goes to the next backend that accepts it;
//! a backend that is down (killed by a chaos test) is skipped, and one that comes back on a
//! new port is set again with [`Balancer::set`].

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug)]
pub struct Balancer {
    pub url: String,
    backends: Arc<Mutex<Vec<Option<SocketAddr>>>>,
}

impl Balancer {
    /// Listens on a loopback port for `slots` backends, none of them set yet.
    pub fn start(slots: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let backends = Arc::new(Mutex::new(vec![None; slots]));
        let shared = Arc::clone(&backends);
        std::thread::spawn(move || {
            let next = AtomicUsize::new(0);
            for client in listener.incoming().flatten() {
                let candidates = shared.lock().map(|b| b.clone()).unwrap_or_default();
                let start = next.fetch_add(1, Ordering::Relaxed);
                std::thread::spawn(move || {
                    if let Some(server) = connect_to_one(&candidates, start) {
                        pipe(client, server);
                    }
                });
            }
        });
        Self { url, backends }
    }

    /// Points slot `slot` at `url` (`http://HOST:PORT`), or takes it out with `None`.
    pub fn set(&self, slot: usize, url: Option<&str>) {
        let addr = url.map(|u| {
            u.trim_start_matches("http://")
                .trim_end_matches('/')
                .parse()
                .unwrap_or_else(|e| panic!("{u} is not http://HOST:PORT: {e}"))
        });
        self.backends.lock().expect("the backends")[slot] = addr;
    }
}

/// The first backend from `start` on (round robin) that accepts a connection.
fn connect_to_one(backends: &[Option<SocketAddr>], start: usize) -> Option<TcpStream> {
    let count = backends.len();
    (0..count)
        .filter_map(|i| backends[(start + i) % count])
        .find_map(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok())
}

/// Copies both ways until either side closes; a client sees its server die as a closed
/// connection, as behind a real balancer.
fn pipe(client: TcpStream, server: TcpStream) {
    let (Ok(client_read), Ok(server_read)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let upstream = std::thread::spawn(move || copy(client_read, server));
    copy(server_read, client);
    let _ = upstream.join();
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_server(reply: &'static str) -> (String, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let handle = std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten().take(2) {
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        (url, handle)
    }

    fn ask(url: &str) -> String {
        let mut stream = TcpStream::connect(url.trim_start_matches("http://")).expect("connects");
        let mut out = String::new();
        let _ = stream.read_to_string(&mut out);
        out
    }

    #[test]
    fn connections_take_turns_and_skip_a_dead_backend() {
        let balancer = Balancer::start(3);
        let (a, _) = echo_server("a");
        let (b, _) = echo_server("b");
        // A port nobody listens on: a killed server.
        let dead = TcpListener::bind("127.0.0.1:0").expect("binds");
        let dead_url = format!("http://{}", dead.local_addr().expect("bound"));
        drop(dead);
        balancer.set(0, Some(&a));
        balancer.set(1, Some(&dead_url));
        balancer.set(2, Some(&b));
        let mut answers: Vec<String> = (0..4).map(|_| ask(&balancer.url)).collect();
        answers.sort();
        assert_eq!(answers, ["a", "a", "b", "b"]);
    }
}
