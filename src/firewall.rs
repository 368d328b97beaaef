//! The open-firewall check (PROTOCOL 5): which endpoints this device must
//! reach, TCP probes of them within a time budget, each endpoint's remembered
//! state (the `firewall` section of the state file, `encode_states`), what to
//! report, the `<firewall-report>` document and its POST.
//!
//! [`run`] is the whole step: `endpoints_of` the stored profile ->
//! `probe_all` -> `plan_all` (with the states `decode_states` read) -> the
//! report of the entries, POST -> `after_report` -> `next_states` ->
//! `encode_states`, written only when it changed. Endpoints the profile no
//! longer needs are forgotten there, never reported.

use crate::clock::{self, UnixTime};
use crate::config::Ini;
use crate::error::Result;
use crate::fetch::Client;
use crate::state::{Section, StateFile};
use crate::store::JobStore;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Probes run at once: enough to hide a few slow timeouts, few enough for a
/// small appliance.
const PROBE_THREADS: usize = 8;
/// Longest error text kept and reported per endpoint.
const MAX_ERROR: usize = 256;

/// `[firewall]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirewallConfig {
    pub enabled: bool,
    /// Bound on one endpoint's connection attempt.
    pub probe_timeout: Duration,
    /// Bound on the whole check.
    pub budget: Duration,
    /// A still-blocked endpoint is reported again after this long.
    pub rereport: Duration,
}

impl FirewallConfig {
    pub fn from_ini(ini: &Ini) -> Result<FirewallConfig> {
        let sec = ini.section("firewall");
        let hours: u64 = sec.number("rereport_hours", 24, 1..=8760)?;
        Ok(FirewallConfig {
            enabled: sec.boolean("enabled", true)?,
            probe_timeout: sec.seconds("probe_timeout", 5, 1..=300)?,
            budget: sec.seconds("budget", 60, 1..=3600)?,
            rereport: Duration::from_secs(hours * 3600),
        })
    }
}

/// What one firewall check found, for the run's record.
#[derive(Debug)]
pub struct Checked {
    /// The endpoints found blocked; `None` when nothing was probed (the
    /// check is off, or no profile is stored yet).
    pub blocked: Option<Vec<EndpointKey>>,
    /// The first failure: reading the store, keeping the states, else
    /// sending the report (which is then due again next run).
    pub result: Result<()>,
}

impl Checked {
    fn nothing_probed(result: Result<()>) -> Checked {
        Checked {
            blocked: None,
            result,
        }
    }
}

/// PROTOCOL 5: probes the endpoints the stored profile needs, reports
/// changes (and what an earlier run could not deliver), keeps the states.
pub fn run(
    cfg: &FirewallConfig,
    store: &JobStore,
    state: &mut StateFile,
    client: &Client,
    now: UnixTime,
) -> Checked {
    if !cfg.enabled {
        log::debug!("firewall check off ([firewall] enabled = Off)");
        return Checked::nothing_probed(Ok(()));
    }
    let keys = match endpoints_of(store) {
        Ok(Some(keys)) => keys,
        Ok(None) => {
            log::debug!("firewall check skipped: no profile stored yet");
            return Checked::nothing_probed(Ok(()));
        }
        Err(e) => return Checked::nothing_probed(Err(e)),
    };
    let states = kept_states(state);
    let probes = probe_and_log(&keys, cfg);
    let blocked = keys
        .iter()
        .zip(&probes)
        .filter(|(_, p)| matches!(p, Probe::Blocked { .. }))
        .map(|(k, _)| k.clone())
        .collect();
    let mut planned = plan_all(
        &keys,
        &probes,
        |k| states.get(&k.store_key()).cloned(),
        now,
        cfg.rereport,
    );
    let sent = send_report(client, &mut planned, now);
    // Written only when a state changed: an unchanged run writes nothing.
    let kept = state
        .put(Section::FIREWALL, encode_states(&next_states(&planned)))
        .map(drop);
    Checked {
        blocked: Some(blocked),
        result: kept.and(sent),
    }
}

