//! Talking to the cncop network (PROTOCOL sections 1 and 2): one ureq agent
//! per run (so one keep-alive connection), HTTP Basic with the device key,
//! TLS pinned to `ca_file` or the bundled roots, retries with capped
//! exponential backoff and jitter, and a profile body that refuses to grow
//! past `max_profile_bytes`.

use crate::clock;
use crate::config::{Config, Network, Secret};
use crate::error::io_reason;
use crate::error::{Error, Reason, Result};
use base64::Engine as _;
use std::io::Read;
use std::time::{Duration, Instant};
use ureq::tls::{ClientCert, PemItem, RootCerts, TlsConfig};

/// `cncopgetprofile/<version> (<target triple>)`, as PROTOCOL 1 requires.
pub fn user_agent() -> String {
    format!(
        "cncopgetprofile/{} ({})",
        env!("CARGO_PKG_VERSION"),
        target_triple()
    )
}

/// The target this binary was built for, the update "platform".
pub fn target_triple() -> &'static str {
    env!("CNCOP_TARGET")
}

/// Longest single wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The answer to a profile request.
pub enum ProfileResponse {
    /// 304: the stored profile is current.
    NotModified { signed: SignedHeaders },
    /// 200: the new profile, to be read from `body`.
    Changed {
        etag: Option<String>,
        body: ProfileBody,
        signed: SignedHeaders,
    },
}

/// The signed-metadata headers of a profile answer (PROTOCOL 8.2).
#[derive(Clone, Debug, Default)]
pub struct SignedHeaders {
    /// The `Cncop-Profile` manifest (the first, if several).
    pub manifest: Option<String>,
    /// Every `Cncop-Signature` value.
    pub signatures: Vec<String>,
}

impl SignedHeaders {
    fn of(resp: &Response) -> SignedHeaders {
        let text = |v: &ureq::http::HeaderValue| v.to_str().ok().map(str::to_string);
        SignedHeaders {
            manifest: resp
                .headers()
                .get(crate::trust::MANIFEST_HEADER)
                .and_then(text),
            signatures: signatures(resp),
        }
    }
}

/// A signed document (PROTOCOL 8.1): the status, the exact body bytes and
/// every `Cncop-Signature` value.
pub struct Signed {
    pub status: u16,
    pub body: Vec<u8>,
    pub signatures: Vec<String>,
}

fn signatures(resp: &Response) -> Vec<String> {
    resp.headers()
        .get_all(crate::trust::SIGNATURE_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect()
}

/// A client of the cncop network for one run.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    device: String,
    authorization: Secret,
    retries: u32,
    /// Retry waits never go past this much time after the first attempt.
    retry_budget: Duration,
    max_profile_bytes: u64,
}

