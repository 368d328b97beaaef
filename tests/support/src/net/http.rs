//! HTTP/1.1 as the network speaks it: requests read (with a bounded head
//! and body, chunked or not, `Expect: 100-continue`) and the responses
//! routes build.

use std::io::{self, ErrorKind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Shared;
use super::connection::{Io, is_timeout, stopped};
use super::devices::ProfileBody;

/// Largest request head (request line + headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted (firewall reports are small).
const MAX_REQUEST_BODY: usize = 64 * 1024 * 1024;
/// A partial request must complete within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) struct Request {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) query: Option<String>,
    pub(super) http10: bool,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

/// The values of header `name` (any case) among `headers`, whose names are
/// kept lower-cased, in order: the one lookup of requests read here,
/// [`Recorded`](super::Recorded) requests and the raw client's responses.
pub(crate) fn header_values<'a>(
    headers: &'a [(String, String)],
    name: &str,
) -> impl Iterator<Item = &'a str> + use<'a> {
    let name = name.to_ascii_lowercase();
    headers
        .iter()
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

impl Request {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        header_values(&self.headers, name).next()
    }

    pub(super) fn has_token(&self, header: &str, token: &str) -> bool {
        header_values(&self.headers, header)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    pub(super) fn wants_close(&self) -> bool {
        if self.has_token("connection", "close") {
            return true;
        }
        self.http10 && !self.has_token("connection", "keep-alive")
    }

    pub(super) fn accepts_gzip(&self) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k == "accept-encoding")
            .flat_map(|(_, v)| v.split(','))
            .any(|item| {
                let mut parts = item.split(';');
                let coding = parts.next().unwrap_or("").trim();
                if !coding.eq_ignore_ascii_case("gzip") {
                    return false;
                }
                for p in parts {
                    if let Some((k, v)) = p.split_once('=')
                        && k.trim().eq_ignore_ascii_case("q")
                    {
                        return v.trim().parse::<f32>().map(|q| q > 0.0).unwrap_or(false);
                    }
                }
                true
            })
    }
}

pub(super) enum ReadOutcome {
    Request(Request),
    /// Peer closed, idle timeout or stop between requests.
    Closed,
    /// Malformed request: answer this status, then close.
    Bad(u16, &'static str),
}

pub(super) struct Reader {
    pub(super) buf: Vec<u8>,
}

impl Reader {
    /// Reads more bytes into the buffer. Ok(false) on EOF.
    pub(super) fn fill(
        &mut self,
        io: &mut Io,
        shared: &Shared,
        deadline: Instant,
    ) -> io::Result<bool> {
        let mut tmp = [0u8; 16 * 1024];
        loop {
            if shared.stopping() {
                return Err(stopped());
            }
            match io.read_once(&mut tmp) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(true);
                }
                Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {
                    if Instant::now() >= deadline {
                        return Err(io::Error::new(ErrorKind::TimedOut, "read timed out"));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub(super) fn read_request(&mut self, io: &mut Io, shared: &Shared) -> io::Result<ReadOutcome> {
        // Wait for the first byte of a request (keep-alive idle time).
        let idle_deadline = Instant::now() + shared.keep_alive_idle;
        while self.buf.is_empty() {
            match self.fill(io, shared, idle_deadline) {
                Ok(true) => {}
                Ok(false) => return Ok(ReadOutcome::Closed),
                Err(e) if e.kind() == ErrorKind::TimedOut => return Ok(ReadOutcome::Closed),
                Err(e) if e.kind() == ErrorKind::ConnectionAborted && shared.stopping() => {
                    return Ok(ReadOutcome::Closed);
                }
                Err(e) => return Err(e),
            }
        }
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p;
            }
            if self.buf.len() > MAX_HEAD {
                return Ok(ReadOutcome::Bad(431, "request head too large"));
            }
            if !self.fill(io, shared, deadline)? {
                return Ok(ReadOutcome::Closed);
            }
        };
        let head: Vec<u8> = self.buf.drain(..head_end + 4).collect();
        let Ok(head) = std::str::from_utf8(&head[..head_end]) else {
            return Ok(ReadOutcome::Bad(400, "request head is not UTF-8"));
        };
        let mut lines = head.split("\r\n");
        let line = lines.next().unwrap_or("");
        let mut parts = line.split(' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Ok(ReadOutcome::Bad(400, "bad request line"));
        };
        let http10 = match version {
            "HTTP/1.1" => false,
            "HTTP/1.0" => true,
            _ => return Ok(ReadOutcome::Bad(505, "HTTP/1.x only")),
        };
        let mut headers = Vec::new();
        for l in lines {
            let Some((k, v)) = l.split_once(':') else {
                return Ok(ReadOutcome::Bad(400, "bad header line"));
            };
            if k.is_empty() || k.contains([' ', '\t']) {
                return Ok(ReadOutcome::Bad(400, "bad header name"));
            }
            headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
        }
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (target.to_string(), None),
        };
        let mut req = Request {
            method: method.to_string(),
            path,
            query,
            http10,
            headers,
            body: Vec::new(),
        };
        if req
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n", shared)?;
            io.flush(shared)?;
        }
        if req.has_token("transfer-encoding", "chunked") {
            match self.read_chunked(io, shared, deadline)? {
                Some(body) => req.body = body,
                None => return Ok(ReadOutcome::Bad(400, "bad chunked body")),
            }
        } else if let Some(cl) = req.header("content-length") {
            let Ok(len) = cl.parse::<usize>() else {
                return Ok(ReadOutcome::Bad(400, "bad Content-Length"));
            };
            if len > MAX_REQUEST_BODY {
                return Ok(ReadOutcome::Bad(413, "request body too large"));
            }
            while self.buf.len() < len {
                if !self.fill(io, shared, deadline)? {
                    return Ok(ReadOutcome::Closed);
                }
            }
            req.body = self.buf.drain(..len).collect();
        }
        Ok(ReadOutcome::Request(req))
    }