/// The endpoints the stored profile needs (`endpoints_to_check` of its
/// endpoints and enabled jobs' targets); `None` when no profile is stored,
/// or only one of another store schema, which this run could not rebuild
/// (its tables are not this schema's).
fn endpoints_of(store: &JobStore) -> Result<Option<Vec<EndpointKey>>> {
    let stored = store.meta().is_some() && !store.needs_rebuild();
    let Some(reader) = store.reader().filter(|_| stored) else {
        return Ok(None);
    };
    let endpoints = reader.endpoints()?;
    let mut targets = Vec::new();
    for job in reader.jobs()? {
        let job = job?;
        if let (true, Some(t)) = (job.enabled, &job.target) {
            let t = (t.host.to_string(), t.port, String::from("tcp"));
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
    }
    Ok(Some(endpoints_to_check(
        endpoints
            .iter()
            .map(|e| (e.host.as_str(), e.port, e.proto.as_str())),
        targets,
    )))
}

/// The states the state file kept; a section that does not decode counts
/// as none (every endpoint first seen), with a warning.
fn kept_states(state: &StateFile) -> States {
    let Some(bytes) = state.get(Section::FIREWALL) else {
        return States::new();
    };
    decode_states(bytes).unwrap_or_else(|| {
        log::warn!(
            "firewall: the firewall section of {} is not readable; every endpoint counts as first seen",
            state.path().display()
        );
        States::new()
    })
}

/// `probe_all` within `[firewall]`'s bounds, with the debug line of what it
/// found and a warning naming what the budget left unprobed.
fn probe_and_log(keys: &[EndpointKey], cfg: &FirewallConfig) -> Vec<Probe> {
    let started = Instant::now();
    let probes = probe_all(keys, cfg.probe_timeout, cfg.budget, PROBE_THREADS);
    let named = |want: fn(&Probe) -> bool| -> Vec<String> {
        keys.iter()
            .zip(&probes)
            .filter(|(_, p)| want(p))
            .map(|(k, _)| k.to_string())
            .collect()
    };
    let blocked = named(|p| matches!(p, Probe::Blocked { .. }));
    let not_reached = named(|p| matches!(p, Probe::NotReached));
    log::debug!(
        "firewall: probed {} endpoints in {} ms, {} blocked",
        keys.len(),
        started.elapsed().as_millis(),
        blocked.len()
    );
    if !not_reached.is_empty() {
        log::warn!(
            "firewall: {} endpoints not probed within [firewall] budget: {}",
            not_reached.len(),
            not_reached.join(", ")
        );
    }
    probes
}

/// POSTs the planned entries, if any, and marks them accepted when the
/// server said 202. Another status is a warning and the entries stay due;
/// a failed request is the `Err`, and they stay due as well.
fn send_report(client: &Client, planned: &mut [Planned], now: UnixTime) -> Result<()> {
    let entries: Vec<_> = entries(planned).cloned().collect();
    if entries.is_empty() {
        return Ok(());
    }
    let xml = report_xml(client.device(), now, &entries);
    let path = format!("v3/devices/{}/firewall", client.device());
    let (accepted, result) = match client.post_xml(&path, &xml) {
        Ok(202) => {
            log::info!("firewall report of {} endpoints accepted", entries.len());
            (true, Ok(()))
        }
        Ok(status) => {
            log::warn!(
                "firewall report of {} endpoints answered {status}; kept for the next run",
                entries.len()
            );
            (false, Ok(()))
        }
        Err(e) => (false, Err(e)),
    };
    after_report(planned, accepted, now);
    result
}

/// One endpoint to check. `host` is lower case (names are case-insensitive,
/// and the store key must not change with the profile's spelling).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub host: String,
    pub port: u16,
    pub proto: String,
}

impl EndpointKey {
    /// Lower-cases host and protocol; an empty protocol means `tcp`, IPv6
    /// brackets are dropped. `None` for an empty host or port 0.
    pub fn new(host: &str, port: u16, proto: &str) -> Option<EndpointKey> {
        let host = crate::config::unbracket_host(host.trim());
        let proto = proto.trim();
        if host.is_empty() || port == 0 || proto.contains('/') {
            return None;
        }
        Some(EndpointKey {
            host: host.to_ascii_lowercase(),
            port,
            proto: if proto.is_empty() {
                "tcp".to_string()
            } else {
                proto.to_ascii_lowercase()
            },
        })
    }

    /// The store's key, `tcp/host:port`.
    pub fn store_key(&self) -> String {
        format!("{}/{}:{}", self.proto, self.host, self.port)
    }

    /// Reads a `store_key` back; `None` if it is not one.
    pub fn from_store_key(key: &str) -> Option<EndpointKey> {
        let (proto, rest) = key.split_once('/')?;
        // The port is after the last colon, so IPv6 hosts need no brackets.
        let (host, port) = rest.rsplit_once(':')?;
        if !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let parsed = EndpointKey::new(host, port.parse().ok()?, proto)?;
        // Only keys `store_key` writes, byte for byte: a key that merely
        // normalises to one would be a second entry for the same endpoint.
        (parsed.store_key() == key).then_some(parsed)
    }
}

/// `host:port`, IPv6 in brackets, for log lines.
impl fmt::Display for EndpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The endpoints to probe: the profile's `firewall/endpoint`s, then the
/// target of every enabled job, each once, in that order. Entries that
/// cannot be probed (no host, port 0, a protocol other than tcp) are left
/// out with an info line.
fn endpoints_to_check<I, J, H1, P1, H2, P2>(profile: I, targets: J) -> Vec<EndpointKey>
where
    I: IntoIterator<Item = (H1, u16, P1)>,
    J: IntoIterator<Item = (H2, u16, P2)>,
    H1: AsRef<str>,
    P1: AsRef<str>,
    H2: AsRef<str>,
    P2: AsRef<str>,
{
    let all = profile
        .into_iter()
        .map(|(h, p, pr)| (h.as_ref().to_string(), p, pr.as_ref().to_string()))
        .chain(
            targets
                .into_iter()
                .map(|(h, p, pr)| (h.as_ref().to_string(), p, pr.as_ref().to_string())),
        );
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (host, port, proto) in all {
        let Some(key) = EndpointKey::new(&host, port, &proto) else {
            log::info!(
                "firewall: endpoint '{host}' port {port} '{proto}' skipped: not a host and port"
            );
            continue;
        };
        if key.proto != "tcp" {
            log::info!(
                "firewall: endpoint {key} skipped: only tcp can be probed, not {}",
                key.proto
            );
            continue;
        }
        if seen.insert(key.clone()) {
            out.push(key);
        }
    }
    out
}

