//! End-to-end tests of signed metadata (PROTOCOL 8), run by the real binary
//! against the local network acting as a compromised or replaying server:
//! every attack on the update metadata, the root chain and the profile
//! manifest is refused with the documented outcome (an error line naming the
//! document and the check; for profiles exit 5), nothing is announced, the
//! store and the trust state keep their bytes, and the next honest run
//! succeeds.
//!
//! Each test has its own network, install root, vendor keys and UDP socket
//! standing in for ccs3updater; keys are made at run time with ring.

use std::net::UdpSocket;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;
use support::*;

/// After the agent exited, a datagram it sent is already queued.
const QUIET_WAIT: Duration = Duration::from_millis(300);
const DATAGRAM_WAIT: Duration = Duration::from_secs(5);

/// A device with a signed setup: its network, install root, vendor, and a
/// UDP socket standing in for ccs3updater. Installed software is 3.4.0.
struct Rig {
    net: TestNetwork,
    inst: Install,
    vendor: Authority,
    updater: UdpSocket,
}

impl Rig {
    /// An honest first run: root 1 shipped, release 1 offers the installed
    /// 3.4.0 (nothing to announce), the profile stored.
    fn new() -> Rig {
        let rig = Rig::unrun();
        rig.run_ok("the honest first run");
        rig.assert_none("the honest first run (3.4.0 is installed)");
        rig
    }

    fn unrun() -> Rig {
        let updater = UdpSocket::bind("127.0.0.1:0").expect("bind the updater socket");
        let port = updater.local_addr().expect("addr").port();
        let (net, inst) = two_jobs_on_appliance(&update_ini(port.into(), "On"));
        let vendor = signed_release(&net, &inst, "3.4.0");
        Rig {
            net,
            inst,
            vendor,
            updater,
        }
    }

    #[track_caller]
    fn run_ok(&self, what: &str) -> Output {
        let o = self.inst.run(&[]);
        assert_exit(&o, 0, what);
        o
    }

    /// The trust state as kept on disk.
    fn kept(&self) -> Vec<u8> {
        trust_state_bytes(&self.inst).expect("the trust state was written")
    }

    fn recv(&self, wait: Duration) -> Option<String> {
        recv_datagram(&self.updater, wait).map(|(d, _)| String::from_utf8_lossy(&d).into_owned())
    }

    #[track_caller]
    fn assert_none(&self, what: &str) {
        if let Some(d) = self.recv(QUIET_WAIT) {
            panic!("{what}: ccs3updater was told {d:?}");
        }
    }

    #[track_caller]
    fn assert_announced(&self, version: &str, what: &str) {
        let d = self
            .recv(DATAGRAM_WAIT)
            .unwrap_or_else(|| panic!("{what}: no datagram for {version}"));
        assert!(
            d.starts_with(&format!("CCS3UPDATE version={version} ")),
            "{what}: {d:?}"
        );
        self.assert_none(&format!("{what}: after the one datagram"));
    }

    /// Runs the agent against the attack `what` set up before: exit 0, an
    /// error line on stderr holding every one of `expect`, nothing announced,
    /// trust state and store unchanged.
    #[track_caller]
    fn refused(&self, what: &str, expect: &[&str]) -> Output {
        let (kept, store) = (self.kept(), snap(&self.inst));
        let o = self.run_ok(what);
        let lines = err_lines(&o);
        assert!(
            lines.iter().any(|l| expect.iter().all(|e| l.contains(e))),
            "{what}: no stderr line with all of {expect:?}\n{}",
            show(&o)
        );
        self.assert_none(what);
        assert!(self.kept() == kept, "{what}: the trust state changed");
        assert_store_untouched(&store, &self.inst, what);
        o
    }

    /// Publishes an honest release of `version` and expects it announced:
    /// the refused attack did not break the device.
    #[track_caller]
    fn recovers(&mut self, version: &str, what: &str) {
        self.vendor
            .publish_release(&self.net, &builds(version), FAR);
        let o = self.run_ok(&format!("{what}: the honest run after"));
        assert!(
            err_lines(&o).is_empty(),
            "{what}: the honest run after is not clean\n{}",
            show(&o)
        );
        self.assert_announced(version, &format!("{what}: the honest run after"));
    }

