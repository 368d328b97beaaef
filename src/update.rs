//! Software updates (PROTOCOL 4): the `[version]` settings and the command
//! line's choice, version comparison, the decision to announce a build of
//! the signed release, and the one UDP datagram that tells ccs3updater a
//! newer build exists.
//!
//! The signed metadata (timestamp, release) is `trust`'s; the requests are
//! `fetch`'s. Nothing here fails the run: a failed check is an error line.

use crate::config::Ini;
use crate::error::{Result, Shown};
use crate::fetch::Client;
use crate::state::StateFile;
use crate::trust::{Release, Trust};
use std::cmp::Ordering;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};

const DEFAULT_UPDATER_HOST: &str = "127.0.0.1";
const DEFAULT_UPDATER_PORT: u16 = 9998;
/// ccs3updater reads one datagram of at most this many bytes.
const MAX_DATAGRAM: usize = 1024;
/// Longest version text accepted; real ones are a few characters.
const MAX_VERSION_LEN: usize = 64;

/// `[version]`: what is installed and whether and where to announce updates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateConfig {
    pub installed: Version,
    pub autoupdate: bool,
    pub updater_host: String,
    pub updater_port: u16,
}

impl UpdateConfig {
    pub fn from_ini(ini: &Ini) -> Result<UpdateConfig> {
        let sec = ini.section("version");
        let installed = match sec.optional("installed") {
            Some(v) => Version::parse(v).map_err(|why| sec.error("installed", why))?,
            // The agent's own version is dotted numeric by the project's
            // rules; should a build ever break that, say what to set.
            None => Version::parse(env!("CARGO_PKG_VERSION")).map_err(|why| {
                sec.error(
                    "installed",
                    format!("is not set and the agent's own version is unusable: {why}"),
                )
            })?,
        };
        let updater_host = sec
            .optional("updater_host")
            .unwrap_or(DEFAULT_UPDATER_HOST)
            .to_string();
        if updater_host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(sec.error(
                "updater_host",
                format!(
                    "'{}' is not a host name or address",
                    Shown::bare(&updater_host)
                ),
            ));
        }
        Ok(UpdateConfig {
            installed,
            autoupdate: sec.boolean("autoupdate", true)?,
            updater_host,
            updater_port: sec.number("updater_port", DEFAULT_UPDATER_PORT, 1..=65535)?,
        })
    }
}

/// Whether to check for software updates this run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpdateChoice {
    /// As `[version] autoupdate` says.
    #[default]
    Config,
    /// `--noupdate`
    Never,
    /// `--update`
    Always,
}

impl UpdateChoice {
    /// Whether this run asks for updates: never with `--noupdate`; with
    /// `autoupdate = Off` only when `--update` is given.
    pub fn wants_check(self, autoupdate: bool) -> bool {
        match self {
            UpdateChoice::Config => autoupdate,
            UpdateChoice::Never => false,
            UpdateChoice::Always => true,
        }
    }
}

/// A dotted numeric version. Parts compare as numbers and missing trailing
/// parts count as zero, so `3.10.0 > 3.9.9` and `3.5 == 3.5.0`.
#[derive(Clone, Debug)]
pub struct Version {
    parts: Vec<u32>,
}

impl Version {
    /// Errors name the value and what is wrong with it.
    pub fn parse(text: &str) -> std::result::Result<Version, String> {
        let bad = |why: &str| {
            format!(
                "'{}' is not a version such as 3.5.0 ({why})",
                Shown::bare(text)
            )
        };
        if text.is_empty() {
            return Err(bad("it is empty"));
        }
        if text.len() > MAX_VERSION_LEN {
            return Err(bad(&format!("longer than {MAX_VERSION_LEN} characters")));
        }
        let mut parts = Vec::new();
        for part in text.split('.') {
            if part.is_empty() {
                return Err(bad("a part between dots is empty"));
            }
            if !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("only digits and dots are allowed"));
            }
            let n = part
                .parse::<u32>()
                .map_err(|_| bad("a number is too large"))?;
            parts.push(n);
        }
        Ok(Version { parts })
    }

    /// The parts without trailing zeros, which do not change the order.
    fn significant(&self) -> &[u32] {
        let len = self
            .parts
            .iter()
            .rposition(|&p| p != 0)
            .map_or(0, |i| i + 1);
        &self.parts[..len]
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Version) -> Ordering {
        // Slices compare element by element and a prefix is smaller, which is
        // the numeric order once trailing zeros are gone.
        self.significant().cmp(other.significant())
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Version) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Version) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

