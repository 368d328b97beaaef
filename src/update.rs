//! Software updates (PROTOCOL 4): the `[version]` settings, version
//! comparison, the server's `<software .../>` answer, and the one UDP
//! datagram that tells ccs3updater a newer build exists.
//!
//! The HTTP request itself is `fetch`'s; this module only judges its answer.
//! Nothing here fails the run: the caller logs an `Err` and carries on.

use crate::config::Ini;
use crate::error::Result;
use std::cmp::Ordering;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};

pub const DEFAULT_UPDATER_HOST: &str = "127.0.0.1";
pub const DEFAULT_UPDATER_PORT: u16 = 9998;
/// ccs3updater reads one datagram of at most this many bytes.
pub const MAX_DATAGRAM: usize = 1024;
/// Longest version text accepted; real ones are a few characters.
const MAX_VERSION_LEN: usize = 64;
/// Longest `<software/>` answer accepted; the real one is a few hundred bytes.
pub const MAX_ANSWER_BYTES: usize = 8 * 1024;

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
                format!("'{updater_host}' is not a host name or address"),
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

/// Whether this run asks for updates: never with `--noupdate`; with
/// `autoupdate = Off` only when `--update` is given.
pub fn should_check(autoupdate: bool, noupdate: bool, update: bool) -> bool {
    !noupdate && (autoupdate || update)
}

/// The request path below the base URL, `v3/software/latest?platform=..&installed=..`.
pub fn latest_path(platform: &str, installed: &Version) -> String {
    format!(
        "v3/software/latest?platform={}&installed={installed}",
        percent_encode(platform)
    )
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
                printable(text)
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

/// The server's 200 answer: the newest build for this platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Software {
    pub version: Version,
    /// `https://`, printable ASCII, entities already unescaped.
    pub url: String,
    /// 64 hex digits, lower case.
    pub sha256: String,
    pub size: u64,
}

/// What the server's answer to the update check means.
pub fn parse_answer(status: u16, body: &[u8]) -> std::result::Result<Option<Software>, String> {
    match status {
        204 => Ok(None),
        200 => Software::parse(body).map(Some),
        other => Err(format!(
            "the update check got HTTP status {other}, expected 200 or 204"
        )),
    }
}

impl Software {
    /// Parses `<software version=".." url=".." sha256=".." size=".."/>`.
    /// An XML declaration and surrounding white space are allowed; anything
    /// else around or inside the element is refused. Unknown attributes are
    /// ignored, as the profile's are, so the server can add some.
    pub fn parse(body: &[u8]) -> std::result::Result<Software, String> {
        let bad = |why: String| format!("bad update answer: {why}");
        if body.len() > MAX_ANSWER_BYTES {
            return Err(bad(format!("larger than {MAX_ANSWER_BYTES} bytes")));
        }
        let text = std::str::from_utf8(body).map_err(|_| bad("not UTF-8 text".to_string()))?;
        let attrs = parse_software_element(text).map_err(bad)?;

        let mut version = None;
        let mut url = None;
        let mut sha256 = None;
        let mut size = None;
        for (name, value) in attrs {
            let slot = match name {
                "version" => &mut version,
                "url" => &mut url,
                "sha256" => &mut sha256,
                "size" => &mut size,
                _ => continue,
            };
            *slot = Some(value);
        }
        let need = |v: Option<String>, name: &str| {
            v.ok_or_else(|| bad(format!("attribute '{name}' is missing")))
        };
        let version = need(version, "version")?;
        let url = need(url, "url")?;
        let sha256 = need(sha256, "sha256")?;
        let size = need(size, "size")?;

        let version = Version::parse(&version).map_err(|why| bad(format!("version {why}")))?;
        check_url(&url).map_err(|why| bad(format!("url '{}' {why}", printable(&url))))?;
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!(
                "sha256 '{}' is not 64 hex digits",
                printable(&sha256)
            )));
        }
        let size = match size.parse::<u64>() {
            Ok(n) if n > 0 && size.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err(bad(format!(
                    "size '{}' is not a positive whole number of bytes",
                    printable(&size)
                )));
            }
        };
        Ok(Software {
            version,
            url,
            sha256: sha256.to_ascii_lowercase(),
            size,
        })
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

/// Values from the server end up in log lines: keep those one printable line
/// and short.
fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(80)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().nth(80).is_some() {
        out.push_str("...");
    }
    out
}