impl Client {
    pub fn new(cfg: &Config) -> Result<Client> {
        let net = &cfg.network;
        if net.allow_insecure_http && net.url.starts_with("http://") {
            log::warn!(
                "[network] allow_insecure_http = On: talking to {} without TLS (lab use only)",
                net.url
            );
        }
        let tls = tls_config(cfg)?;
        let proxy = match &net.proxy {
            Some(p) => Some(ureq::Proxy::new(p).map_err(|e| {
                cfg.ini
                    .section("network")
                    .error("proxy", format!("'{p}' is not a proxy URL ({e})"))
            })?),
            None => ureq::Proxy::try_from_env(),
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .https_only(!net.allow_insecure_http)
            .user_agent(user_agent())
            .max_redirects(5)
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            // ureq's 128 KiB default buffers are a tenth of the agent's
            // memory budget; headers of this API are small.
            .input_buffer_size(32 * 1024)
            .output_buffer_size(16 * 1024)
            .max_response_header_size(16 * 1024)
            .max_idle_connections(1)
            .max_idle_connections_per_host(1)
            .tls_config(tls)
            .proxy(proxy)
            .timeout_connect(Some(net.connect_timeout))
            .timeout_resolve(Some(net.connect_timeout))
            .timeout_send_request(Some(net.connect_timeout))
            .timeout_recv_response(Some(net.read_timeout))
            .timeout_per_read(Some(net.read_timeout))
            .timeout_per_write(Some(net.read_timeout))
            .timeout_global(Some(net.timeout))
            .build()
            .new_agent();
        let credentials = format!("{}:{}", cfg.device.id, cfg.device.key.expose());
        Ok(Client {
            agent,
            base: net.url.clone(),
            device: cfg.device.id.clone(),
            authorization: Secret::new(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials.as_bytes())
            )),
            retries: net.retries,
            retry_budget: net.timeout,
            max_profile_bytes: net.max_profile_bytes,
        })
    }

    /// `GET {url}/v3/devices/{id}/profile`, with `If-None-Match` when `etag`
    /// is given; retries transient failures, then gives up with an error.
    pub fn profile(&self, etag: Option<&str>) -> Result<ProfileResponse> {
        let url = format!("{}/v3/devices/{}/profile", self.base, self.device);
        let resp = self.with_retries(&url, || {
            let mut req = self
                .agent
                .get(&url)
                .header("Accept", "application/xml")
                .header("Authorization", self.authorization.expose());
            if let Some(tag) = etag {
                req = req.header("If-None-Match", tag);
            }
            req.call()
        })?;
        let signed = SignedHeaders::of(&resp);
        match resp.status().as_u16() {
            304 => Ok(ProfileResponse::NotModified { signed }),
            200 => {
                let etag = resp
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                if resp
                    .body()
                    .content_length()
                    .is_some_and(|len| len > self.max_profile_bytes)
                {
                    return Err(too_large(self.max_profile_bytes));
                }
                let reader = resp
                    .into_body()
                    .into_with_config()
                    .limit(self.max_profile_bytes)
                    .reader();
                Ok(ProfileResponse::Changed {
                    etag,
                    body: ProfileBody {
                        inner: reader,
                        limit: self.max_profile_bytes,
                        bytes: 0,
                    },
                    signed,
                })
            }
            other => Err(unexpected_status(&url, other)),
        }
    }

    /// One GET of a signed document (`path` relative to the base URL): at
    /// most `max_bytes` of body, its signature headers. No retries: the
    /// update check runs again next hour, and must not hold up the run. A
    /// body over `max_bytes` is an error naming the limit.
    pub fn get_signed(&self, path: &str, max_bytes: u64) -> Result<Signed> {
        let url = format!("{}/{path}", self.base);
        let started = Instant::now();
        let resp = self
            .agent
            .get(&url)
            .header("Authorization", self.authorization.expose())
            .call()
            .map_err(|e| network_error(&url, e))?;
        let status = resp.status().as_u16();
        let signatures = signatures(&resp);
        let over =
            || Error::Network(format!("{url}: the body is longer than {max_bytes} bytes").into());
        if status == 200 && resp.body().content_length().is_some_and(|n| n > max_bytes) {
            return Err(over());
        }
        let body = resp
            .into_body()
            .into_with_config()
            .limit(max_bytes)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => over(),
                e => network_error(&url, e),
            })?;
        log::debug!(
            "GET {url}: {status}, {} bytes, {} signatures in {} ms",
            body.len(),
            signatures.len(),
            started.elapsed().as_millis()
        );
        Ok(Signed {
            status,
            body,
            signatures,
        })
    }

    /// One POST of an XML document (`path` relative to the base URL); the
    /// answer's status. No retries, for the same reason as `get_signed`.
    pub fn post_xml(&self, path: &str, xml: &str) -> Result<u16> {
        let url = format!("{}/{path}", self.base);
        let started = Instant::now();
        let resp = self
            .agent
            .post(&url)
            .header("Authorization", self.authorization.expose())
            .header("Content-Type", "application/xml")
            .send(xml)
            .map_err(|e| network_error(&url, e))?;
        let status = resp.status().as_u16();
        drain(resp);
        log::debug!(
            "POST {url}: {status} in {} ms",
            started.elapsed().as_millis()
        );
        Ok(status)
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    /// Runs `send` until it gets an answer that is not transient (anything
    /// but 429, 5xx or a connection failure), sleeping between attempts.
    /// Auth refusals come back as `Error::Auth`.
    fn with_retries(
        &self,
        url: &str,
        send: impl Fn() -> std::result::Result<Response, ureq::Error>,
    ) -> Result<Response> {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let t0 = Instant::now();
            let (error, retry_after) = match self.judge(url, send(), t0) {
                Answer::Final(result) => return result,
                Answer::Transient(error, retry_after) => (error, retry_after),
            };
            if attempt >= self.retries {
                return Err(error);
            }
            let wait = self.next_wait(attempt, started, &error, retry_after)?;
            attempt += 1;
            log::warn!(
                "{}; retry {attempt} of {} in {:.1} s",
                strip_kind(&error),
                self.retries,
                wait.as_secs_f64()
            );
            std::thread::sleep(wait);
        }
    }

    /// What one attempt's outcome means for the next; `t0` is when it began.
    fn judge(
        &self,
        url: &str,
        outcome: std::result::Result<Response, ureq::Error>,
        t0: Instant,
    ) -> Answer {
        let resp = match outcome {
            Ok(resp) => resp,
            Err(e) => {
                let transient = is_transient(&e);
                let err = network_error(url, e);
                return if transient {
                    Answer::Transient(err, None)
                } else {
                    Answer::Final(Err(err))
                };
            }
        };
        let status = resp.status().as_u16();
        log::debug!("GET {url}: {status} in {} ms", t0.elapsed().as_millis());
        match status {
            401 | 403 | 404 => Answer::Final(Err(match redirected_elsewhere(url, &resp) {
                // Basic credentials are not sent to another host: its
                // refusal says nothing about the key.
                Some(to) => Error::Auth(
                    format!(
                        "{url} redirected to {to}, which answered {status}: \
                     the device's credentials are sent only to the host of \
                     [network] url; check [network] url"
                    )
                    .into(),
                ),
                None => auth_error(url, &self.device, status),
            })),
            429 | 500..=599 => {
                let after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| clock::parse_retry_after(v, clock::system_now()));
                drain(resp);
                Answer::Transient(
                    Error::Network(format!("{url} answered {status} (try again later)").into()),
                    after,
                )
            }
            _ => Answer::Final(Ok(resp)),
        }
    }

    /// The wait before retry `attempt + 1`: the server's `Retry-After`, else
    /// the backoff. `Err` gives up with `error` when that wait is longer
    /// than the agent waits or would end past the run's retry budget.
    fn next_wait(
        &self,
        attempt: u32,
        started: Instant,
        error: &Error,
        retry_after: Option<Duration>,
    ) -> Result<Duration> {
        let wait = retry_after.unwrap_or_else(|| backoff(attempt));
        let limit = if wait > MAX_BACKOFF {
            format!("longer than the agent waits ({} s)", MAX_BACKOFF.as_secs())
        } else if started.elapsed() + wait > self.retry_budget {
            "past the time allowed ([network] timeout)".to_string()
        } else {
            return Ok(wait);
        };
        Err(Error::Network(
            format!(
                "{}; giving up: the next try would be in {} s, {limit}",
                strip_kind(error),
                wait.as_secs()
            )
            .into(),
        ))
    }
}