    /// The next release's versions and documents, unpublished.
    fn next_release(&mut self, version: &str, expires: u64) -> (u64, Signed, Signed) {
        let (release, ts) = self.vendor.release(&builds(version), expires);
        (self.vendor.release_version, release, ts)
    }

    fn publish_pair(&self, m: u64, release: Signed, ts: Signed) {
        self.net
            .publish(&format!("software/release/{m}.xml"), release);
        self.net.publish("software/timestamp.xml", ts);
    }
}

fn short(id: &str) -> &str {
    &id[..16]
}

// ---------------------------------------------------------------------------
// Update metadata
// ---------------------------------------------------------------------------

#[test]
fn an_unsigned_timestamp_is_refused() {
    let mut rig = Rig::new();
    let (m, release, mut ts) = rig.next_release("3.10.0", FAR);
    ts.signatures.clear();
    rig.publish_pair(m, release, ts);
    rig.refused(
        "unsigned timestamp",
        &["update check failed", "timestamp.xml", "no signatures"],
    );
    rig.recovers("3.10.0", "unsigned timestamp");
}

#[test]
fn a_timestamp_signed_by_a_wrong_key_is_refused() {
    let mut rig = Rig::new();
    let (m, release, ts) = rig.next_release("3.10.0", FAR);
    let stranger = Key::generate();
    let forged = Signed::new("timestamp", ts.body, &[&stranger]);
    rig.publish_pair(m, release, forged);
    rig.refused(
        "timestamp signed by a wrong key",
        &[
            "timestamp.xml",
            short(&stranger.id),
            "is not a timestamp key",
        ],
    );
    rig.recovers("3.10.0", "wrong key");
}

#[test]
fn a_release_signed_by_the_timestamp_key_is_refused() {
    let mut rig = Rig::new();
    let (m, release, ts) = rig.next_release("3.10.0", FAR);
    let online = rig.vendor.roles.timestamp.keys[0].clone();
    let forged = Signed::new("release", release.body, &[&online]);
    rig.publish_pair(m, forged, ts);
    rig.refused(
        "release signed by the timestamp key",
        &[
            &format!("release/{m}.xml"),
            short(&online.id),
            "is not a release key",
        ],
    );
    rig.recovers("3.10.0", "timestamp key as release");
}

#[test]
fn a_duplicated_signature_does_not_reach_a_threshold_of_two() {
    let mut rig = Rig::unrun();
    // Root 2: two release keys, threshold 2.
    let mut roles = rig.vendor.roles.clone();
    let (r1, r2) = (Key::generate(), Key::generate());
    roles.release = RoleKeys {
        keys: vec![r1.clone(), r2.clone()],
        threshold: 2,
    };
    rig.vendor.rotate(roles);
    rig.vendor.publish_roots(&rig.net);
    rig.vendor.publish_release(&rig.net, &builds("3.4.0"), FAR);
    rig.run_ok("root 2, release signed by both");
    rig.assert_none("3.4.0 is installed");

    let (m, release, ts) = rig.next_release("3.10.0", FAR);
    let one = r1.sign("release", &release.body);
    let doubled = Signed {
        body: release.body,
        signatures: vec![one.clone(), one],
    };
    rig.publish_pair(m, doubled, ts);
    rig.refused(
        "one release key twice",
        &[
            &format!("release/{m}.xml"),
            "signed by 1 of the 2",
            "signed twice",
        ],
    );
    rig.recovers("3.10.0", "duplicated signature");
}

#[test]
fn an_expired_timestamp_is_refused() {
    let mut rig = Rig::new();
    let past = unix_now() - 60;
    let (m, release, _) = rig.next_release("3.10.0", FAR);
    let ts = rig.vendor.timestamp_for(&release, m, past);
    rig.publish_pair(m, release, ts);
    rig.refused(
        "expired timestamp",
        &["timestamp.xml", "expired at", &utc(past), "clock "],
    );
    rig.recovers("3.10.0", "expired timestamp");
}