/// The parts as given, leading zeros dropped: `3.05.0` shows as `3.5.0`.
impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.parts.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// One build of the release document (PROTOCOL 8.2), for this platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Software {
    pub version: Version,
    /// `https://`, printable ASCII, entities already unescaped.
    pub url: String,
    /// 64 hex digits, lower case.
    pub sha256: String,
    pub size: u64,
}

impl Software {
    /// Checks a `<software>` entry's attribute values (already unescaped):
    /// each error names the attribute and its value.
    pub fn new(
        version: &str,
        url: &str,
        sha256: &str,
        size: &str,
    ) -> std::result::Result<Software, String> {
        let version = Version::parse(version).map_err(|why| format!("version {why}"))?;
        check_url(url).map_err(|why| format!("url '{}' {why}", Shown::bare(url)))?;
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "sha256 '{}' is not 64 hex digits",
                Shown::bare(sha256)
            ));
        }
        let size = match size.parse::<u64>() {
            Ok(n) if n > 0 && size.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err(format!(
                    "size '{}' is not a positive whole number of bytes",
                    Shown::bare(size)
                ));
            }
        };
        Ok(Software {
            version,
            url: url.to_string(),
            sha256: sha256.to_ascii_lowercase(),
            size,
        })
    }

    /// Whether this build is newer than the `installed` version.
    pub fn is_newer_than(&self, installed: &Version) -> bool {
        self.version > *installed
    }
}

fn check_url(url: &str) -> std::result::Result<(), &'static str> {
    let Some(rest) = url.strip_prefix("https://") else {
        return Err("does not start with https://");
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err("has no host");
    }
    // The datagram is one ASCII line of space-separated fields: a space,
    // control character or non-ASCII byte would break it.
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("contains white space, control or non-ASCII characters");
    }
    Ok(())
}

/// PROTOCOL 4 and 8: the update check of one run, when `choice` wants one
/// and there is a trusted root (without one, `Trust::open` already said that
/// there is no update check). A failed check is an error line; it never
/// changes the exit code.
pub fn run(
    cfg: &UpdateConfig,
    choice: UpdateChoice,
    trust: Option<&mut Trust>,
    client: &Client,
    state: &mut StateFile,
) {
    if !choice.wants_check(cfg.autoupdate) {
        log::debug!("update check skipped (--noupdate, or autoupdate = Off without --update)");
        return;
    }
    let Some(trust) = trust else {
        return;
    };
    if let Err(why) = check(cfg, trust, client, crate::fetch::target_triple(), state) {
        log::error!("update check failed: {why}");
    }
}

/// The signed release's build for `platform`, announced when it is newer
/// than what is installed and not older than any version announced before.
/// What the check accepted is kept in the trust section of `state` before
/// the datagram leaves, so a kill cannot announce a version the next run
/// would not know of. `Err` is the one line saying why nothing was announced.
fn check(
    cfg: &UpdateConfig,
    trust: &mut Trust,
    client: &Client,
    platform: &str,
    state: &mut StateFile,
) -> std::result::Result<(), String> {
    let before = trust.encode();
    let checked = trust.check_release(client)?;
    let release = checked.release();
    let name = format!("release version {}", release.version);
    let announce = offer(cfg, trust, release, &name, platform)?;
    let line = match &announce {
        Some(sw) => Some(datagram(sw, platform)?),
        None => None,
    };
    trust.accept(checked, announce.as_ref().map(|sw| &sw.version));
    if trust.encode() != before {
        trust
            .keep(state)
            .map_err(|e| format!("the trust state could not be kept ({e}); nothing announced"))?;
    }
    if let (Some(sw), Some(line)) = (announce, line) {
        tell_updater(cfg, &sw, &name, &line);
    }
    Ok(())
}

/// The build of `release` (named `name` in messages) to announce: `None`
/// when it has none for `platform` or it is not newer than what is
/// installed; `Err` when it is older than a version announced before.
fn offer(
    cfg: &UpdateConfig,
    trust: &Trust,
    release: &Release,
    name: &str,
    platform: &str,
) -> std::result::Result<Option<Software>, String> {
    let Some(sw) = release.for_platform(platform) else {
        log::debug!("{name} has no build for {platform}");
        return Ok(None);
    };
    if let Some(high) = trust.announced().filter(|high| sw.version < *high) {
        return Err(format!(
            "{name} offers {platform} software {}, older than {high} announced before \
             (a rollback); nothing announced",
            sw.version
        ));
    }
    if !sw.is_newer_than(&cfg.installed) {
        log::debug!(
            "{name}: software {} is not newer than installed {}",
            sw.version,
            cfg.installed
        );
        return Ok(None);
    }
    Ok(Some(sw.clone()))
}