type Response = ureq::http::Response<ureq::Body>;

/// What an attempt's outcome means for the retry loop.
enum Answer {
    /// The response to hand back, or an error no retry can change.
    Final(Result<Response>),
    /// Worth another try; with the wait the server asked for (`Retry-After`).
    Transient(Error, Option<Duration>),
}

/// Reads and drops a short answer we do not need (an error page, a 202's
/// body), so the keep-alive connection can carry the next request; a long
/// one is cut off and the connection closed instead.
fn drain(resp: Response) {
    let _ = resp
        .into_body()
        .into_with_config()
        .limit(64 * 1024)
        .read_to_vec();
}

/// The message of an error without its "network error: " prefix, for
/// composing longer lines.
fn strip_kind(e: &Error) -> String {
    match e {
        Error::Network(m) => m.to_string(),
        other => other.to_string(),
    }
}

fn too_large(limit: u64) -> Error {
    Error::Profile(format!(
        "the profile is larger than [network] max_profile_bytes = {limit}; the store keeps the previous profile"
    ).into())
}

/// The profile body: counts bytes and turns ureq's limit error into the
/// agent's "profile too large" refusal.
pub struct ProfileBody {
    inner: ureq::BodyReader<'static>,
    limit: u64,
    bytes: u64,
}

impl ProfileBody {
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }
}

impl Read for ProfileBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.bytes += n as u64;
                Ok(n)
            }
            Err(e) => {
                let over = e
                    .get_ref()
                    .and_then(|i| i.downcast_ref::<ureq::Error>())
                    .is_some_and(|u| matches!(u, ureq::Error::BodyExceedsLimit(_)));
                if over {
                    Err(std::io::Error::other(too_large(self.limit)))
                } else {
                    Err(std::io::Error::other(network_error(
                        "the profile body",
                        ureq_from_io(e),
                    )))
                }
            }
        }
    }
}

