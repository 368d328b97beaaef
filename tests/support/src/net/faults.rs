//! Scripted misbehaviours: the faults tests queue, and the body sender
//! that applies the body faults (cut, stall, drip) while sending.

use std::io;
use std::time::Duration;

use super::Shared;
use super::TestNetwork;
use super::connection::{Io, stopped};

/// Size of the plaintext pieces a body is sent in.
const CHUNK: usize = 64 * 1024;

/// A scripted misbehaviour, consumed by the next request whose path (without
/// query) ends with the suffix it was pushed with.
///
/// `Status`, `Redirect`, `RawBody`, `RawBytes` and `CloseNoResponse` replace
/// the route's answer (no auth check). `Delay` waits, then the route answers.
/// The body faults (`CloseMidBody`, `Stall`, `Drip`, `ContentLengthTooLong`)
/// change how the route's own answer is sent; their byte counts are counted
/// in body bytes as sent on the wire (after gzip, if any).
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer `code` with `body` (text/plain) and, if set, `Retry-After`.
    Status {
        code: u16,
        retry_after: Option<String>,
        body: Vec<u8>,
    },
    /// Send the headers with the full `Content-Length`, then `after_bytes`
    /// of the body, then close the connection (TLS close_notify, then FIN).
    CloseMidBody { after_bytes: u64 },
    /// Send `after_bytes` of the body, then nothing for `for_` (socket kept
    /// open), then the rest.
    Stall { after_bytes: u64, for_: Duration },
    /// Send the body `bytes_per_tick` at a time, one piece every `tick`.
    Drip {
        bytes_per_tick: usize,
        tick: Duration,
    },
    /// Announce `extra` more bytes than the body has, send the body, close.
    ContentLengthTooLong { extra: u64 },
    /// Answer `code` (301/302/303/307/308) with `Location: location`.
    Redirect { location: String, code: u16 },
    /// Answer `status` with exactly these headers and body; a
    /// `Content-Length` is added unless `headers` has one.
    RawBody {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Write these bytes as the whole answer, then close when `close`.
    RawBytes { bytes: Vec<u8>, close: bool },
    /// Close the connection without answering.
    CloseNoResponse,
    /// Wait `for_` before answering normally.
    Delay { for_: Duration },
}

impl Fault {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Fault::Status { .. } => "Status",
            Fault::CloseMidBody { .. } => "CloseMidBody",
            Fault::Stall { .. } => "Stall",
            Fault::Drip { .. } => "Drip",
            Fault::ContentLengthTooLong { .. } => "ContentLengthTooLong",
            Fault::Redirect { .. } => "Redirect",
            Fault::RawBody { .. } => "RawBody",
            Fault::RawBytes { .. } => "RawBytes",
            Fault::CloseNoResponse => "CloseNoResponse",
            Fault::Delay { .. } => "Delay",
        }
    }
}

impl TestNetwork {
    /// Queues a one-shot fault for the next request whose path ends with
    /// `path_suffix` (`""` matches any). Faults are matched in FIFO order.
    pub fn push_fault(&self, path_suffix: &str, fault: Fault) {
        self.shared
            .state()
            .faults
            .push_back((path_suffix.to_string(), fault));
    }

    /// Faults not yet consumed.
    pub fn pending_faults(&self) -> usize {
        self.shared.state().faults.len()
    }

    pub fn clear_faults(&self) {
        self.shared.state().faults.clear();
    }
}

/// Body faults, applied while sending.
pub(super) enum BodyFault {
    None,
    CloseAfter(u64),
    Stall(u64, Duration),
    Drip(usize, Duration),
    TooLong(u64),
}

pub(super) enum Flow {
    Go,
    Close,
    Err(io::Error),
}

pub(super) struct Sender<'a> {
    pub(super) io: &'a mut Io,
    pub(super) shared: &'a Shared,
    pub(super) sent: u64,
    pub(super) fault: &'a BodyFault,
    pub(super) stalled: bool,
}

impl Sender<'_> {
    pub(super) fn send_pieces(&mut self, data: &[u8]) -> Flow {
        for piece in data.chunks(CHUNK) {
            match self.send(piece) {
                Flow::Go => {}
                other => return other,
            }
        }
        Flow::Go
    }

    pub(super) fn send(&mut self, data: &[u8]) -> Flow {
        match self.send_inner(data) {
            Ok(f) => f,
            Err(e) => Flow::Err(e),
        }
    }

    pub(super) fn send_inner(&mut self, data: &[u8]) -> io::Result<Flow> {
        if self.shared.stopping() {
            return Err(stopped());
        }
        match *self.fault {
            BodyFault::CloseAfter(after) => {
                let room = after.saturating_sub(self.sent);
                if (data.len() as u64) >= room {
                    let room = room as usize;
                    self.io.write_all(&data[..room], self.shared)?;
                    self.sent += room as u64;
                    return Ok(Flow::Close);
                }
            }
            BodyFault::Stall(after, dur) if !self.stalled => {
                let room = after.saturating_sub(self.sent);
                if (data.len() as u64) >= room {
                    let room = room as usize;
                    self.io.write_all(&data[..room], self.shared)?;
                    self.io.flush(self.shared)?;
                    self.sent += room as u64;
                    self.stalled = true;
                    if !self.shared.nap(dur) {
                        return Err(stopped());
                    }
                    return self.send_inner(&data[room..]);
                }
            }
            BodyFault::Drip(per, tick) => {
                for piece in data.chunks(per) {
                    self.io.write_all(piece, self.shared)?;
                    self.io.flush(self.shared)?;
                    self.sent += piece.len() as u64;
                    if !self.shared.nap(tick) {
                        return Err(stopped());
                    }
                }
                return Ok(Flow::Go);
            }
            _ => {}
        }
        self.io.write_all(data, self.shared)?;
        self.sent += data.len() as u64;
        Ok(Flow::Go)
    }
}
