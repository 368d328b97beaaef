//! One connection of the network: plain or TLS I/O with stop-aware
//! timeouts, the TLS handshake, and the loop that reads requests, applies a
//! pending fault or routes them, records them and answers.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rustls::{ServerConfig, ServerConnection};

use super::endpoints::route;
use super::faults::{BodyFault, Fault, Flow, Sender};
use super::http::{Body, ReadOutcome, Reader, Request, Response, bodyless, reason};
use super::util::http_date;
use super::{Recorded, Shared};

/// How often blocked socket calls wake up to look at the stop flag.
const POLL: Duration = Duration::from_millis(100);
/// A write that makes no progress for this long drops the connection.
const WRITE_STALL_LIMIT: Duration = Duration::from_secs(60);
/// The TLS handshake must complete within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

pub(super) enum Io {
    Plain(TcpStream),
    Tls {
        conn: Box<ServerConnection>,
        sock: TcpStream,
        eof: bool,
    },
}

pub(super) fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn is_benign(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::BrokenPipe
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::UnexpectedEof
            | ErrorKind::NotConnected
    )
}

pub(super) fn stopped() -> io::Error {
    io::Error::new(ErrorKind::ConnectionAborted, "network stopping")
}

impl Io {
    pub(super) fn sock(&self) -> &TcpStream {
        match self {
            Io::Plain(s) => s,
            Io::Tls { sock, .. } => sock,
        }
    }

    /// One read; a timeout tick comes back as `WouldBlock`/`TimedOut`.
    /// 0 means the peer closed.
    pub(super) fn read_once(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.read(out),
            Io::Tls { conn, sock, eof } => loop {
                match conn.reader().read(out) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
                if *eof {
                    return Ok(0);
                }
                match conn.read_tls(sock) {
                    Ok(0) => *eof = true,
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
                if let Err(e) = conn.process_new_packets() {
                    let _ = write_tls_all(conn, sock, None);
                    return Err(io::Error::new(ErrorKind::InvalidData, e));
                }
                if conn.wants_write() {
                    write_tls_all(conn, sock, None)?;
                }
            },
        }
    }