/// What one probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Probe {
    Open,
    /// `error` is short and fixed where possible ("connection refused",
    /// "connection timed out", "host not found") so the server can group them.
    Blocked {
        error: String,
    },
    /// The budget ran out first: nothing is known, nothing changes.
    NotReached,
}

/// Probes every endpoint, `threads` at once; the result is in the order of
/// `endpoints`. Whatever is not finished when `budget` runs out is
/// `NotReached`, including a probe still waiting for DNS, which no timeout of
/// std bounds: such a worker is left behind and ends with the process.
fn probe_all(
    endpoints: &[EndpointKey],
    probe_timeout: Duration,
    budget: Duration,
    threads: usize,
) -> Vec<Probe> {
    let start = Instant::now();
    let deadline = later(start, budget);
    let mut results = vec![Probe::NotReached; endpoints.len()];
    if endpoints.is_empty() || budget.is_zero() {
        return results;
    }
    let shared = Arc::new(endpoints.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    let mut started = 0;
    for n in 0..threads.clamp(1, endpoints.len()) {
        let (shared, next, tx) = (Arc::clone(&shared), Arc::clone(&next), tx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("probe-{n}"))
            .spawn(move || work(&shared, &next, &tx, probe_timeout, deadline));
        match spawned {
            Ok(_) => started += 1,
            Err(e) => log::warn!("firewall: cannot start a probe thread: {e}"),
        }
    }
    if started == 0 {
        // No threads at all (a process limit): probe one by one here.
        work(&shared, &next, &tx, probe_timeout, deadline);
    }
    drop(tx);
    let mut received = 0;
    while received < endpoints.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match rx.recv_timeout(left) {
            Ok((i, probe)) => {
                if let Some(slot) = results.get_mut(i) {
                    *slot = probe;
                }
                received += 1;
            }
            Err(_) => break,
        }
    }
    results
}

fn work(
    endpoints: &[EndpointKey],
    next: &AtomicUsize,
    tx: &mpsc::Sender<(usize, Probe)>,
    probe_timeout: Duration,
    deadline: Instant,
) {
    while Instant::now() < deadline {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(endpoint) = endpoints.get(i) else {
            return;
        };
        let probe = probe_one(endpoint, probe_timeout);
        if tx.send((i, probe)).is_err() {
            // The budget ran out and nobody is listening any more.
            return;
        }
    }
}

/// One TCP connection attempt, closed at once; every address the host
/// resolves to is tried, all within `timeout`.
fn probe_one(endpoint: &EndpointKey, timeout: Duration) -> Probe {
    let blocked = |error: &str| Probe::Blocked {
        error: error.to_string(),
    };
    let addrs: Vec<SocketAddr> = match (endpoint.host.as_str(), endpoint.port).to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(_) => return blocked("host not found"),
    };
    if addrs.is_empty() {
        return blocked("host not found");
    }
    let end = later(Instant::now(), timeout);
    let mut last = String::from("connection timed out");
    for addr in addrs {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(_stream) => return Probe::Open,
            Err(e) => last = connect_error(&e),
        }
    }
    Probe::Blocked { error: last }
}