/// ureq wraps its errors in `io::Error` when read through a body reader.
fn ureq_from_io(e: std::io::Error) -> ureq::Error {
    if e.get_ref().is_some_and(|i| i.is::<ureq::Error>()) {
        if let Some(Ok(inner)) = e.into_inner().map(|b| b.downcast::<ureq::Error>()) {
            return *inner;
        }
        return ureq::Error::ConnectionFailed;
    }
    ureq::Error::Io(e)
}

/// The URL that answered, when redirects led to another host than `url`'s.
fn redirected_elsewhere(url: &str, resp: &Response) -> Option<String> {
    use ureq::ResponseExt;
    let asked: ureq::http::Uri = url.parse().ok()?;
    let answered = resp.get_uri();
    (asked.authority() != answered.authority()).then(|| answered.to_string())
}

fn auth_error(url: &str, device: &str, status: u16) -> Error {
    let why = match status {
        401 => "wrong device id or key: check [device] id and key",
        403 => "this device is disabled on the cncop network: contact the network's operator",
        _ => {
            "this device is not registered on the cncop network: check [device] id and [network] url, or register the device"
        }
    };
    Error::Auth(format!("{url} answered {status} for device {device}: {why}").into())
}

fn unexpected_status(url: &str, status: u16) -> Error {
    Error::Network(format!("{url} answered with unexpected HTTP status {status}").into())
}

fn is_transient(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Io(io) => rustls_error(io).is_none(),
        ureq::Error::Timeout(_)
        | ureq::Error::ConnectionFailed
        | ureq::Error::HostNotFound
        | ureq::Error::Protocol(_)
        | ureq::Error::BodyStalled => true,
        _ => false,
    }
}

fn rustls_error(io: &std::io::Error) -> Option<&rustls::Error> {
    io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
}

/// A one-line, actionable description of a transport failure.
fn network_error(what: &str, e: ureq::Error) -> Error {
    let tls = match &e {
        ureq::Error::Rustls(r) => Some(r),
        ureq::Error::Io(io) => rustls_error(io),
        _ => None,
    };
    if let Some(r) = tls {
        let msg = tls_message(what, r);
        return Error::Network(Reason::caused_by(msg, e));
    }
    let msg = match &e {
        ureq::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => format!("{what}: connection refused"),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted => {
                format!("{what}: the connection was closed by the other end")
            }
            std::io::ErrorKind::UnexpectedEof => {
                format!("{what}: the connection ended before the answer was complete")
            }
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                format!("{what}: timed out")
            }
            _ => format!("{what}: {}", io_reason(io)),
        },
        ureq::Error::Timeout(t) => format!("{what}: timed out ({t})"),
        ureq::Error::HostNotFound => format!("{what}: host name not found (check DNS)"),
        ureq::Error::ConnectionFailed => format!("{what}: connection failed"),
        ureq::Error::RequireHttpsOnly(to) => {
            format!("{what}: refused to follow a redirect to plain http ({to})")
        }
        ureq::Error::TooManyRedirects => format!("{what}: too many redirects"),
        ureq::Error::BodyStalled => format!("{what}: the body stopped arriving"),
        // The gzip decoder wraps the transport's own errors: a connection
        // that ends early is not a decompression failure.
        ureq::Error::Decompress(coding, io) => match io.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted => format!(
                "{what}: the connection ended before the answer was complete ({coding} body cut short)"
            ),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                format!("{what}: timed out")
            }
            _ => format!("{what}: {coding} decompression failed: {}", io_reason(io)),
        },
        other => format!("{what}: {other}"),
    };
    Error::Network(Reason::caused_by(msg, e))
}