    pub(super) fn read_line(
        &mut self,
        io: &mut Io,
        shared: &Shared,
        deadline: Instant,
    ) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(p) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..p + 2).take(p).collect();
                return Ok(Some(line));
            }
            if self.buf.len() > MAX_HEAD || !self.fill(io, shared, deadline)? {
                return Ok(None);
            }
        }
    }

    pub(super) fn read_chunked(
        &mut self,
        io: &mut Io,
        shared: &Shared,
        deadline: Instant,
    ) -> io::Result<Option<Vec<u8>>> {
        let mut body = Vec::new();
        loop {
            let Some(line) = self.read_line(io, shared, deadline)? else {
                return Ok(None);
            };
            let line = String::from_utf8_lossy(&line);
            let size = line.split(';').next().unwrap_or("").trim();
            let Ok(size) = usize::from_str_radix(size, 16) else {
                return Ok(None);
            };
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    match self.read_line(io, shared, deadline)? {
                        Some(l) if l.is_empty() => return Ok(Some(body)),
                        Some(_) => {}
                        None => return Ok(None),
                    }
                }
            }
            if body.len() + size > MAX_REQUEST_BODY {
                return Ok(None);
            }
            while self.buf.len() < size + 2 {
                if !self.fill(io, shared, deadline)? {
                    return Ok(None);
                }
            }
            body.extend(self.buf.drain(..size));
            if self.buf.drain(..2).as_slice() != b"\r\n" {
                return Ok(None);
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub(super) enum Body {
    Empty,
    Bytes(Vec<u8>),
    Profile { data: Arc<ProfileBody>, gzip: bool },
}

impl Body {
    pub(super) fn wire_len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::Profile { data, gzip: false } => data.bytes.len() as u64,
            Body::Profile { data, gzip: true } => data.gzipped().len() as u64,
        }
    }
}

pub(super) struct Response {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Body,
}

impl Response {
    pub(super) fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Empty,
        }
    }
    pub(super) fn text(status: u16, text: &str) -> Response {
        let mut r = Response::new(status);
        r.header("Content-Type", "text/plain; charset=utf-8");
        r.body = Body::Bytes(text.as_bytes().to_vec());
        r
    }
    pub(super) fn header(&mut self, k: &str, v: &str) -> &mut Self {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
    pub(super) fn has_header(&self, k: &str) -> bool {
        self.headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(k))
    }
}

pub(super) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

pub(super) fn bodyless(status: u16) -> bool {
    status == 204 || status == 304 || (100..200).contains(&status)
}
