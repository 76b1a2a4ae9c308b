//! HTTP/1.1 clients of the tests (raw bytes allowed in header values, so that hostile input
//! can be sent as is), and h2load for HTTP/2 load.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Names lowercase, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// `RateLimit` parsed into (name, remaining, reset) items.
    pub fn ratelimit(&self) -> Vec<(String, u64, u64)> {
        let value = self
            .header("ratelimit")
            .unwrap_or_else(|| panic!("no RateLimit in {self:?}"));
        value
            .split(", ")
            .map(|item| {
                let mut parts = item.split(';');
                let name = parts.next().unwrap().trim_matches('"').to_string();
                let mut r = None;
                let mut t = None;
                for p in parts {
                    if let Some(v) = p.strip_prefix("r=") {
                        r = Some(v.parse().unwrap());
                    }
                    if let Some(v) = p.strip_prefix("t=") {
                        t = Some(v.parse().unwrap());
                    }
                }
                (name, r.unwrap(), t.unwrap())
            })
            .collect()
    }

    /// Remaining requests of one limit, from `RateLimit`.
    pub fn remaining(&self, limit: &str) -> u64 {
        self.ratelimit()
            .into_iter()
            .find(|(n, _, _)| n == limit)
            .unwrap_or_else(|| panic!("no limit {limit} in {self:?}"))
            .1
    }
}

/// The value of header `name` (lowercase) in `headers` (names lowercase, in the order received).
pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`); raw bytes allowed in
/// header values so that hostile input can be sent as is.
pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &[u8])]) -> Response {
    try_request(port, method, path, headers)
        .unwrap_or_else(|e| panic!("{method} {path} on port {port} failed: {e}"))
}

/// A kept-alive HTTP/1.1 connection (requests in sequence, no pipelining).
pub struct Conn {
    port: u16,
    stream: Option<TcpStream>,
}

impl Conn {
    pub fn new(port: u16) -> Conn {
        Conn { port, stream: None }
    }

    /// Sends a GET on this connection (reconnecting once if the server closed it).
    pub fn get(&mut self, path: &str, headers: &[(&str, &[u8])]) -> Response {
        for _ in 0..2 {
            if self.stream.is_none() {
                let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
                stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                stream.set_nodelay(true).unwrap();
                self.stream = Some(stream);
            }
            let stream = self.stream.as_mut().unwrap();
            match exchange(stream, "GET", path, headers, false) {
                Ok(r) if r.header("connection") == Some("close") => {
                    self.stream = None;
                    return r;
                }
                Ok(r) => return r,
                Err(_) => self.stream = None,
            }
        }
        panic!("GET {path} failed twice on a kept-alive connection");
    }
}

fn exchange(
    stream: &mut TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    close: bool,
) -> std::io::Result<Response> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\n").into_bytes();
    if close {
        head.extend_from_slice(b"connection: close\r\n");
    }
    for (name, value) in headers {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    stream.write_all(&head)?;
    // Read until the response is complete rather than until EOF: Envoy delays closing a
    // `Connection: close` connection until the client closes (delayed_close_timeout).
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while !response_complete(&raw) {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    parse_response(&raw).ok_or_else(|| {
        std::io::Error::other(format!(
            "unparsable response: {:?}",
            String::from_utf8_lossy(&raw)
        ))
    })
}

pub fn try_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    exchange(&mut stream, method, path, headers, true)
}

/// Whether `raw` holds a whole response: headers and a `content-length` body, or a final chunk.
fn response_complete(raw: &[u8]) -> bool {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    for line in head.split("\r\n") {
        if let Some(len) = line.strip_prefix("content-length:") {
            return len
                .trim()
                .parse::<usize>()
                .is_ok_and(|len| body.len() >= len);
        }
        if line.starts_with("transfer-encoding:") && line.contains("chunked") {
            return body.ends_with(b"0\r\n\r\n");
        }
    }
    false
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body)?;
    }
    Some(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// A gRPC call (HTTP/2 POST, empty body, prior knowledge, no TLS) with curl to `path` on
/// `port`, with these extra headers (`name: value`): curl's `-i` output, head and body.
pub fn curl_grpc(port: u16, path: &str, headers: &[&str]) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-i", "--http2-prior-knowledge", "-X", "POST"])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .args(["--data-binary", ""]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    cmd.arg(format!("http://127.0.0.1:{port}{path}"));
    let out = cmd.output().expect("curl (installed by `make test`)");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// h2load (HTTP/2) with `key`: `n` requests over `connections` connections of `streams`
/// concurrent streams each; returns the counts of 2xx, 3xx, 4xx and 5xx responses.
pub fn h2load(port: u16, key: &str, n: u64, connections: u32, streams: u32) -> [u64; 4] {
    let connections = connections.min(n.max(1) as u32);
    let out = Command::new("h2load")
        .args(["-n", &n.to_string(), "-c", &connections.to_string()])
        .args(["-m", &streams.to_string(), "-t", "1"])
        .args(["-H", &format!("x-api-key: {key}")])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .expect("h2load (installed by `make test`)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let line = text
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .unwrap_or_else(|| panic!("no status line from h2load:\n{text}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    // "A 2xx, B 3xx, C 4xx, D 5xx": the numbers come as A, 2, B, 3, C, 4, D, 5.
    let counts: Vec<u64> = numbers.chunks(2).map(|c| c[0]).collect();
    [counts[0], counts[1], counts[2], counts[3]]
}

/// A POST with a body through curl, over HTTP/1.1 or (prior knowledge, no TLS) HTTP/2, with
/// these extra headers (`name: value`). The body is read whole, de-chunked; a response cut
/// short (the upstream closed mid-stream) is returned with what arrived and `cut` set.
pub fn post(port: u16, path: &str, headers: &[&str], body: &[u8], http2: bool) -> Posted {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-i", "-X", "POST", "--data-binary", "@-"])
        .arg(if http2 {
            "--http2-prior-knowledge"
        } else {
            "--http1.1"
        })
        .args(["--max-time", "60"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    cmd.arg(format!("http://127.0.0.1:{port}{path}"));
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("curl (installed by `make test`)");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    let raw = out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "POST {path}: no response ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("POST {path}: no status line in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Posted {
        response: Response {
            status,
            headers,
            body: String::from_utf8_lossy(&raw[split + 4..]).to_string(),
        },
        body: raw[split + 4..].to_vec(),
        cut: !out.status.success(),
    }
}

/// What [`post`] got: the response, its body's bytes as received, and whether it was cut.
#[derive(Debug, Clone)]
pub struct Posted {
    pub response: Response,
    pub body: Vec<u8>,
    pub cut: bool,
}

/// An HTTP/2 POST with nghttp (verbose): its frame log, for a status and headers curl cannot
/// show (an answer that comes before the upload ended, then a reset).
pub fn nghttp_post(port: u16, path: &str, headers: &[&str], body: &[u8]) -> String {
    let file = std::env::temp_dir().join(format!(
        "tollgate-nghttp-{}-{port}.body",
        std::process::id()
    ));
    std::fs::write(&file, body).unwrap();
    let mut cmd = Command::new("nghttp");
    cmd.arg("-v").args(["-H", ":method: POST"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    cmd.arg("-d")
        .arg(&file)
        .arg(format!("http://127.0.0.1:{port}{path}"));
    let out = cmd
        .output()
        .expect("nghttp (installed with h2load by `make test`)");
    let _ = std::fs::remove_file(&file);
    String::from_utf8_lossy(&out.stdout).to_string()
}