/// `from + d`, or a year on when that is beyond what `Instant` holds (a
/// caller's huge duration must not panic, nor end the check at once).
fn later(from: Instant, d: Duration) -> Instant {
    from.checked_add(d)
        .or_else(|| from.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(from)
}

/// Fixed words for the usual failures, without "(os error N)".
fn connect_error(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    let fixed = match e.kind() {
        ConnectionRefused => "connection refused",
        TimedOut | WouldBlock => "connection timed out",
        ConnectionReset => "connection reset",
        HostUnreachable => "host unreachable",
        NetworkUnreachable => "network unreachable",
        AddrNotAvailable => "address not available",
        PermissionDenied => "permission denied",
        _ => return short(&e.to_string()),
    };
    fixed.to_string()
}

fn short(s: &str) -> String {
    let mut end = s.len().min(MAX_ERROR);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// What the state file remembers about one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointState {
    pub blocked: bool,
    /// When the current state (blocked or open) began.
    pub since: UnixTime,
    /// When the server last accepted a report about this endpoint.
    pub last_reported: Option<UnixTime>,
    /// The server has accepted a report of the current state (or, for an
    /// endpoint open since first seen, there is nothing to report).
    pub reported: bool,
    /// Why it is blocked; empty when open.
    pub error: String,
}

const STATE_FORMAT: u8 = 1;
const FLAG_BLOCKED: u8 = 1;
const FLAG_REPORTED: u8 = 2;
const FLAG_LAST_REPORTED: u8 = 4;

impl EndpointState {
    /// Format 1: format byte, flags byte, `since` and `last_reported` as
    /// little-endian u64, then the error as a little-endian u16 length and
    /// UTF-8 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let error = short(&self.error);
        let mut flags = 0;
        if self.blocked {
            flags |= FLAG_BLOCKED;
        }
        if self.reported {
            flags |= FLAG_REPORTED;
        }
        if self.last_reported.is_some() {
            flags |= FLAG_LAST_REPORTED;
        }
        let mut out = Vec::with_capacity(20 + error.len());
        out.push(STATE_FORMAT);
        out.push(flags);
        out.extend_from_slice(&self.since.to_le_bytes());
        out.extend_from_slice(&self.last_reported.unwrap_or(0).to_le_bytes());
        // `short` keeps it far below u16::MAX.
        let len = u16::try_from(error.len()).unwrap_or(0);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&error.as_bytes()[..usize::from(len)]);
        out
    }

    /// `None` for anything `encode` did not write: the caller then treats the
    /// endpoint as first seen.
    pub fn decode(bytes: &[u8]) -> Option<EndpointState> {
        let (&[format, flags], rest) = bytes.split_first_chunk::<2>()?;
        if format != STATE_FORMAT
            || flags & !(FLAG_BLOCKED | FLAG_REPORTED | FLAG_LAST_REPORTED) != 0
        {
            return None;
        }
        let (since, rest) = rest.split_first_chunk::<8>()?;
        let (last, rest) = rest.split_first_chunk::<8>()?;
        let (len, rest) = rest.split_first_chunk::<2>()?;
        if rest.len() != usize::from(u16::from_le_bytes(*len)) {
            return None;
        }
        Some(EndpointState {
            blocked: flags & FLAG_BLOCKED != 0,
            since: u64::from_le_bytes(*since),
            last_reported: (flags & FLAG_LAST_REPORTED != 0).then(|| u64::from_le_bytes(*last)),
            reported: flags & FLAG_REPORTED != 0,
            error: std::str::from_utf8(rest).ok()?.to_string(),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReportState {
    Blocked,
    Cleared,
}

/// One `<endpoint/>` line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ReportEntry {
    pub key: EndpointKey,
    pub state: ReportState,
    pub since: UnixTime,
    /// Empty for `Cleared`.
    pub error: String,
}

impl ReportEntry {
    fn of(key: &EndpointKey, state: &EndpointState) -> ReportEntry {
        ReportEntry {
            key: key.clone(),
            state: if state.blocked {
                ReportState::Blocked
            } else {
                ReportState::Cleared
            },
            since: state.since,
            error: if state.blocked {
                state.error.clone()
            } else {
                String::new()
            },
        }
    }
}

/// The next state of one endpoint (`None`: unchanged) and what
/// to report about it.
///
/// A report is due when an endpoint becomes blocked, when a blocked one
/// clears, when one still blocked was last reported `rereport` ago or more
/// (or at a time after `now`: the clock was set back), and whenever the
/// current state's report was not yet accepted, so a failed POST is
/// repeated next run. `NotReached` changes nothing but still repeats such a
/// pending report: it is about a state already seen.
fn plan(
    key: &EndpointKey,
    previous: Option<&EndpointState>,
    probe: &Probe,
    now: UnixTime,
    rereport: Duration,
) -> (Option<EndpointState>, Option<ReportEntry>) {
    let fresh = |blocked: bool, error: &str, last_reported: Option<UnixTime>| EndpointState {
        blocked,
        since: now,
        last_reported,
        reported: false,
        error: short(error),
    };
    let report = |s: EndpointState| {
        let entry = ReportEntry::of(key, &s);
        (Some(s), Some(entry))
    };
    match (previous, probe) {
        (prev, Probe::NotReached) => (
            None,
            prev.filter(|p| !p.reported)
                .map(|p| ReportEntry::of(key, p)),
        ),
        (None, Probe::Open) => (
            Some(EndpointState {
                reported: true,
                ..fresh(false, "", None)
            }),
            None,
        ),
        (None, Probe::Blocked { error }) => report(fresh(true, error, None)),
        (Some(p), Probe::Open) if !p.blocked => {
            let pending = (!p.reported).then(|| ReportEntry::of(key, p));
            (None, pending)
        }
        (Some(p), Probe::Open) => report(fresh(false, "", p.last_reported)),
        (Some(p), Probe::Blocked { error }) if !p.blocked => {
            report(fresh(true, error, p.last_reported))
        }
        (Some(p), Probe::Blocked { error }) => {
            let due = !p.reported
                || match p.last_reported {
                    None => true,
                    Some(t) => now < t || now - t >= rereport.as_secs(),
                };
            if !due {
                return (None, None);
            }
            let next = EndpointState {
                error: short(error),
                ..p.clone()
            };
            let entry = ReportEntry::of(key, &next);
            ((next != *p).then_some(next), Some(entry))
        }
    }
}

/// One endpoint's part of this run: what the state file had, what was found,
/// what to write and what to report.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Planned {
    pub key: EndpointKey,
    pub previous: Option<EndpointState>,
    pub probe: Probe,
    /// The state to keep under `key.store_key()`; `None`: `previous` stays.
    pub state: Option<EndpointState>,
    pub report: Option<ReportEntry>,
}

/// `plan` for every endpoint. `previous` gives the stored state of a key.
/// `keys` and `probes` are `probe_all`'s input and output, in the same order.
fn plan_all(
    keys: &[EndpointKey],
    probes: &[Probe],
    mut previous: impl FnMut(&EndpointKey) -> Option<EndpointState>,
    now: UnixTime,
    rereport: Duration,
) -> Vec<Planned> {
    keys.iter()
        .zip(probes)
        .map(|(key, probe)| {
            let prev = previous(key);
            let (state, report) = plan(key, prev.as_ref(), probe, now, rereport);
            Planned {
                key: key.clone(),
                previous: prev,
                probe: probe.clone(),
                state,
                report,
            }
        })
        .collect()
}

/// The entries to send, in endpoint order.
fn entries(planned: &[Planned]) -> impl Iterator<Item = &ReportEntry> {
    planned.iter().filter_map(|p| p.report.as_ref())
}

/// After the POST: when the server accepted the report (202), every reported
/// endpoint's state is marked accepted now, so it is written. When it did
/// not, the states stay as planned (`reported == false`, or unchanged), and
/// the same reports are due next run.
fn after_report(planned: &mut [Planned], accepted: bool, now: UnixTime) {
    if !accepted {
        return;
    }
    for p in planned.iter_mut().filter(|p| p.report.is_some()) {
        if let Some(mut s) = p.state.take().or_else(|| p.previous.clone()) {
            s.reported = true;
            s.last_reported = Some(now);
            p.state = Some(s);
        }
    }
}

/// Each endpoint's state after this run, by `EndpointKey::store_key`: the
/// planned state or the previous one. Endpoints the profile no longer needs
/// are not planned, so they are forgotten, not reported.
fn next_states(planned: &[Planned]) -> States {
    planned
        .iter()
        .filter_map(|p| {
            let state = p.state.clone().or_else(|| p.previous.clone())?;
            Some((p.key.store_key(), state))
        })
        .collect()
}

/// Endpoint states by `EndpointKey::store_key`, as the state file keeps them.
pub type States = BTreeMap<String, EndpointState>;

const SECTION_FORMAT: u8 = 1;

/// The `firewall` section of the state file; `None` (no section) when no
/// endpoint is remembered. Format 1: a format byte (1), the number of
/// endpoints (u32), then for each, in ascending key order: the key's length
/// (u16) and bytes (`tcp/host:port`), the state record's length (u16) and
/// bytes (`EndpointState::encode`). Little-endian.
fn encode_states(states: &States) -> Option<Vec<u8>> {
    if states.is_empty() {
        return None;
    }
    let mut out = vec![SECTION_FORMAT];
    // Counts and lengths are far below their types' limits: keys are a host
    // name and a port, records at most 276 bytes (`short` errors).
    out.extend_from_slice(&(states.len() as u32).to_le_bytes());
    for (key, state) in states {
        let record = state.encode();
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&(record.len() as u16).to_le_bytes());
        out.extend_from_slice(&record);
    }
    Some(out)
}