    /// Writes everything, retrying timeouts until no progress for
    /// [`WRITE_STALL_LIMIT`] or the network stops.
    pub(super) fn write_all(&mut self, mut data: &[u8], shared: &Shared) -> io::Result<()> {
        match self {
            Io::Plain(s) => {
                let mut last = Instant::now();
                while !data.is_empty() {
                    match s.write(data) {
                        Ok(0) => return Err(ErrorKind::WriteZero.into()),
                        Ok(n) => {
                            data = &data[n..];
                            last = Instant::now();
                        }
                        Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {
                            if shared.stopping() {
                                return Err(stopped());
                            }
                            if last.elapsed() > WRITE_STALL_LIMIT {
                                return Err(ErrorKind::TimedOut.into());
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Io::Tls { conn, sock, .. } => {
                while !data.is_empty() {
                    let n = conn.writer().write(data)?;
                    data = &data[n..];
                    write_tls_all(conn, sock, Some(shared))?;
                }
                Ok(())
            }
        }
    }

    pub(super) fn flush(&mut self, shared: &Shared) -> io::Result<()> {
        match self {
            Io::Plain(s) => s.flush(),
            Io::Tls { conn, sock, .. } => write_tls_all(conn, sock, Some(shared)),
        }
    }

    /// Orderly close: TLS close_notify, then FIN both ways.
    pub(super) fn close(&mut self, shared: &Shared) {
        if let Io::Tls { conn, sock, .. } = self {
            conn.send_close_notify();
            let _ = write_tls_all(conn, sock, Some(shared));
        }
        let _ = self.sock().shutdown(Shutdown::Both);
    }
}

fn write_tls_all(
    conn: &mut ServerConnection,
    sock: &mut TcpStream,
    shared: Option<&Shared>,
) -> io::Result<()> {
    let mut last = Instant::now();
    while conn.wants_write() {
        match conn.write_tls(sock) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(_) => last = Instant::now(),
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {
                if shared.is_some_and(Shared::stopping) {
                    return Err(stopped());
                }
                let limit = if shared.is_some() {
                    WRITE_STALL_LIMIT
                } else {
                    HANDSHAKE_TIMEOUT
                };
                if last.elapsed() > limit {
                    return Err(ErrorKind::TimedOut.into());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn handshake(conn: &mut ServerConnection, sock: &mut TcpStream, shared: &Shared) -> io::Result<()> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    while conn.is_handshaking() {
        if conn.wants_write() {
            write_tls_all(conn, sock, Some(shared))?;
            continue;
        }
        match conn.read_tls(sock) {
            Ok(0) => {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "peer closed during the TLS handshake",
                ));
            }
            Ok(_) => {
                if let Err(e) = conn.process_new_packets() {
                    // Send our alert, if any, before giving up.
                    let _ = write_tls_all(conn, sock, Some(shared));
                    return Err(io::Error::new(ErrorKind::InvalidData, e));
                }
            }
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {
                if shared.stopping() {
                    return Err(stopped());
                }
                if Instant::now() > deadline {
                    return Err(io::Error::new(
                        ErrorKind::TimedOut,
                        "TLS handshake timed out",
                    ));
                }
            }
            Err(e) => return Err(e),
        }
    }
    write_tls_all(conn, sock, Some(shared))
}

pub(super) fn serve_connection(
    shared: Arc<Shared>,
    sock: TcpStream,
    conn_no: u64,
    tls: Option<Arc<ServerConfig>>,
) {
    let _ = sock.set_nodelay(true);
    let _ = sock.set_read_timeout(Some(POLL));
    let _ = sock.set_write_timeout(Some(POLL));
    let mut io = match tls {
        None => Io::Plain(sock),
        Some(cfg) => {
            let mut conn = match ServerConnection::new(cfg) {
                Ok(c) => Box::new(c),
                Err(e) => {
                    eprintln!("[localnet] conn {conn_no}: {e}");
                    return;
                }
            };
            let mut sock = sock;
            if let Err(e) = handshake(&mut conn, &mut sock, &shared) {
                if !shared.stopping() {
                    let msg = format!("conn {conn_no}: TLS handshake failed: {e}");
                    if shared.verbose {
                        eprintln!("[localnet] {msg}");
                    }
                    shared.state().tls_errors.push(msg);
                }
                let _ = sock.shutdown(Shutdown::Both);
                return;
            }
            Io::Tls {
                conn,
                sock,
                eof: false,
            }
        }
    };
    let client_cert = match &io {
        Io::Tls { conn, .. } => conn.peer_certificates().is_some_and(|c| !c.is_empty()),
        Io::Plain(_) => false,
    };
    let mut reader = Reader { buf: Vec::new() };
    let mut seq = 0u64;
    loop {
        let outcome = match reader.read_request(&mut io, &shared) {
            Ok(o) => o,
            Err(e) => {
                if !is_benign(&e) && !shared.stopping() && e.kind() != ErrorKind::TimedOut {
                    eprintln!("[localnet] conn {conn_no}: reading a request: {e}");
                }
                break;
            }
        };
        let req = match outcome {
            ReadOutcome::Request(r) => r,
            ReadOutcome::Closed => break,
            ReadOutcome::Bad(status, why) => {
                let mut resp = Response::text(status, why);
                resp.header("Connection", "close");
                let _ = send_response(&mut io, &shared, &resp, None);
                break;
            }
        };
        seq += 1;
        let ctx = ConnCtx {
            conn_no,
            seq,
            tls: matches!(io, Io::Tls { .. }),
            client_cert,
        };
        match handle(&shared, &mut io, &ctx, req) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                if !is_benign(&e) && !shared.stopping() {
                    eprintln!("[localnet] conn {conn_no}: answering: {e}");
                }
                let _ = io.sock().shutdown(Shutdown::Both);
                return;
            }
        }
    }
    io.close(&shared);
}

struct ConnCtx {
    conn_no: u64,
    seq: u64,
    tls: bool,
    client_cert: bool,
}

/// Answers one request; Ok(false) when the connection must close.
fn handle(shared: &Shared, io: &mut Io, ctx: &ConnCtx, req: Request) -> io::Result<bool> {
    let fault = {
        let mut st = shared.state();
        let pos = st
            .faults
            .iter()
            .position(|(suffix, _)| req.path.ends_with(suffix.as_str()));
        pos.and_then(|p| st.faults.remove(p)).map(|(_, f)| f)
    };
    let fault_name = fault.as_ref().map(Fault::name);
    let keep_alive = shared.state().keep_alive;
    let mut close = req.wants_close() || !keep_alive;

    let mut body_fault = BodyFault::None;
    let mut resp = match fault {
        Some(Fault::Status {
            code,
            retry_after,
            body,
        }) => {
            let mut r = Response::new(code);
            if let Some(ra) = retry_after {
                r.header("Retry-After", &ra);
            }
            if code == 401 {
                r.header("WWW-Authenticate", "Basic realm=\"cncop\"");
            }
            if !bodyless(code) {
                r.header("Content-Type", "text/plain; charset=utf-8");
                r.body = Body::Bytes(body);
            }
            r
        }
        Some(Fault::Redirect { location, code }) => {
            let mut r = Response::new(code);
            r.header("Location", &location);
            r
        }
        Some(Fault::RawBody {
            status,
            headers,
            body,
        }) => Response {
            status,
            headers,
            body: Body::Bytes(body),
        },
        Some(Fault::RawBytes { bytes, close }) => {
            record(shared, ctx, &req, 0, fault_name);
            io.write_all(&bytes, shared)?;
            io.flush(shared)?;
            if close {
                io.close(shared);
            }
            return Ok(!close);
        }
        Some(Fault::CloseNoResponse) => {
            record(shared, ctx, &req, 0, fault_name);
            io.close(shared);
            return Ok(false);
        }
        other => {
            if let Some(Fault::Delay { for_ }) = &other
                && !shared.nap(*for_)
            {
                return Ok(false);
            }
            body_fault = match other {
                Some(Fault::CloseMidBody { after_bytes }) => BodyFault::CloseAfter(after_bytes),
                Some(Fault::Stall { after_bytes, for_ }) => BodyFault::Stall(after_bytes, for_),
                Some(Fault::Drip {
                    bytes_per_tick,
                    tick,
                }) => BodyFault::Drip(bytes_per_tick.max(1), tick),
                Some(Fault::ContentLengthTooLong { extra }) => BodyFault::TooLong(extra),
                _ => BodyFault::None,
            };
            route(shared, &req)
        }
    };
    if matches!(body_fault, BodyFault::CloseAfter(_) | BodyFault::TooLong(_)) {
        close = true;
    }
    if close && !resp.has_header("connection") {
        resp.header("Connection", "close");
    }
    record(shared, ctx, &req, resp.status, fault_name);
    if shared.verbose {
        eprintln!(
            "[localnet] conn {} #{}: {} {}{}{} -> {}{}",
            ctx.conn_no,
            ctx.seq,
            req.method,
            req.path,
            if req.query.is_some() { "?" } else { "" },
            req.query.as_deref().unwrap_or(""),
            resp.status,
            fault_name
                .map(|f| format!(" (fault {f})"))
                .unwrap_or_default()
        );
    }
    let head_only = req.method == "HEAD";
    let keep = send_response(io, shared, &resp, Some((&body_fault, head_only)))?;
    Ok(keep && !close)
}

fn record(shared: &Shared, ctx: &ConnCtx, req: &Request, status: u16, fault: Option<&'static str>) {
    let rec = Recorded {
        conn: ctx.conn_no,
        seq_on_conn: ctx.seq,
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        headers: req.headers.clone(),
        body: req.body.clone(),
        status,
        fault,
        tls: ctx.tls,
        client_cert: ctx.client_cert,
    };
    let mut st = shared.state();
    if req.method == "POST" && req.path.ends_with("/firewall") {
        st.firewall_reports.push(req.body.clone());
    }
    st.requests.push(rec);
}

/// Sends a response; Ok(false) if a fault closed the connection.
fn send_response(
    io: &mut Io,
    shared: &Shared,
    resp: &Response,
    fault: Option<(&BodyFault, bool)>,
) -> io::Result<bool> {
    let (fault, head_only) = fault.unwrap_or((&BodyFault::None, false));
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    let has = |k: &str| resp.has_header(k);
    if !has("date") {
        head.push_str(&format!("Date: {}\r\n", http_date(SystemTime::now())));
    }
    if !has("server") {
        head.push_str("Server: cncop-localnet\r\n");
    }
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let len = resp.body.wire_len();
    if !bodyless(resp.status) && !has("content-length") && !has("transfer-encoding") {
        let announced = match fault {
            BodyFault::TooLong(extra) => len + extra,
            _ => len,
        };
        head.push_str(&format!("Content-Length: {announced}\r\n"));
    }
    head.push_str("\r\n");
    io.write_all(head.as_bytes(), shared)?;
    if head_only || bodyless(resp.status) {
        io.flush(shared)?;
        return Ok(true);
    }
    let mut sender = Sender {
        io,
        shared,
        sent: 0,
        fault,
        stalled: false,
    };
    let flow = match &resp.body {
        Body::Empty => Flow::Go,
        Body::Bytes(b) => sender.send_pieces(b),
        Body::Profile { data, gzip: false } => sender.send_pieces(&data.bytes),
        Body::Profile { data, gzip: true } => sender.send_pieces(data.gzipped()),
    };
    let flow = match flow {
        Flow::Err(e) => return Err(e),
        f => f,
    };
    io.flush(shared)?;
    if matches!(flow, Flow::Close)
        || matches!(fault, BodyFault::CloseAfter(_) | BodyFault::TooLong(_))
    {
        io.close(shared);
        return Ok(false);
    }
    Ok(true)
}