/// Sends the notice; an unreachable ccs3updater is a warning, the check
/// itself succeeded.
fn tell_updater(cfg: &UpdateConfig, sw: &Software, name: &str, line: &str) {
    match notify(&cfg.updater_host, cfg.updater_port, line) {
        Ok(()) => log::info!(
            "software {} is available ({name}); told ccs3updater at {}:{}",
            sw.version,
            cfg.updater_host,
            cfg.updater_port
        ),
        Err(why) => log::warn!(
            "software {} is available but ccs3updater could not be told: {why}",
            sw.version
        ),
    }
}

/// The line ccs3updater reads:
/// `CCS3UPDATE version=.. platform=.. sha256=.. size=.. url=..\n`.
fn datagram(sw: &Software, platform: &str) -> std::result::Result<String, String> {
    if platform.is_empty() || !platform.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "platform '{}' cannot be sent to ccs3updater",
            Shown::bare(platform)
        ));
    }
    let line = format!(
        "CCS3UPDATE version={} platform={platform} sha256={} size={} url={}\n",
        sw.version, sw.sha256, sw.size, sw.url
    );
    if !line.is_ascii() {
        return Err("the update notice would not be ASCII".to_string());
    }
    if line.len() > MAX_DATAGRAM {
        return Err(format!(
            "the update notice would be {} bytes, more than ccs3updater's {MAX_DATAGRAM}",
            line.len()
        ));
    }
    Ok(line)
}