/// The states of a section `encode_states` wrote; `None` for anything else
/// (the caller then treats every endpoint as first seen).
pub fn decode_states(bytes: &[u8]) -> Option<States> {
    let (&[format], rest) = bytes.split_first_chunk::<1>()?;
    let (count, mut rest) = rest.split_first_chunk::<4>()?;
    if format != SECTION_FORMAT {
        return None;
    }
    let count = u32::from_le_bytes(*count);
    let mut states = States::new();
    for _ in 0..count {
        let (key, after) = length_prefixed(rest)?;
        let (record, after) = length_prefixed(after)?;
        rest = after;
        let key = std::str::from_utf8(key).ok()?;
        EndpointKey::from_store_key(key)?;
        let state = EndpointState::decode(record)?;
        // Strictly ascending: one encoding per set of states.
        if states
            .last_key_value()
            .is_some_and(|(last, _)| last.as_str() >= key)
        {
            return None;
        }
        // `encode` shortens the error: a longer one was not written by it.
        if state.encode() != record {
            return None;
        }
        states.insert(key.to_string(), state);
    }
    (rest.is_empty() && !states.is_empty()).then_some(states)
}

/// A u16 length and that many bytes, and what follows.
fn length_prefixed(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_le_bytes(*len));
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// The `<firewall-report>` document of PROTOCOL 5.
fn report_xml<'a>(
    device: &str,
    now: UnixTime,
    entries: impl IntoIterator<Item = &'a ReportEntry>,
) -> String {
    let mut out = format!(
        "<firewall-report device=\"{}\" time=\"{}\">\n",
        escape(device),
        clock::rfc3339(now)
    );
    for e in entries {
        let state = match e.state {
            ReportState::Blocked => "blocked",
            ReportState::Cleared => "cleared",
        };
        out.push_str(&format!(
            "  <endpoint host=\"{}\" port=\"{}\" proto=\"{}\" state=\"{state}\" since=\"{}\"",
            escape(&e.key.host),
            e.key.port,
            escape(&e.key.proto),
            clock::rfc3339(e.since)
        ));
        if e.state == ReportState::Blocked {
            out.push_str(&format!(" error=\"{}\"", escape(&e.error)));
        }
        out.push_str("/>\n");
    }
    out.push_str("</firewall-report>\n");
    out
}