fn tls_message(what: &str, e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    let date_problem = matches!(
        e,
        rustls::Error::InvalidCertificate(
            C::Expired | C::NotValidYet | C::ExpiredContext { .. } | C::NotValidYetContext { .. }
        )
    );
    let now = clock::system_now();
    if date_problem && now < clock::build_time() {
        return format!(
            "{what}: TLS refused the server certificate ({e}) because this device's clock says {}, \
             which is before this agent was built ({}): the clock is wrong; fix NTP/the time and retry",
            clock::rfc3339(now),
            clock::rfc3339(clock::build_time())
        );
    }
    if matches!(e, rustls::Error::InvalidCertificate(C::UnknownIssuer)) {
        return format!(
            "{what}: TLS refused the server certificate ({e}): it is not signed by a CA this \
             device trusts; set [network] ca_file to the cncop network's CA certificate (PEM), \
             or check that the file it names is that CA"
        );
    }
    format!("{what}: TLS failed: {e}")
}

fn read_pem(cfg: &Config, key: &str, path: &std::path::Path) -> Result<Vec<PemItem<'static>>> {
    let sec = cfg.ini.section("network");
    let bytes = std::fs::read(path).map_err(|e| {
        sec.error(
            key,
            format!("cannot read {}: {}", path.display(), io_reason(&e)),
        )
    })?;
    ureq::tls::parse_pem(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| sec.error(key, format!("{} is not PEM: {e}", path.display())))
}

/// The certificates of the PEM file `path` that `[network] key` names; at
/// least one.
fn read_certificates(
    cfg: &Config,
    key: &str,
    path: &std::path::Path,
) -> Result<Vec<ureq::tls::Certificate<'static>>> {
    let certs: Vec<_> = read_pem(cfg, key, path)?
        .into_iter()
        .filter_map(|i| match i {
            PemItem::Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(cfg
            .ini
            .section("network")
            .error(key, format!("{} holds no certificate", path.display())));
    }
    Ok(certs)
}

fn tls_config(cfg: &Config) -> Result<TlsConfig> {
    let net: &Network = &cfg.network;
    let sec = cfg.ini.section("network");
    let mut tls = TlsConfig::builder();
    if let Some(ca) = &net.ca_file {
        let certs = read_certificates(cfg, "ca_file", ca)?;
        tls = tls.root_certs(RootCerts::new_with_certs(&certs));
    } else {
        tls = tls.root_certs(RootCerts::WebPki);
    }
    if let (Some(cert), Some(key)) = (&net.client_cert, &net.client_key) {
        let chain = read_certificates(cfg, "client_cert", cert)?;
        let private = read_pem(cfg, "client_key", key)?
            .into_iter()
            .find_map(|i| match i {
                PemItem::PrivateKey(k) => Some(k),
                _ => None,
            })
            .ok_or_else(|| {
                sec.error(
                    "client_key",
                    format!("{} holds no private key", key.display()),
                )
            })?;
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, private)));
    }
    Ok(tls.build())
}

/// Capped exponential backoff with jitter: 1, 2, 4 ... 30 s, each scaled by
/// a random factor in [0.5, 1] so a fleet does not retry in step.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_secs(1u64 << attempt.min(5)).min(Duration::from_secs(30));
    base.mul_f64(0.5 + 0.5 * random_unit())
}

/// A random number in [0, 1) for jitter and splay, from the operating
/// system's generator through ring (already linked for TLS): a fleet started
/// by the same cron minute must not draw the same waits.
pub fn random_unit() -> f64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // No randomness from the OS: no jitter is still a correct wait.
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_units_are_in_range_and_differ() {
        let draws: Vec<f64> = (0..100).map(|_| random_unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)), "{draws:?}");
        assert!(draws.windows(2).any(|w| w[0] != w[1]), "{draws:?}");
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        for attempt in 0..20 {
            let d = backoff(attempt);
            assert!(d <= Duration::from_secs(30));
            assert!(d >= Duration::from_millis(500));
        }
    }

    #[test]
    fn a_connection_cut_under_gzip_is_not_called_a_decompression_failure() {
        let cut = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "Peer disconnected");
        let msg =
            network_error("the profile body", ureq::Error::Decompress("gzip", cut)).to_string();
        assert!(
            msg.contains("ended before the answer was complete"),
            "{msg}"
        );
        let bad = std::io::Error::new(std::io::ErrorKind::InvalidInput, "corrupt deflate stream");
        let msg =
            network_error("the profile body", ureq::Error::Decompress("gzip", bad)).to_string();
        assert!(msg.contains("gzip decompression failed"), "{msg}");
    }

    #[test]
    fn user_agent_names_version_and_target() {
        let ua = user_agent();
        assert!(ua.starts_with("cncopgetprofile/"));
        assert!(ua.contains(target_triple()));
    }
}