#[test]
fn an_expired_release_is_refused() {
    let mut rig = Rig::new();
    let past = unix_now() - 60;
    let (m, release, _) = rig.next_release("3.10.0", past);
    let ts = rig.vendor.timestamp_for(&release, m, FAR);
    rig.publish_pair(m, release, ts);
    rig.refused(
        "expired release",
        &[
            &format!("release/{m}.xml version {m} expired at"),
            &utc(past),
        ],
    );
    rig.recovers("3.10.0", "expired release");
}

#[test]
fn release_bytes_must_match_the_timestamps_digest_and_size() {
    let mut rig = Rig::new();
    // Another release, validly signed, under the digest of the first.
    let (m, release, ts) = rig.next_release("3.10.0", FAR);
    let other = Signed::new(
        "release",
        release_xml(m, FAR, &builds("9.9.9")),
        &[&rig.vendor.roles.release.keys[0]],
    );
    assert_ne!(other.body.len(), release.body.len());
    rig.publish_pair(m, other.clone(), ts.clone());
    rig.refused(
        "release under another's digest",
        &[&format!("release/{m}.xml"), "timestamp.xml version"],
    );
    // Same size, other bytes.
    let mut same_size = release.body.clone();
    let at = same_size.len() - 3;
    same_size[at] = b' ';
    let tampered = Signed::new("release", same_size, &[&rig.vendor.roles.release.keys[0]]);
    rig.publish_pair(m, tampered, ts);
    rig.refused(
        "release with other bytes of the same size",
        &["with sha256", "says"],
    );
    rig.recovers("3.10.0", "release digest");
}

#[test]
fn rolled_back_timestamp_and_release_versions_are_refused() {
    let mut rig = Rig::new();
    // Timestamp 2 and release 2 accepted (nothing to announce).
    let (m, release2, ts2) = rig.next_release("3.4.0", FAR);
    assert_eq!(m, 2);
    rig.publish_pair(2, release2.clone(), ts2);
    rig.run_ok("versions 2");
    rig.assert_none("versions 2 offer 3.4.0");
    let ts_key = rig.vendor.roles.timestamp.keys[0].clone();
    let rel_key = rig.vendor.roles.release.keys[0].clone();

    // Timestamp 1 again (naming release 2).
    let ts1 = Signed::new(
        "timestamp",
        timestamp_xml(1, FAR, 2, &release2.body),
        &[&ts_key],
    );
    rig.net.publish("software/timestamp.xml", ts1);
    rig.refused(
        "timestamp replayed",
        &[
            "timestamp.xml version 1 is lower than the version 2",
            "rollback",
        ],
    );
    // A newer timestamp naming an older release (offering more).
    let release1 = Signed::new(
        "release",
        release_xml(1, FAR, &builds("3.10.0")),
        &[&rel_key],
    );
    let ts10 = Signed::new(
        "timestamp",
        timestamp_xml(10, FAR, 1, &release1.body),
        &[&ts_key],
    );
    rig.publish_pair(1, release1, ts10);
    rig.refused(
        "release version rolled back",
        &[
            "names release version 1, lower than the version 2",
            "rollback",
        ],
    );
    rig.recovers("3.10.0", "rollbacks");
}

#[test]
fn software_older_than_announced_before_is_not_announced() {
    let mut rig = Rig::new();
    rig.vendor.publish_release(&rig.net, &builds("3.10.0"), FAR);
    rig.run_ok("3.10.0 offered");
    rig.assert_announced("3.10.0", "3.10.0 offered");
    rig.vendor.publish_release(&rig.net, &builds("3.9.0"), FAR);
    rig.refused(
        "3.9.0 after 3.10.0",
        &["older than 3.10.0 announced before", "3.9.0"],
    );
    rig.recovers("3.11.0", "older software");
}

