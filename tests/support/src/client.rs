//! A raw HTTP(S) client, for testing the network itself: one keep-alive
//! connection speaking just enough HTTP/1.1, with the network's CA pinned.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;

use crate::net::{DEFAULT_BASE_PATH, Leaf, TestNetwork, header_values};

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// `Basic <base64(user:password)>`.
pub fn basic_auth(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64_encode(format!("{user}:{password}").as_bytes())
    )
}

/// A client config (ring provider) trusting only `ca_der`, optionally with
/// a client certificate.
pub fn client_config(ca_der: &[u8], client: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .expect("add CA");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots);
    let cfg = match client {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(leaf.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone())),
            )
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(cfg)
}

/// An HTTP response as read by [`RawClient`].
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body ended before `Content-Length` (connection closed).
    pub truncated: bool,
}

impl RawResponse {
    /// First value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_values(&self.headers, name).next()
    }

    /// Every value of header `name` (any case), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name).collect()
    }
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

enum RawIo {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Read for RawIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            RawIo::Plain(s) => s.read(buf),
            RawIo::Tls(s) => s.read(buf),
        }
    }
}

impl Write for RawIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            RawIo::Plain(s) => s.write(buf),
            RawIo::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            RawIo::Plain(s) => s.flush(),
            RawIo::Tls(s) => s.flush(),
        }
    }
}

/// One keep-alive connection to a [`TestNetwork`], speaking just enough
/// HTTP/1.1 (Content-Length bodies) to test it.
pub struct RawClient {
    io: RawIo,
    buf: Vec<u8>,
}

impl RawClient {
    /// Connects to `net` (TLS trusting the net's CA, server name
    /// `127.0.0.1`; or plain).
    pub fn connect(net: &TestNetwork) -> io::Result<RawClient> {
        Self::connect_with(net, None, "127.0.0.1")
    }

    /// Connects with an optional client certificate and a chosen server name
    /// (`127.0.0.1` or `localhost`); TLS errors come back as `io::Error`.
    pub fn connect_with(
        net: &TestNetwork,
        client: Option<&Leaf>,
        server_name: &str,
    ) -> io::Result<RawClient> {
        let sock = TcpStream::connect(net.addr())?;
        sock.set_read_timeout(Some(Duration::from_secs(20)))?;
        sock.set_write_timeout(Some(Duration::from_secs(20)))?;
        if net.is_plain() {
            return Ok(RawClient {
                io: RawIo::Plain(sock),
                buf: Vec::new(),
            });
        }
        let cfg = client_config(net.pki().ca_der(), client);
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let conn = rustls::ClientConnection::new(cfg, name).map_err(io::Error::other)?;
        let mut stream = rustls::StreamOwned::new(conn, sock);
        // Drive the handshake now, so certificate errors surface here.
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(RawClient {
            io: RawIo::Tls(Box::new(stream)),
            buf: Vec::new(),
        })
    }

    /// Sends `METHOD path` (path includes the base path and query) with
    /// `Host` and these headers; adds Content-Length for a body.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<()> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        self.io.write_all(req.as_bytes())?;
        self.io.write_all(body)?;
        self.io.flush()
    }

    /// Writes raw bytes on the connection.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes)?;
        self.io.flush()
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 64 * 1024];
        match self.io.read(&mut tmp) {
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(n)
            }
            // A server that closes without close_notify.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Reads one response (to a request of `method`).
    pub fn read_response(&mut self, method: &str) -> io::Result<RawResponse> {
        let head_end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a response head",
                ));
            }
        };
        let head: Vec<u8> = self.buf.drain(..head_end + 4).collect();
        let head = String::from_utf8_lossy(&head[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut resp = RawResponse {
            status,
            headers,
            body: Vec::new(),
            truncated: false,
        };
        if method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status) {
            return Ok(resp);
        }
        let len: Option<usize> = resp.header("content-length").and_then(|v| v.parse().ok());
        match len {
            Some(len) => {
                while self.buf.len() < len {
                    if self.fill()? == 0 {
                        resp.truncated = true;
                        break;
                    }
                }
                let n = len.min(self.buf.len());
                resp.body = self.buf.drain(..n).collect();
            }
            None => {
                while self.fill()? != 0 {}
                resp.body = std::mem::take(&mut self.buf);
            }
        }
        Ok(resp)
    }

    /// `send` then `read_response`.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<RawResponse> {
        self.send(method, path, headers, body)?;
        self.read_response(method)
    }

    /// Bytes of a received response body so far when the peer stops
    /// sending: reads until `n` bytes are buffered or EOF/timeout.
    pub fn read_raw(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                break;
            }
        }
        let k = n.min(self.buf.len());
        Ok(self.buf.drain(..k).collect())
    }

    /// Sets the socket read timeout.
    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match &self.io {
            RawIo::Plain(s) => s.set_read_timeout(d),
            RawIo::Tls(s) => s.sock.set_read_timeout(d),
        }
    }
}

/// Path of the standard device's profile on `net` (base path included).
pub fn profile_path(device: &str) -> String {
    format!("{DEFAULT_BASE_PATH}/v3/devices/{device}/profile")
}