/// The attributes of the one `software` element, unescaped, in document order.
fn parse_software_element(text: &str) -> std::result::Result<Vec<(&str, String)>, String> {
    let mut rest = text.trim_start_matches('\u{feff}').trim_start();
    if let Some(decl) = rest.strip_prefix("<?xml") {
        if !decl.starts_with(is_xml_space) {
            return Err("does not start with <software".to_string());
        }
        let end = decl.find("?>").ok_or("the XML declaration is not closed")?;
        rest = decl[end + 2..].trim_start();
    }
    rest = rest
        .strip_prefix("<software")
        .ok_or("does not start with <software")?;
    let mut attrs: Vec<(&str, String)> = Vec::new();
    loop {
        let trimmed = rest.trim_start_matches(is_xml_space);
        let had_space = trimmed.len() != rest.len();
        rest = trimmed;
        if let Some(after) = rest.strip_prefix("/>") {
            rest = after;
            break;
        }
        if let Some(after) = rest.strip_prefix('>') {
            // `<software ...></software>` is the same element as `<software .../>`.
            if after.trim_matches(is_xml_space).is_empty() {
                return Err("the software element is not closed".to_string());
            }
            rest = after
                .strip_prefix("</software")
                .map(|t| t.trim_start_matches(is_xml_space))
                .and_then(|t| t.strip_prefix('>'))
                .ok_or("the software element must be empty")?;
            break;
        }
        if rest.is_empty() {
            return Err("the software element is not closed".to_string());
        }
        if !had_space {
            return Err("attributes must be separated by white space".to_string());
        }
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || "_-.:".contains(c)))
            .unwrap_or(rest.len());
        if name_len == 0 {
            return Err(format!(
                "unexpected '{}' in the software element",
                printable(&rest[..rest.chars().next().map_or(0, char::len_utf8)])
            ));
        }
        let name = &rest[..name_len];
        rest = rest[name_len..].trim_start_matches(is_xml_space);
        rest = rest
            .strip_prefix('=')
            .ok_or_else(|| format!("attribute '{name}' has no value"))?
            .trim_start_matches(is_xml_space);
        let quote = rest
            .chars()
            .next()
            .filter(|&c| c == '"' || c == '\'')
            .ok_or_else(|| format!("attribute '{name}' value is not quoted"))?;
        rest = &rest[1..];
        let end = rest
            .find(quote)
            .ok_or_else(|| format!("attribute '{name}' value is not closed"))?;
        let value = unescape(&rest[..end]).map_err(|why| format!("attribute '{name}': {why}"))?;
        rest = &rest[end + 1..];
        if attrs.iter().any(|(n, _)| *n == name) {
            return Err(format!("attribute '{name}' appears twice"));
        }
        attrs.push((name, value));
    }
    if !rest.trim_matches(is_xml_space).is_empty() {
        return Err("unexpected text after the software element".to_string());
    }
    Ok(attrs)
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Replaces the five predefined entities and character references, with the
/// profile parser's own rules.
fn unescape(raw: &str) -> std::result::Result<String, String> {
    if raw.contains('<') {
        return Err("'<' must be written &lt;".to_string());
    }
    crate::profile::unescape_attribute(raw)
}

/// Whether `sw` is newer than what is installed.
pub fn decide(installed: &Version, sw: &Software) -> bool {
    sw.version > *installed
}