#[test]
fn an_endless_release_body_is_cut_at_the_timestamps_size() {
    let mut rig = Rig::new();
    let (m, release, ts) = rig.next_release("3.10.0", FAR);
    let size = release.body.len();
    rig.publish_pair(m, release.clone(), ts);
    // 8 MiB in chunks, no Content-Length: as endless as a device notices.
    let mut bytes = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nTransfer-Encoding: chunked\r\n{SIGNATURE_HEADER}: {}\r\n\r\n",
        release.signatures[0]
    )
    .into_bytes();
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..128 {
        bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        bytes.extend_from_slice(&chunk);
        bytes.extend_from_slice(b"\r\n");
    }
    rig.net.push_fault(
        &format!("/software/release/{m}.xml"),
        Fault::RawBytes { bytes, close: true },
    );
    rig.refused(
        "endless release",
        &[
            &format!("release/{m}.xml"),
            &format!("longer than {size} bytes"),
        ],
    );
    rig.recovers("3.10.0", "endless release");
}

#[test]
fn a_clock_in_1970_fails_the_update_check_and_says_so() {
    let mut rig = Rig::new();
    let (m, release, ts) = rig.next_release("3.10.0", FAR);
    rig.publish_pair(m, release, ts);
    let (kept, store) = (rig.kept(), snap(&rig.inst));
    let mut cmd = agent_command();
    cmd.env("CNCOP_HOME", rig.inst.root()).env("CNCOP_NOW", "0");
    let o = exec(cmd, RUN_LIMIT);
    assert_exit(&o, 0, "clock in 1970");
    assert!(
        err_lines(&o)
            .iter()
            .any(|l| l.contains("update check failed")
                && l.contains("1970-01-01T00:00:00Z")
                && l.contains("clock is wrong")),
        "{}",
        show(&o)
    );
    rig.assert_none("clock in 1970");
    assert!(rig.kept() == kept, "clock in 1970: the trust state changed");
    assert_store_untouched(&store, &rig.inst, "clock in 1970");
    rig.run_ok("the clock fixed");
    rig.assert_announced("3.10.0", "the clock fixed");
}

#[test]
fn without_a_trusted_root_there_is_no_update_check() {
    let rig = Rig::unrun();
    std::fs::remove_file(rig.inst.path("Config/cncop-root.xml")).expect("remove the root");
    let o = rig.inst.run(&["-d"]);
    assert_exit(&o, 0, "no root");
    assert!(err_lines(&o).is_empty(), "{}", show(&o));
    rig.assert_none("no root");
    let asked: Vec<Recorded> = rig
        .net
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/software/") || r.path.contains("/trust/"))
        .collect();
    assert!(asked.is_empty(), "metadata was asked for: {asked:#?}");
    let logs = rig.inst.read_logs();
    assert_eq!(
        logs.matches("no trusted root").count(),
        1,
        "one log line says so\n{logs}"
    );
    assert!(trust_state_bytes(&rig.inst).is_none());
}

// ---------------------------------------------------------------------------
// The root chain
// ---------------------------------------------------------------------------

/// Roles with a new key for `root` and for `timestamp`.
fn new_root_and_timestamp_keys(old: &Roles) -> Roles {
    let mut roles = old.clone();
    roles.root = RoleKeys::one(&Key::generate());
    roles.timestamp = RoleKeys::one(&Key::generate());
    roles
}