/// Sends `datagram` to ccs3updater, without waiting for an answer (it sends
/// none). Tries each address the host resolves to until one send succeeds.
fn notify(host: &str, port: u16, datagram: &str) -> std::result::Result<(), String> {
    let fail = |why: String| format!("cannot notify ccs3updater at {host} port {port}: {why}");
    let addrs: Vec<SocketAddr> = (crate::config::unbracket_host(host), port)
        .to_socket_addrs()
        .map_err(|e| fail(format!("host not found ({e})")))?
        .collect();
    let mut last = String::from("host not found");
    for addr in addrs {
        let local: SocketAddr = if addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let sent = UdpSocket::bind(local).and_then(|s| s.send_to(datagram.as_bytes(), addr));
        match sent {
            Ok(n) if n == datagram.len() => return Ok(()),
            Ok(n) => last = format!("only {n} of {} bytes sent", datagram.len()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(fail(last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    const HASH: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn good() -> Software {
        Software::new("3.5.0", "https://dl.example.net/a?x=1&y=2", HASH, "1234567").unwrap()
    }

    #[test]
    fn versions_compare_numerically() {
        use Ordering::*;
        let table = [
            ("3.10.0", "3.9.9", Greater),
            ("3.5", "3.5.0", Equal),
            ("3.5.0.0", "3.5", Equal),
            ("3.5.1", "3.5", Greater),
            ("3.4.0", "3.5.0", Less),
            ("10", "9.99.99", Greater),
            ("3.05", "3.5", Equal),
            ("0", "0.0.0", Equal),
            ("4294967295", "4294967294.9", Greater),
        ];
        for (a, b, want) in table {
            assert_eq!(v(a).cmp(&v(b)), want, "{a} vs {b}");
            assert_eq!(v(b).cmp(&v(a)), want.reverse(), "{b} vs {a}");
        }
        assert_eq!(v("3.05.0").to_string(), "3.5.0");
    }

    #[test]
    fn bad_versions_are_errors_naming_the_value() {
        for (text, why) in [
            ("", "empty"),
            ("3..5", "empty"),
            (".3", "empty"),
            ("3.5.", "empty"),
            ("3.5a", "only digits"),
            ("v3.5", "only digits"),
            ("3.-5", "only digits"),
            ("3. 5", "only digits"),
            ("3.99999999999999999999", "too large"),
            ("4294967296", "too large"),
        ] {
            let e = Version::parse(text).unwrap_err();
            assert!(
                e.contains(&format!("'{text}'")) && e.contains(why),
                "{text}: {e}"
            );
        }
        let long = "1.".repeat(40) + "1";
        assert!(Version::parse(&long).unwrap_err().contains("longer than"));
    }

    #[test]
    fn update_choice_wants_check() {
        use UpdateChoice::*;
        assert!(Config.wants_check(true));
        assert!(!Never.wants_check(true));
        assert!(!Config.wants_check(false));
        assert!(Always.wants_check(false));
        assert!(!Never.wants_check(false));
        assert!(Always.wants_check(true));
    }

    #[test]
    fn config_defaults_and_errors() {
        let ini = |t: &str| Ini::parse(Path::new("/r/Config/cncop3.ini"), t).unwrap();
        let cfg = UpdateConfig::from_ini(&ini("[device]\nid = X\n")).unwrap();
        assert_eq!(cfg.installed, v(env!("CARGO_PKG_VERSION")));
        assert!(cfg.autoupdate);
        assert_eq!(cfg.updater_host, "127.0.0.1");
        assert_eq!(cfg.updater_port, 9998);

        let cfg = UpdateConfig::from_ini(&ini(
            "[version]\ninstalled = 3.2\nautoupdate = Off\nupdater_host = ::1\nupdater_port = 7000\n",
        ))
        .unwrap();
        assert_eq!(cfg.installed, v("3.2.0"));
        assert!(!cfg.autoupdate);
        assert_eq!(cfg.updater_host, "::1");
        assert_eq!(cfg.updater_port, 7000);

        let e = UpdateConfig::from_ini(&ini("[version]\ninstalled = 3.x\n")).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(
            msg.contains("cncop3.ini [version] installed: '3.x' is not a version"),
            "{msg}"
        );
        let e = UpdateConfig::from_ini(&ini("[version]\nupdater_port = 0\n")).unwrap_err();
        assert!(e.to_string().contains("[version] updater_port"), "{e}");
        let e = UpdateConfig::from_ini(&ini("[version]\nautoupdate = sometimes\n")).unwrap_err();
        assert!(e.to_string().contains("[version] autoupdate"), "{e}");
    }

    #[test]
    fn checks_software_entries() {
        let sw = good();
        assert_eq!(sw.version, v("3.5.0"));
        assert_eq!(sw.sha256, HASH);
        assert_eq!(sw.size, 1_234_567);
        let upper = Software::new("3.5.0", &sw.url, &HASH.to_uppercase(), "1234567").unwrap();
        assert_eq!(upper, sw);
        let url = "https://dl.example.net/a";
        for ((version, url, sha, size), want) in [
            (("3.5.x", url, HASH, "1"), "version '3.5.x'"),
            (("", url, HASH, "1"), "version ''"),
            (
                ("1", "http://dl.example.net/a", HASH, "1"),
                "does not start with https://",
            ),
            (("1", "https://", HASH, "1"), "has no host"),
            (
                ("1", "https://dl.example.net/a b", HASH, "1"),
                "white space",
            ),
            (("1", "https://dl.example.net/a\n", HASH, "1"), "control"),
            (
                ("1", "https://dl.example.net/\u{e9}", HASH, "1"),
                "non-ASCII",
            ),
            (("1", url, &HASH[1..], "1"), "not 64 hex"),
            (("1", url, &HASH.replace('0', "g"), "1"), "not 64 hex"),
            (("1", url, HASH, "0"), "not a positive"),
            (("1", url, HASH, "-5"), "not a positive"),
            (("1", url, HASH, "+5"), "not a positive"),
            (
                ("1", url, HASH, "99999999999999999999999"),
                "not a positive",
            ),
        ] {
            let e = Software::new(version, url, sha, size).unwrap_err();
            assert!(e.contains(want), "{e} (wanted {want})");
        }
    }

    #[test]
    fn only_a_newer_build_is_newer() {
        let sw = good();
        assert!(sw.is_newer_than(&v("3.4.0")));
        assert!(sw.is_newer_than(&v("3.4.99")));
        assert!(!sw.is_newer_than(&v("3.5")));
        assert!(!sw.is_newer_than(&v("3.10")));
    }

    #[test]
    fn datagram_exact_text_and_limits() {
        let sw = good();
        assert_eq!(
            datagram(&sw, "armv7-unknown-linux-musleabihf").unwrap(),
            format!(
                "CCS3UPDATE version=3.5.0 platform=armv7-unknown-linux-musleabihf sha256={HASH} size=1234567 url=https://dl.example.net/a?x=1&y=2\n"
            )
        );
        let mut long = sw.clone();
        long.url = format!("https://dl.example.net/{}", "a".repeat(1000));
        assert!(
            datagram(&long, "x86_64-unknown-linux-gnu")
                .unwrap_err()
                .contains("more than")
        );
        let mut wide = sw.clone();
        wide.url = "https://dl.example.net/\u{e9}".to_string();
        assert!(datagram(&wide, "x").unwrap_err().contains("ASCII"));
        assert!(datagram(&sw, "two words").is_err());
        assert!(datagram(&sw, "").is_err());
    }

    #[test]
    fn notify_sends_one_datagram_over_loopback() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let port = rx.local_addr().unwrap().port();
        let sw = good();
        let line = datagram(&sw, "x86_64-unknown-linux-gnu").unwrap();
        notify("127.0.0.1", port, &line).unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = rx.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], line.as_bytes());
        assert!(from.ip().is_loopback());
    }
}
