//! A private git server for tests: Git's own smart-HTTP server (`git http-backend`, run as a
//! CGI program) behind a small HTTP/1.1 front that answers 401 unless the request carries
//! the expected basic-auth credential, as GitHub does for a private repository.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::GitRepo;

/// Serves one [`GitRepo`] at `{url}` to callers with the right basic auth.
#[derive(Debug)]
pub struct PrivateGitServer {
    /// The clone URL, e.g. `http://127.0.0.1:PORT/app.git`.
    pub url: String,
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    refused: AtomicUsize,
    served: AtomicUsize,
}

impl PrivateGitServer {
    /// Serves `repo` as `/{name}.git` to `username:password`.
    pub fn start(repo: &GitRepo, name: &str, username: &str, password: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds a loopback port");
        let url = format!(
            "http://{}/{name}.git",
            listener.local_addr().expect("bound")
        );
        let expected = crate::webhook::basic_auth(username, password);
        let root = PathBuf::from(repo.url());
        let served = Arc::new(Counts::default());
        let counts = Arc::clone(&served);
        let prefix = format!("/{name}.git");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (expected, root, prefix, counts) = (
                    expected.clone(),
                    root.clone(),
                    prefix.clone(),
                    Arc::clone(&counts),
                );
                std::thread::spawn(move || {
                    let _ = serve(stream, &expected, &root, &prefix, &counts);
                });
            }
        });
        Self {
            url,
            counts: served,
        }
    }

    /// Requests answered 401 (no credential, or a wrong one).
    pub fn refused(&self) -> usize {
        self.counts.refused.load(Ordering::SeqCst)
    }

    /// Requests passed to `git http-backend`.
    pub fn served(&self) -> usize {
        self.counts.served.load(Ordering::SeqCst)
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn serve(
    stream: TcpStream,
    expected: &str,
    root: &std::path::Path,
    prefix: &str,
    counts: &Counts,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    // One request a connection (answers close it): libgit2 reconnects.
    let Some(request) = read_request(&mut reader, &mut writer)? else {
        return Ok(());
    };
    if request.header("authorization") != Some(expected) {
        counts.refused.fetch_add(1, Ordering::SeqCst);
        return writer.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Basic realm=\"git\"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
    }
    let Some(rest) = request.path.strip_prefix(prefix) else {
        return writer.write_all(
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
    };
    counts.served.fetch_add(1, Ordering::SeqCst);
    let folder = root
        .file_name()
        .expect("a repository folder has a name")
        .to_string_lossy()
        .into_owned();
    let parent = root.parent().expect("a repository folder has a parent");
    let mut child = Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", parent)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", format!("/{folder}{rest}"))
        .env("REQUEST_METHOD", &request.method)
        .env("QUERY_STRING", &request.query)
        .env("CONTENT_TYPE", request.header("content-type").unwrap_or(""))
        .env("CONTENT_LENGTH", request.body.len().to_string())
        .env(
            "HTTP_CONTENT_ENCODING",
            request.header("content-encoding").unwrap_or(""),
        )
        .env("GIT_PROTOCOL", request.header("git-protocol").unwrap_or(""))
        .env("REMOTE_USER", "git")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    let body = request.body;
    let feeder = std::thread::spawn(move || stdin.write_all(&body));
    let output = child.wait_with_output()?;
    let _ = feeder.join();
    let out = output.stdout;
    let split = find(&out, b"\r\n\r\n")
        .map(|at| (at, 4))
        .or_else(|| find(&out, b"\n\n").map(|at| (at, 2)));
    let Some((at, gap)) = split else {
        return writer.write_all(
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
    };
    let head = String::from_utf8_lossy(&out[..at]).into_owned();
    let content = &out[at + gap..];
    let mut status = "200 OK".to_owned();
    let mut response = Vec::new();
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("status") {
            status = value.trim().to_owned();
        } else {
            response.extend_from_slice(format!("{name}:{value}\r\n").as_bytes());
        }
    }
    let mut answer = format!("HTTP/1.1 {status}\r\n").into_bytes();
    answer.extend_from_slice(&response);
    answer.extend_from_slice(
        format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            content.len()
        )
        .as_bytes(),
    );
    answer.extend_from_slice(content);
    writer.write_all(&answer)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn read_request(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("").to_owned();
    let (path, query) = target
        .split_once('?')
        .map_or((target.clone(), String::new()), |(p, q)| {
            (p.to_owned(), q.to_owned())
        });
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    let mut request = Request {
        method,
        path,
        query,
        headers,
        body: Vec::new(),
    };
    if request
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    if request
        .header("transfer-encoding")
        .is_some_and(|e| e.eq_ignore_ascii_case("chunked"))
    {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size =
                usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16).unwrap_or(0);
            if size == 0 {
                line.clear();
                reader.read_line(&mut line)?;
                break;
            }
            let mut chunk = vec![0; size];
            reader.read_exact(&mut chunk)?;
            request.body.extend_from_slice(&chunk);
            line.clear();
            reader.read_line(&mut line)?;
        }
    } else if let Some(length) = request
        .header("content-length")
        .and_then(|l| l.parse::<usize>().ok())
    {
        request.body = vec![0; length];
        reader.read_exact(&mut request.body)?;
    }
    Ok(Some(request))
}