#[test]
fn three_good_rotations_are_accepted_kept_and_the_old_keys_refused() {
    let mut rig = Rig::new();
    let first = rig.vendor.roles.clone();
    for _ in 0..3 {
        let roles = new_root_and_timestamp_keys(&rig.vendor.roles);
        rig.vendor.rotate(roles);
    }
    rig.vendor.publish_roots(&rig.net);
    // The vendor's timestamp key changed: a new timestamp from the new key.
    rig.recovers("3.10.0", "three rotations");
    let asked: Vec<String> = rig
        .net
        .requests()
        .iter()
        .filter(|r| r.path.contains("/trust/root/"))
        .map(|r| format!("{} {}", r.path.rsplit('/').next().unwrap_or(""), r.status))
        .collect();
    assert!(
        asked.ends_with(&[
            "2.xml 200".into(),
            "3.xml 200".into(),
            "4.xml 200".into(),
            "5.xml 404".into()
        ]),
        "{asked:?}"
    );

    // Kept: the next run starts from root 4 (asks for 5 only).
    rig.net.clear_requests();
    rig.run_ok("after the rotations");
    rig.assert_announced("3.10.0", "after the rotations (still newer than installed)");
    let asked: Vec<String> = rig
        .net
        .requests()
        .iter()
        .filter(|r| r.path.contains("/trust/root/"))
        .map(|r| r.path.rsplit('/').next().unwrap_or("").to_string())
        .collect();
    assert_eq!(asked, ["5.xml"], "the accepted root was kept");

    // The first timestamp key no longer counts.
    let (m, release, ts) = rig.next_release("3.12.0", FAR);
    let old_key = first.timestamp.keys[0].clone();
    rig.publish_pair(m, release, Signed::new("timestamp", ts.body, &[&old_key]));
    rig.refused(
        "timestamp by a rotated-out key",
        &[
            "timestamp.xml (root version 4)",
            short(&old_key.id),
            "is not a timestamp key",
        ],
    );
    // Nor does the first root key sign a root 5.
    let mut roles = rig.vendor.roles.clone();
    roles.root = first.root.clone();
    let v5 = root_xml(5, FAR, &roles);
    rig.net.publish(
        "trust/root/5.xml",
        Signed::new("root", v5, &[&first.root.keys[0]]),
    );
    rig.refused(
        "root 5 by the first root key",
        &["trusted root update refused", "root/5.xml", "(version 4)"],
    );
}

/// Root 2 documents made by `make` from the vendor's current roles and
/// fresh root keys, published at `trust/root/2.xml`: refused, root 1 kept.
#[track_caller]
fn refused_rotation(what: &str, expect: &[&str], make: impl FnOnce(&Authority, &Roles) -> Signed) {
    let mut rig = Rig::new();
    let roles = new_root_and_timestamp_keys(&rig.vendor.roles);
    let doc = make(&rig.vendor, &roles);
    rig.net.publish("trust/root/2.xml", doc);
    rig.refused(what, expect);
    // The timestamp key of the refused root signs nothing.
    rig.net.unpublish("trust/root/2.xml");
    rig.recovers("3.10.0", what);
}

fn old_root_keys(a: &Authority) -> Vec<Arc<Key>> {
    a.roles.root.keys.clone()
}

#[test]
fn a_rotation_that_skips_a_version_is_refused() {
    refused_rotation(
        "root 3 served as root 2",
        &["root/2.xml has version 3, expected exactly 2"],
        |a, roles| {
            let mut signers = old_root_keys(a);
            signers.extend(roles.root.keys.iter().cloned());
            let refs: Vec<&Key> = signers.iter().map(|k| &**k).collect();
            Signed::new("root", root_xml(3, FAR, roles), &refs)
        },
    );
}

#[test]
fn a_rotation_signed_only_by_the_new_keys_is_refused() {
    refused_rotation(
        "root 2 by its own keys only",
        &["root/2.xml is not signed by the trusted root's (version 1) root keys"],
        |_, roles| Signed::new("root", root_xml(2, FAR, roles), &[&roles.root.keys[0]]),
    );
}

#[test]
fn a_rotation_signed_only_by_the_old_keys_is_refused() {
    refused_rotation(
        "root 2 by the old keys only",
        &["root/2.xml (version 2) is not signed by its own root keys"],
        |a, roles| {
            let old = old_root_keys(a);
            Signed::new("root", root_xml(2, FAR, roles), &[&old[0]])
        },
    );
}