/// Attribute-value escaping. White space other than a space is written as a
/// character reference so the parser does not turn it into a space; other
/// control characters cannot appear in XML 1.0 at all and become U+FFFD.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::path::Path;

    const HOUR: u64 = 3600;
    const DAY: Duration = Duration::from_secs(24 * 3600);
    const T0: u64 = 1_795_762_805; // 2026-11-27T07:00:05Z

    fn key(host: &str, port: u16) -> EndpointKey {
        EndpointKey::new(host, port, "tcp").unwrap()
    }

    fn blocked(error: &str) -> Probe {
        Probe::Blocked {
            error: error.to_string(),
        }
    }

    fn state(
        blocked: bool,
        since: u64,
        last: Option<u64>,
        reported: bool,
        error: &str,
    ) -> EndpointState {
        EndpointState {
            blocked,
            since,
            last_reported: last,
            reported,
            error: error.to_string(),
        }
    }

    #[test]
    fn config_defaults_and_errors() {
        let ini = |t: &str| Ini::parse(Path::new("/r/Config/cncop3.ini"), t).unwrap();
        let cfg = FirewallConfig::from_ini(&ini("[device]\nid = X\n")).unwrap();
        assert_eq!(
            cfg,
            FirewallConfig {
                enabled: true,
                probe_timeout: Duration::from_secs(5),
                budget: Duration::from_secs(60),
                rereport: DAY,
            }
        );
        let cfg = FirewallConfig::from_ini(&ini(
            "[firewall]\nenabled = Off\nprobe_timeout = 2\nbudget = 10\nrereport_hours = 1\n",
        ))
        .unwrap();
        assert!(!cfg.enabled);
        assert_eq!(cfg.rereport, Duration::from_secs(HOUR));
        let e = FirewallConfig::from_ini(&ini("[firewall]\nbudget = 0\n")).unwrap_err();
        assert!(
            e.to_string()
                .contains("[firewall] budget: '0' is not a whole number"),
            "{e}"
        );
    }

    #[test]
    fn endpoints_are_deduplicated_in_order() {
        let profile = [
            ("Prime3.Example.NET", 443, "tcp"),
            ("prime3.example.net", 443, "TCP"),
            ("b.example", 22, ""),
            ("dns.example", 53, "udp"),
            ("", 80, "tcp"),
        ];
        let targets = vec![
            ("prime3.example.net".to_string(), 443, "tcp"),
            ("db1.example".to_string(), 1433, "tcp"),
            ("b.example".to_string(), 22, "tcp"),
            ("zero.example".to_string(), 0, "tcp"),
            ("[::1]".to_string(), 8443, "tcp"),
        ];
        let got = endpoints_to_check(profile, targets);
        assert_eq!(
            got,
            [
                key("prime3.example.net", 443),
                key("b.example", 22),
                key("db1.example", 1433),
                key("::1", 8443),
            ]
        );
        assert_eq!(got[3].to_string(), "[::1]:8443");
    }

    #[test]
    fn store_keys_round_trip() {
        for k in [
            key("prime3.example.net", 443),
            key("::1", 9),
            key("127.0.0.1", 65535),
        ] {
            assert_eq!(EndpointKey::from_store_key(&k.store_key()), Some(k));
        }
        assert_eq!(key("a", 1).store_key(), "tcp/a:1");
        assert_eq!(key("::1", 9).store_key(), "tcp/::1:9");
        for bad in [
            "",
            "tcp",
            "tcp/a",
            "tcp/a:",
            "tcp/:1",
            "tcp/a:0",
            "tcp/a:70000",
            "tcp/a:+1",
            "/a:1",
            "tcp/A:1",
            "TCP/a:1",
        ] {
            assert_eq!(EndpointKey::from_store_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn states_round_trip_and_garbage_is_refused() {
        let states = [
            state(true, T0, None, false, "connection timed out"),
            state(false, 0, Some(u64::MAX), true, ""),
            state(true, 1, Some(2), true, "h\u{f6}st n\u{f6}t found"),
        ];
        for s in states {
            let bytes = s.encode();
            assert_eq!(EndpointState::decode(&bytes), Some(s.clone()));
            for cut in 0..bytes.len() {
                assert_eq!(EndpointState::decode(&bytes[..cut]), None);
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(EndpointState::decode(&longer), None);
        }
        let mut bytes = states_bytes();
        bytes[0] = 2;
        assert_eq!(EndpointState::decode(&bytes), None);
        let mut bytes = states_bytes();
        bytes[1] |= 0x80;
        assert_eq!(EndpointState::decode(&bytes), None);
        let mut bytes = state(true, 1, None, false, "ab").encode();
        let n = bytes.len();
        bytes[n - 1] = 0xff;
        assert_eq!(EndpointState::decode(&bytes), None);
        let long = state(true, 1, None, false, &"x".repeat(5000));
        assert_eq!(
            EndpointState::decode(&long.encode()).unwrap().error.len(),
            MAX_ERROR
        );
    }

    #[test]
    fn the_state_file_section_is_pinned_and_strict() {
        let mut states = States::new();
        states.insert("tcp/b:2".into(), state(false, 7, None, true, ""));
        states.insert("tcp/a:1".into(), state(true, 5, Some(6), false, "e"));
        let bytes = encode_states(&states).unwrap();
        let mut expected = vec![1, 2, 0, 0, 0];
        for (key, record) in [
            (
                "tcp/a:1",
                &[
                    1u8, 5, 5, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 1, 0, b'e',
                ][..],
            ),
            (
                "tcp/b:2",
                &[1, 2, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
            ),
        ] {
            expected.extend_from_slice(&(key.len() as u16).to_le_bytes());
            expected.extend_from_slice(key.as_bytes());
            expected.extend_from_slice(&(record.len() as u16).to_le_bytes());
            expected.extend_from_slice(record);
        }
        assert_eq!(bytes, expected);
        assert_eq!(decode_states(&bytes), Some(states.clone()));
        assert_eq!(encode_states(&States::new()), None);

        for cut in 0..bytes.len() {
            assert_eq!(decode_states(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode_states(&longer), None);
        let mut other_format = bytes.clone();
        other_format[0] = 2;
        assert_eq!(decode_states(&other_format), None);
        // Keys out of order, and a key `store_key` would not write.
        let swapped = [
            &bytes[..5],
            &bytes[5 + 2 + 7 + 2 + 21..],
            &bytes[5..5 + 2 + 7 + 2 + 21],
        ]
        .concat();
        assert_eq!(decode_states(&swapped), None);
        let upper = String::from_utf8_lossy(&bytes).replace("tcp/a:1", "tcp/A:1");
        assert_eq!(decode_states(upper.as_bytes()), None);
        // An empty list is written as no section, so it is not one.
        assert_eq!(decode_states(&[1, 0, 0, 0, 0]), None);
    }

    #[test]
    fn next_states_keep_what_was_not_probed_and_drop_what_left_the_profile() {
        let (a, b) = (key("a.example", 1), key("b.example", 2));
        let old = state(true, T0, Some(T0), true, "connection refused");
        let planned = plan_all(
            &[a.clone(), b.clone()],
            &[Probe::NotReached, Probe::Open],
            |k| (*k == a).then(|| old.clone()),
            T0 + HOUR,
            DAY,
        );
        let next = next_states(&planned);
        assert_eq!(next.len(), 2);
        assert_eq!(next.get(&a.store_key()), Some(&old), "not reached: kept");
        assert!(!next[&b.store_key()].blocked, "first seen open");
        let only_b = plan_all(std::slice::from_ref(&b), &[Probe::Open], |_| None, T0, DAY);
        assert_eq!(next_states(&only_b).len(), 1, "a is no longer needed");
    }

    fn states_bytes() -> Vec<u8> {
        state(true, T0, Some(T0), true, "e").encode()
    }

    #[test]
    fn plan_transitions() {
        let k = key("prime3.example.net", 443);
        let now = T0;
        let refused = blocked("connection refused");
        let entry = |state: ReportState, since: u64, error: &str| ReportEntry {
            key: k.clone(),
            state,
            since,
            error: error.to_string(),
        };
        use ReportState::{Blocked as B, Cleared as C};
        let accepted_blocked = state(
            true,
            now - 30 * HOUR,
            Some(now - 2 * HOUR),
            true,
            "connection refused",
        );
        let due_blocked = state(
            true,
            now - 30 * HOUR,
            Some(now - 24 * HOUR),
            true,
            "connection refused",
        );
        #[allow(clippy::type_complexity)]
        let table: Vec<(
            &str,
            Option<EndpointState>,
            Probe,
            Option<EndpointState>,
            Option<ReportEntry>,
        )> = vec![
            (
                "new open",
                None,
                Probe::Open,
                Some(state(false, now, None, true, "")),
                None,
            ),
            (
                "new blocked",
                None,
                refused.clone(),
                Some(state(true, now, None, false, "connection refused")),
                Some(entry(B, now, "connection refused")),
            ),
            (
                "open stays open",
                Some(state(false, 5, None, true, "")),
                Probe::Open,
                None,
                None,
            ),
            (
                "open becomes blocked",
                Some(state(false, 5, Some(7), true, "")),
                blocked("connection timed out"),
                Some(state(true, now, Some(7), false, "connection timed out")),
                Some(entry(B, now, "connection timed out")),
            ),
            (
                "still blocked, reported 2 h ago",
                Some(accepted_blocked.clone()),
                refused.clone(),
                None,
                None,
            ),
            (
                "still blocked, error changed, not due",
                Some(accepted_blocked.clone()),
                blocked("connection timed out"),
                None,
                None,
            ),
            (
                "still blocked, reported 24 h ago",
                Some(due_blocked.clone()),
                refused.clone(),
                None,
                Some(entry(B, now - 30 * HOUR, "connection refused")),
            ),
            (
                "still blocked, due, new error",
                Some(due_blocked.clone()),
                blocked("host unreachable"),
                Some(EndpointState {
                    error: "host unreachable".to_string(),
                    ..due_blocked.clone()
                }),
                Some(entry(B, now - 30 * HOUR, "host unreachable")),
            ),
            (
                "still blocked, last report in the future (clock set back)",
                Some(state(true, 1, Some(now + HOUR), true, "connection refused")),
                refused.clone(),
                None,
                Some(entry(B, 1, "connection refused")),
            ),
            (
                "blocked not yet accepted is re-sent",
                Some(state(true, now - HOUR, None, false, "connection refused")),
                refused.clone(),
                None,
                Some(entry(B, now - HOUR, "connection refused")),
            ),
            (
                "blocked clears",
                Some(accepted_blocked.clone()),
                Probe::Open,
                Some(state(false, now, Some(now - 2 * HOUR), false, "")),
                Some(entry(C, now, "")),
            ),
            (
                "cleared not yet accepted is re-sent",
                Some(state(false, now - HOUR, Some(5), false, "")),
                Probe::Open,
                None,
                Some(entry(C, now - HOUR, "")),
            ),
            (
                "not reached, accepted",
                Some(accepted_blocked.clone()),
                Probe::NotReached,
                None,
                None,
            ),
            (
                "not reached, first seen",
                None,
                Probe::NotReached,
                None,
                None,
            ),
            (
                "not reached, pending report repeated",
                Some(state(true, now - HOUR, None, false, "connection refused")),
                Probe::NotReached,
                None,
                Some(entry(B, now - HOUR, "connection refused")),
            ),
        ];
        for (name, prev, probe, want_state, want_entry) in table {
            let (got_state, got_entry) = plan(&k, prev.as_ref(), &probe, now, DAY);
            assert_eq!(got_state, want_state, "{name}: state");
            assert_eq!(got_entry, want_entry, "{name}: report");
        }
    }

    #[test]
    fn after_report_marks_accepted_states() {
        let a = key("a.example", 1);
        let b = key("b.example", 2);
        let c = key("c.example", 3);
        let stored = |k: &EndpointKey| {
            (k.host == "b.example").then(|| state(true, 10, Some(20), true, "connection refused"))
        };
        let keys = [a.clone(), b.clone(), c.clone()];
        let probes = [
            blocked("connection refused"),
            blocked("connection refused"),
            Probe::Open,
        ];
        let now = 20 + 25 * HOUR;

        let mut refused_run = plan_all(&keys, &probes, stored, now, DAY);
        assert_eq!(entries(&refused_run).count(), 2);
        after_report(&mut refused_run, false, now);
        assert_eq!(
            refused_run[0].state,
            Some(state(true, now, None, false, "connection refused"))
        );
        assert_eq!(
            refused_run[1].state, None,
            "a failed re-report writes nothing"
        );
        assert_eq!(
            refused_run[2].state,
            Some(state(false, now, None, true, ""))
        );

        let mut run = plan_all(&keys, &probes, stored, now, DAY);
        after_report(&mut run, true, now);
        assert_eq!(
            run[0].state,
            Some(state(true, now, Some(now), true, "connection refused"))
        );
        assert_eq!(
            run[1].state,
            Some(state(true, 10, Some(now), true, "connection refused"))
        );
        assert_eq!(run[2].state, Some(state(false, now, None, true, "")));

        // The next run, an hour later, has nothing to say or write.
        let later = now + HOUR;
        let written: Vec<_> = run.iter().map(|p| p.state.clone()).collect();
        let next = plan_all(
            &keys,
            &probes,
            |k| written[keys.iter().position(|x| x == k).unwrap()].clone(),
            later,
            DAY,
        );
        assert!(
            next.iter().all(|p| p.state.is_none() && p.report.is_none()),
            "{next:?}"
        );
    }

    #[test]
    fn report_xml_exact_text() {
        let entries = [
            ReportEntry {
                key: key("prime3.cncop.example.net", 443),
                state: ReportState::Blocked,
                since: T0 - HOUR - 1,
                error: "connection timed out".to_string(),
            },
            ReportEntry {
                key: key("db1.office.example", 1433),
                state: ReportState::Cleared,
                since: T0,
                error: String::new(),
            },
            ReportEntry {
                key: key("h", 1),
                state: ReportState::Blocked,
                since: T0,
                error: "a<b>&\"c'\nd\u{1}".to_string(),
            },
        ];
        assert_eq!(
            report_xml("NAS-00042", T0, &entries),
            "<firewall-report device=\"NAS-00042\" time=\"2026-11-27T07:00:05Z\">\n\
             \x20 <endpoint host=\"prime3.cncop.example.net\" port=\"443\" proto=\"tcp\" state=\"blocked\" since=\"2026-11-27T06:00:04Z\" error=\"connection timed out\"/>\n\
             \x20 <endpoint host=\"db1.office.example\" port=\"1433\" proto=\"tcp\" state=\"cleared\" since=\"2026-11-27T07:00:05Z\"/>\n\
             \x20 <endpoint host=\"h\" port=\"1\" proto=\"tcp\" state=\"blocked\" since=\"2026-11-27T07:00:05Z\" error=\"a&lt;b&gt;&amp;&quot;c&apos;&#10;d\u{fffd}\"/>\n\
             </firewall-report>\n"
        );
        assert_eq!(
            report_xml("D&<", 0, []),
            "<firewall-report device=\"D&amp;&lt;\" time=\"1970-01-01T00:00:00Z\">\n</firewall-report>\n"
        );
    }

    /// A loopback port nothing listens on (bound, then released).
    fn closed_ports(n: usize) -> Vec<u16> {
        let listeners: Vec<TcpListener> = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect()
    }

    #[test]
    fn probes_loopback_open_and_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap().port();
        let closed = closed_ports(1)[0];
        let keys = [key("127.0.0.1", open), key("127.0.0.1", closed)];
        let got = probe_all(
            &keys,
            Duration::from_secs(5),
            Duration::from_secs(30),
            PROBE_THREADS,
        );
        assert_eq!(got, [Probe::Open, blocked("connection refused")]);
    }

    #[test]
    fn the_budget_bounds_the_check() {
        let keys: Vec<EndpointKey> = closed_ports(64)
            .into_iter()
            .map(|p| key("127.0.0.1", p))
            .collect();
        let got = probe_all(&keys, Duration::from_secs(1), Duration::from_secs(20), 4);
        assert_eq!(got.len(), keys.len());
        assert!(
            got.iter()
                .all(|p| matches!(p, Probe::Blocked { .. } | Probe::NotReached)),
            "{got:?}"
        );
        // A spent budget probes nothing at all.
        let none = probe_all(&keys, Duration::from_secs(1), Duration::ZERO, 4);
        assert!(none.iter().all(|p| *p == Probe::NotReached));
        assert!(probe_all(&[], Duration::from_secs(1), Duration::from_secs(1), 4).is_empty());
    }
}
