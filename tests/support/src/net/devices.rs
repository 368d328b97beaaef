//! Registered devices and their profiles: the device API of
//! [`TestNetwork`], HTTP Basic authentication, the profile endpoint
//! (ETag, `If-None-Match`, gzip) and the gzip body it sends.

use std::io::Write;
use std::sync::{Arc, OnceLock};

use flate2::Compression;
use flate2::write::GzEncoder;

use super::http::{Body, Request, Response};
use super::util::base64_decode;
use super::{Shared, TestNetwork};

pub(super) struct ProfileBody {
    pub(super) bytes: Vec<u8>,
    gzipped: OnceLock<Vec<u8>>,
    /// Made when the profile is set: a cncop server signs a profile once,
    /// not per answer, and hashing a 43 MiB profile for each request would
    /// hold the first byte of every answer back by tens of milliseconds
    /// that the benchmarks would count as the agent's.
    pub(super) sha256: [u8; 32],
    /// The profile's version for signed manifests: counts `set_profile`.
    pub(super) version: u64,
}

impl ProfileBody {
    /// The body as sent to a client that accepts gzip, made once: stored
    /// (uncompressed) deflate blocks, so its size on the wire, where body
    /// faults count their bytes, stays about the profile's own.
    pub(super) fn gzipped(&self) -> &[u8] {
        self.gzipped.get_or_init(|| {
            let mut gz = GzEncoder::new(Vec::new(), Compression::none());
            gz.write_all(&self.bytes)
                .and_then(|()| gz.finish())
                .expect("gzip into memory cannot fail")
        })
    }
}

pub(super) struct Device {
    pub(super) key: String,
    pub(super) disabled: bool,
    pub(super) profile: Option<(Arc<ProfileBody>, Option<String>)>,
}

impl TestNetwork {
    /// Registers (or re-keys and re-enables) a device.
    pub fn add_device(&self, id: &str, key: &str) {
        let mut st = self.shared.state();
        match st.device_mut(id) {
            Some(d) => {
                d.key = key.to_string();
                d.disabled = false;
            }
            None => st.devices.push((
                id.to_string(),
                Device {
                    key: key.to_string(),
                    disabled: false,
                    profile: None,
                },
            )),
        }
    }

    /// Forgets a device (its requests then get 404).
    pub fn remove_device(&self, id: &str) {
        self.shared.state().devices.retain(|(k, _)| k != id);
    }

    /// Marks a device disabled (403) or enabled again.
    pub fn set_device_disabled(&self, id: &str, disabled: bool) {
        if let Some(d) = self.shared.state().device_mut(id) {
            d.disabled = disabled;
        }
    }

    /// Sets the profile served to device `id` (which must have been added)
    /// and its ETag, sent verbatim (so give it quoted: `"\"v1\""`; see
    /// [`etag_for`]). A device without a profile gets 404.
    pub fn set_profile(&self, id: &str, body: Vec<u8>, etag: Option<String>) {
        let mut st = self.shared.state();
        match st.device_mut(id) {
            Some(d) => {
                let version = d.profile.as_ref().map_or(0, |(p, _)| p.version) + 1;
                d.profile = Some((
                    Arc::new(ProfileBody {
                        sha256: super::trust::sha256(&body),
                        bytes: body,
                        gzipped: OnceLock::new(),
                        version,
                    }),
                    etag,
                ))
            }
            None => panic!("set_profile: device {id:?} was not added (add_device first)"),
        }
    }

    /// Removes the profile of device `id` (its profile requests then get 404).
    pub fn clear_profile(&self, id: &str) {
        if let Some(d) = self.shared.state().device_mut(id) {
            d.profile = None;
        }
    }

    /// The current ETag of device `id`'s profile.
    pub fn etag(&self, id: &str) -> Option<String> {
        let st = self.shared.state();
        st.device(id)
            .and_then(|d| d.profile.as_ref())
            .and_then(|(_, e)| e.clone())
    }
}

/// Unknown device -> 404; missing or wrong Basic credentials -> 401;
/// disabled -> 403.
pub(super) fn authenticate(shared: &Shared, req: &Request, id: &str) -> Result<(), Response> {
    let st = shared.state();
    let Some(dev) = st.device(id) else {
        return Err(Response::text(404, "device not registered"));
    };
    let creds = req
        .header("authorization")
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
        })
        .and_then(base64_decode)
        .and_then(|b| String::from_utf8(b).ok());
    let ok = creds
        .as_deref()
        .and_then(|c| c.split_once(':'))
        .is_some_and(|(user, key)| user == id && key == dev.key);
    if !ok {
        let mut r = Response::text(401, "wrong device id or key");
        r.header("WWW-Authenticate", "Basic realm=\"cncop\"");
        return Err(r);
    }
    if dev.disabled {
        return Err(Response::text(403, "device disabled"));
    }
    Ok(())
}

pub(super) fn profile(shared: &Shared, req: &Request, id: &str) -> Response {
    if let Err(r) = authenticate(shared, req, id) {
        return r;
    }
    let (data, etag, gzip_on) = {
        let st = shared.state();
        let Some((data, etag)) = st.device(id).and_then(|d| d.profile.clone()) else {
            return Response::text(404, "no profile for this device");
        };
        (data, etag, st.gzip)
    };
    let sign = |r: &mut Response| super::trust::sign_profile_answer(&shared.state(), r, id, &data);
    if let Some(inm) = req.header("if-none-match") {
        let matches = inm.split(',').map(str::trim).any(|tag| {
            tag == "*"
                || etag
                    .as_deref()
                    .is_some_and(|e| tag.trim_start_matches("W/") == e.trim_start_matches("W/"))
        });
        if matches {
            let mut r = Response::new(304);
            if let Some(e) = &etag {
                r.header("ETag", e);
            }
            sign(&mut r);
            return r;
        }
    }
    let mut r = Response::new(200);
    r.header("Content-Type", "application/xml");
    if let Some(e) = &etag {
        r.header("ETag", e);
    }
    let gzip = gzip_on && req.accepts_gzip();
    if gzip_on {
        r.header("Vary", "Accept-Encoding");
    }
    if gzip {
        r.header("Content-Encoding", "gzip");
    }
    sign(&mut r);
    r.body = Body::Profile { data, gzip };
    r
}