#[test]
fn a_root_whose_version_goes_down_is_refused() {
    refused_rotation(
        "root 1 served as root 2",
        &["root/2.xml has version 1, expected exactly 2"],
        |a, roles| {
            let mut signers = old_root_keys(a);
            signers.extend(roles.root.keys.iter().cloned());
            let refs: Vec<&Key> = signers.iter().map(|k| &**k).collect();
            Signed::new("root", root_xml(1, FAR, roles), &refs)
        },
    );
}

// ---------------------------------------------------------------------------
// Profile manifests
// ---------------------------------------------------------------------------

/// A device whose network signs its profile manifests; one honest run
/// stored profile version 1.
fn signed_profiles() -> Rig {
    let rig = Rig::unrun();
    rig.net.sign_profiles(rig.vendor.profile_key());
    rig.run_ok("the honest first run");
    rig
}

/// Serves a changed profile (version +1), so that the next run gets a 200.
fn change_profile(rig: &Rig, n: usize) -> Vec<u8> {
    let body = small_profile(DEVICE_ID, &[(&format!("{}", 2000 + n), "CCS")]);
    rig.net
        .set_profile(DEVICE_ID, body.clone(), Some(etag_for(&body)));
    body
}

/// Runs with the network lying as `lie`: exit 5, a stderr line holding all
/// of `expect`, store and trust state unchanged; then the truth is told
/// again and the run succeeds.
#[track_caller]
fn profile_refused(rig: &Rig, what: &str, lie: ManifestLie, expect: &[&str]) {
    rig.net.set_manifest_lie(lie);
    let (kept, store) = (rig.kept(), snap(&rig.inst));
    let o = rig.inst.run(&[]);
    assert_exit(&o, 5, what);
    assert!(
        err_lines(&o)
            .iter()
            .any(|l| expect.iter().all(|e| l.contains(e))),
        "{what}: no stderr line with all of {expect:?}\n{}",
        show(&o)
    );
    assert!(rig.kept() == kept, "{what}: the trust state changed");
    assert_store_untouched(&store, &rig.inst, what);
    rig.net.set_manifest_lie(ManifestLie::default());
    let o = rig.run_ok(&format!("{what}: the honest run after"));
    assert!(
        err_lines(&o).is_empty(),
        "{what}: the honest run after\n{}",
        show(&o)
    );
}

#[test]
fn a_200_without_a_good_manifest_is_refused() {
    let rig = signed_profiles();
    let stranger = Key::generate();
    let cases = [
        (
            "missing manifest",
            ManifestLie {
                missing: true,
                ..Default::default()
            },
            vec!["Cncop-Profile header is missing"],
        ),
        (
            "unsigned manifest",
            ManifestLie {
                unsigned: true,
                ..Default::default()
            },
            vec!["signed by 0 of the 1 profile keys", "no signatures"],
        ),
        (
            "bad signature",
            ManifestLie {
                bad_signature: true,
                ..Default::default()
            },
            vec!["signature does not verify"],
        ),
        (
            "another key",
            ManifestLie {
                signed_by: Some(stranger.clone()),
                ..Default::default()
            },
            vec![short(&stranger.id), "is not a profile key"],
        ),
        (
            "another device",
            ManifestLie {
                device: Some("NAS-99999".into()),
                ..Default::default()
            },
            vec!["is for device NAS-99999, this device is NAS-00042"],
        ),
        (
            "expired manifest",
            ManifestLie {
                expires: Some(unix_now() - 60),
                ..Default::default()
            },
            vec!["profile manifest version", "expired at"],
        ),
    ];
    for (i, (what, lie, expect)) in cases.into_iter().enumerate() {
        change_profile(&rig, i);
        profile_refused(&rig, what, lie, &expect);
    }
}

#[test]
fn profile_versions_never_go_down_and_one_version_is_one_content() {
    let rig = signed_profiles();
    change_profile(&rig, 1);
    rig.run_ok("version 2 stored");
    change_profile(&rig, 2);
    profile_refused(
        &rig,
        "version 1 after 2",
        ManifestLie {
            version: Some(1),
            ..Default::default()
        },
        &["version 1 is lower than the stored version 2", "rollback"],
    );
    change_profile(&rig, 3);
    profile_refused(
        &rig,
        "the stored version with other content",
        ManifestLie {
            version: Some(3),
            ..Default::default()
        },
        &["version 3 is the stored version but its sha256"],
    );
}

