//! URL routing, and the endpoints that are not the profile: firewall
//! reports and signed metadata (`trust.rs` holds the documents), with the
//! [`TestNetwork`] switches that set their answers.

use super::devices::{authenticate, profile};
use super::http::{Request, Response, bodyless};
use super::{Shared, TestNetwork};

impl TestNetwork {
    /// Status answered to firewall reports (default 202).
    pub fn set_firewall_status(&self, status: u16) {
        self.shared.state().firewall_status = status;
    }

    /// Bodies of all firewall reports received (whatever was answered).
    pub fn firewall_reports(&self) -> Vec<Vec<u8>> {
        self.shared.state().firewall_reports.clone()
    }
}

pub(super) fn route(shared: &Shared, req: &Request) -> Response {
    let Some(rest) = req
        .path
        .strip_prefix(shared.base_path.as_str())
        .and_then(|r| r.strip_prefix("/v3/"))
    else {
        return Response::text(404, "not found");
    };
    let segs: Vec<String> = rest.split('/').map(percent_decode).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["devices", id, "profile"] => {
            if req.method != "GET" && req.method != "HEAD" {
                return method_not_allowed("GET, HEAD");
            }
            profile(shared, req, id)
        }
        ["devices", id, "firewall"] => {
            if req.method != "POST" {
                return method_not_allowed("POST");
            }
            if let Err(r) = authenticate(shared, req, id) {
                return r;
            }
            let status = shared.state().firewall_status;
            if bodyless(status) {
                Response::new(status)
            } else {
                Response::text(status, "")
            }
        }
        ["trust", "root", _] | ["software", "timestamp.xml"] | ["software", "release", _] => {
            if req.method != "GET" && req.method != "HEAD" {
                return method_not_allowed("GET, HEAD");
            }
            let st = shared.state();
            super::trust::document(&st, rest).unwrap_or_else(|| Response::text(404, "not found"))
        }
        _ => Response::text(404, "not found"),
    }
}

fn method_not_allowed(allow: &str) -> Response {
    let mut r = Response::text(405, "method not allowed");
    r.header("Allow", allow);
    r
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}