/// The line ccs3updater reads:
/// `CCS3UPDATE version=.. platform=.. sha256=.. size=.. url=..\n`.
pub fn datagram(sw: &Software, platform: &str) -> std::result::Result<String, String> {
    if platform.is_empty() || !platform.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "platform '{}' cannot be sent to ccs3updater",
            printable(platform)
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
pub fn notify(host: &str, port: u16, datagram: &str) -> std::result::Result<(), String> {
    let fail = |why: String| format!("cannot notify ccs3updater at {host} port {port}: {why}");
    // An IPv6 literal may come bracketed from the INI.
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let addrs: Vec<SocketAddr> = (bare, port)
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

    fn good_body() -> String {
        format!(
            r#"<software version="3.5.0" url="https://dl.example.net/a?x=1&amp;y=2" sha256="{HASH}" size="1234567"/>"#
        )
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
    fn update_decision_flags() {
        assert!(should_check(true, false, false));
        assert!(!should_check(true, true, false));
        assert!(!should_check(false, false, false));
        assert!(should_check(false, false, true));
        assert!(!should_check(false, true, true));
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
    fn parses_the_software_answer() {
        let sw = Software::parse(good_body().as_bytes()).unwrap();
        assert_eq!(sw.version, v("3.5.0"));
        assert_eq!(sw.url, "https://dl.example.net/a?x=1&y=2");
        assert_eq!(sw.sha256, HASH);
        assert_eq!(sw.size, 1_234_567);

        // Any attribute order, single quotes, white space, declaration,
        // upper-case hex, an unknown attribute, the long empty form.
        let other = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<software\n  size='1234567' sha256 = '{}'\tfuture=\"x\" url='https://dl.example.net/a?x=1&#38;y=2' version='3.5.0'></software>\n",
            HASH.to_uppercase()
        );
        assert_eq!(Software::parse(other.as_bytes()).unwrap(), sw);

        assert_eq!(parse_answer(204, b"").unwrap(), None);
        assert_eq!(parse_answer(200, good_body().as_bytes()).unwrap(), Some(sw));
        assert!(parse_answer(500, b"").unwrap_err().contains("status 500"));
    }

    #[test]
    fn refuses_bad_software_answers() {
        let good = good_body();
        let table: Vec<(String, &str)> = vec![
            (good.replace("3.5.0", "3.5.x"), "version '3.5.x'"),
            (good.replace("3.5.0", ""), "version ''"),
            (
                good.replace("https://", "http://"),
                "does not start with https://",
            ),
            (
                good.replace("https://dl.example.net", "https://"),
                "has no host",
            ),
            (good.replace("/a?x", "/a b?x"), "white space"),
            (good.replace("/a?x", "/a&#10;?x"), "control"),
            (good.replace("/a?x", "/\u{e9}?x"), "non-ASCII"),
            (good.replace("&amp;", "&"), "does not start a reference"),
            (
                good.replace("&amp;", "&nbsp;"),
                "an undefined entity reference",
            ),
            (good.replace(HASH, &HASH[1..]), "not 64 hex"),
            (good.replace(HASH, &HASH.replace('0', "g")), "not 64 hex"),
            (good.replace("1234567", "0"), "not a positive"),
            (good.replace("1234567", "-5"), "not a positive"),
            (good.replace("1234567", "+5"), "not a positive"),
            (
                good.replace("1234567", "99999999999999999999999"),
                "not a positive",
            ),
            (good.replace("1234567", "12 kB"), "not a positive"),
            (good.replace(" size=\"1234567\"", ""), "'size' is missing"),
            (
                good.replace(" version=\"3.5.0\"", ""),
                "'version' is missing",
            ),
            (
                good.replace("<software", "<update"),
                "does not start with <software",
            ),
            (good.replace("/>", ">"), "not closed"),
            (good.replace("/>", "><x/></software>"), "must be empty"),
            (good.clone() + "<software/>", "after the software element"),
            (good.replace(" size=", " size=\"1\" size="), "appears twice"),
            (
                good.replace("size=\"1234567\"", "size=1234567"),
                "not quoted",
            ),
            (
                good.replace("size=\"1234567\"", "size=\"1234567"),
                "not closed",
            ),
            (
                good.replace("\" size", "\"size"),
                "separated by white space",
            ),
            (good.replace(" size=", " <size="), "unexpected '<'"),
            ("<!DOCTYPE x><software/>".to_string(), "does not start with"),
            (String::new(), "does not start with"),
            ("x".repeat(MAX_ANSWER_BYTES + 1), "larger than"),
        ];
        for (body, want) in table {
            let e = Software::parse(body.as_bytes()).unwrap_err();
            assert!(e.starts_with("bad update answer: "), "{e}");
            assert!(e.contains(want), "{body:?}: {e} (wanted {want})");
        }
        assert!(
            Software::parse(&[0xff, 0xfe])
                .unwrap_err()
                .contains("not UTF-8")
        );
    }

    #[test]
    fn decides_only_on_newer() {
        let sw = Software::parse(good_body().as_bytes()).unwrap();
        assert!(decide(&v("3.4.0"), &sw));
        assert!(decide(&v("3.4.99"), &sw));
        assert!(!decide(&v("3.5"), &sw));
        assert!(!decide(&v("3.10"), &sw));
    }

    #[test]
    fn datagram_exact_text_and_limits() {
        let sw = Software::parse(good_body().as_bytes()).unwrap();
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
    fn latest_path_is_encoded() {
        assert_eq!(
            latest_path("x86_64-unknown-linux-gnu", &v("3.4.0")),
            "v3/software/latest?platform=x86_64-unknown-linux-gnu&installed=3.4.0"
        );
        assert_eq!(
            latest_path("a b&c", &v("1")),
            "v3/software/latest?platform=a%20b%26c&installed=1"
        );
    }

    #[test]
    fn notify_sends_one_datagram_over_loopback() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let port = rx.local_addr().unwrap().port();
        let sw = Software::parse(good_body().as_bytes()).unwrap();
        let line = datagram(&sw, "x86_64-unknown-linux-gnu").unwrap();
        notify("127.0.0.1", port, &line).unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = rx.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], line.as_bytes());
        assert!(from.ip().is_loopback());
    }
}