#[test]
fn a_body_of_another_size_or_digest_is_refused() {
    let rig = signed_profiles();
    let body = change_profile(&rig, 1);
    let len = body.len() as u64;
    profile_refused(
        &rig,
        "body longer than size",
        ManifestLie {
            size: Some(len - 10),
            ..Default::default()
        },
        &[
            "does not match its signed manifest",
            &format!("longer than the {} bytes", len - 10),
        ],
    );
    change_profile(&rig, 2);
    profile_refused(
        &rig,
        "body shorter than size",
        ManifestLie {
            size: Some(len + 10),
            ..Default::default()
        },
        &[
            "does not match its signed manifest",
            &format!("the manifest says {}", len + 10),
        ],
    );
    change_profile(&rig, 3);
    profile_refused(
        &rig,
        "body digest mismatch",
        ManifestLie {
            sha256: Some(sha256(b"another profile")),
            ..Default::default()
        },
        &[
            "does not match its signed manifest",
            &hex(&sha256(b"another profile"))[..16],
        ],
    );
}

#[test]
fn a_digest_mismatch_at_10000_jobs_leaves_the_store_untouched() {
    let rig = signed_profiles();
    let big = profile_xml(DEVICE_ID, 10_000);
    rig.net.set_profile(DEVICE_ID, big, Some("\"big\"".into()));
    profile_refused(
        &rig,
        "10 000 jobs under another digest",
        ManifestLie {
            sha256: Some(sha256(b"another profile")),
            ..Default::default()
        },
        &["does not match its signed manifest", "sha256"],
    );
    assert_eq!(
        stored_ids(&rig.inst).len(),
        10_000,
        "the honest run stored the 10 000 jobs"
    );
}

#[test]
fn a_304_must_carry_a_fresh_manifest_naming_the_stored_profile() {
    let rig = signed_profiles();
    let o = rig.run_ok("an honest 304");
    assert!(err_lines(&o).is_empty(), "{}", show(&o));
    assert_eq!(
        rig.net.profile_requests().last().map(|r| r.status),
        Some(304)
    );
    profile_refused(
        &rig,
        "unsigned 304",
        ManifestLie {
            unsigned: true,
            ..Default::default()
        },
        &["Cncop-Profile header", "no signatures"],
    );
    profile_refused(
        &rig,
        "304 without a manifest",
        ManifestLie {
            missing: true,
            ..Default::default()
        },
        &["Cncop-Profile header is missing"],
    );
    profile_refused(
        &rig,
        "304 with an expired manifest",
        ManifestLie {
            expires: Some(unix_now() - 60),
            ..Default::default()
        },
        &["expired at", "clock "],
    );
    profile_refused(
        &rig,
        "304 naming another version",
        ManifestLie {
            version: Some(7),
            ..Default::default()
        },
        &["304 names version 7", "the store holds version 1"],
    );
    assert_eq!(
        rig.net.profile_requests().last().map(|r| r.status),
        Some(304)
    );
}

#[test]
fn without_a_trusted_root_profiles_are_accepted_on_tls_alone() {
    let rig = Rig::unrun();
    std::fs::remove_file(rig.inst.path("Config/cncop-root.xml")).expect("remove the root");
    rig.net.sign_profiles(rig.vendor.profile_key());
    rig.net.set_manifest_lie(ManifestLie {
        missing: true,
        ..Default::default()
    });
    let o = rig.inst.run(&["-d"]);
    assert_exit(&o, 0, "no root, no manifest");
    assert_eq!(stored_ids(&rig.inst), id_set(&["1001", "1002"]));
    let logs = rig.inst.read_logs();
    assert!(
        logs.contains("profiles are accepted on TLS alone"),
        "{logs}"
    );
}

// ---------------------------------------------------------------------------
// The signing tool
// ---------------------------------------------------------------------------

#[test]
fn a_root_made_with_the_signing_tool_is_trusted_and_rotates() {
    let keys = tempfile::tempdir().expect("tmp");
    let k = |name: &str| keys.path().join(name).to_string_lossy().into_owned();
    for name in ["root1", "root2", "ts", "rel", "prof"] {
        sign::main(&["keygen".into(), k(name)]).expect("keygen");
    }
    let root = |out: &str, version: &str, root_key: &str, also: Option<&str>| {
        let mut args: Vec<String> = [
            "root",
            "--out",
            out,
            "--version",
            version,
            "--expires",
            "2099-01-01T00:00:00Z",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (flag, name) in [
            ("--root", root_key),
            ("--timestamp", "ts"),
            ("--release", "rel"),
            ("--profile", "prof"),
        ] {
            args.push(flag.into());
            args.push(k(name));
        }
        if let Some(old) = also {
            args.push("--also-sign".into());
            args.push(k(old));
        }
        sign::main(&args).expect("sign root");
    };
    let (net, inst) = two_jobs_on_appliance("");
    let shipped = inst
        .path("Config/cncop-root.xml")
        .to_string_lossy()
        .into_owned();
    root(&shipped, "1", "root1", None);
    let v2 = keys.path().join("2.xml").to_string_lossy().into_owned();
    root(&v2, "2", "root2", Some("root1"));
    let prof = std::fs::read_to_string(k("prof")).expect("read the profile key");
    net.sign_profiles(std::sync::Arc::new(Key::from_base64(&prof).expect("key")));
    let body = std::fs::read(&v2).expect("root 2");
    let sigs: Vec<String> = std::fs::read_to_string(format!("{v2}.sig"))
        .expect("root 2 signatures")
        .lines()
        .map(|l| l.trim_start_matches("Cncop-Signature: ").to_string())
        .collect();
    assert_eq!(sigs.len(), 2, "signed by the old and the new root key");
    net.publish(
        "trust/root/2.xml",
        Signed {
            body,
            signatures: sigs,
        },
    );

    let o = inst.run(&["-d"]);
    assert_exit(&o, 0, "a root from the signing tool");
    assert!(err_lines(&o).is_empty(), "{}", show(&o));
    let logs = inst.read_logs();
    assert!(logs.contains("accepted root version 2"), "{logs}");
    assert_eq!(stored_ids(&inst), id_set(&["1001", "1002"]));
}

// ---------------------------------------------------------------------------
// The kept trust state
// ---------------------------------------------------------------------------

#[test]
fn status_shows_the_trusted_versions_and_the_announced_software() {
    let mut rig = Rig::new();
    rig.recovers("3.10.0", "an announced update");
    let o = rig.inst.run(&["--status"]);
    assert_exit(&o, 0, "--status");
    let text = stdout_of(&o);
    assert!(
        text.contains("trust:        root 1, timestamp 2, release 2\n"),
        "{text}"
    );
    assert!(text.contains("software:     3.10.0 announced"), "{text}");
    assert!(
        text.contains("2 jobs, version 1,"),
        "the signed profile version\n{text}"
    );
}

#[test]
fn a_damaged_state_file_fails_the_update_check_closed_then_recovers() {
    let mut rig = Rig::new();
    let path = rig.inst.path("Config/cncopgetprofile.state");
    let mut bytes = std::fs::read(&path).expect("the state file");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).expect("damage the state file");
    rig.vendor.publish_release(&rig.net, &builds("3.10.0"), FAR);
    let o = rig.run_ok("damaged state");
    assert!(
        err_lines(&o)
            .iter()
            .any(|l| l.contains("update check failed")
                && l.contains("trust state")
                && l.contains("damaged")),
        "{}",
        show(&o)
    );
    rig.assert_none("damaged state");
    rig.run_ok("the run after");
    rig.assert_announced("3.10.0", "the run after the damaged state");
}
