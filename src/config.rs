//! Configuration: reading `Config/cncop3.ini`
//! (Python `configparser` syntax), and the typed settings of the core run.
//!
//! Sections other than `[device]`, `[network]` and `[defaults]` are parsed
//! by the module of the step that uses them; the run parses them all before
//! it takes the lock, so a bad value anywhere stops it with nothing done.
//!
//! The INI is shared by the whole suite: sections and keys the agent does not
//! know are allowed. A key that is a near miss of one the agent knows, in a
//! section it reads ([`KNOWN_KEYS`]), is almost surely a typo whose default
//! would silently apply, so [`Ini::near_misses`] names it.

use crate::error::{Error, Result, Shown, io_reason};
use crate::install_root::{HOME_VAR, InstallRoot};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A secret value (device key): never printed, not even by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The sections the agent reads and every key it reads in them. Keep in step
/// with the modules' `from_ini` and the shipped `Config/cncop3.ini` (a test
/// checks the sample against it).
pub const KNOWN_KEYS: &[(&str, &[&str])] = &[
    ("device", &["id", "key"]),
    (
        "network",
        &[
            "url",
            "ca_file",
            "client_cert",
            "client_key",
            "proxy",
            "connect_timeout",
            "read_timeout",
            "timeout",
            "retries",
            "splay",
            "max_profile_bytes",
            "allow_insecure_http",
        ],
    ),
    ("defaults", &["days_of_logs", "max_log_mib"]),
    (
        "version",
        &["installed", "autoupdate", "updater_host", "updater_port"],
    ),
    (
        "firewall",
        &["enabled", "probe_timeout", "budget", "rereport_hours"],
    ),
    ("reporter", &["command", "timeout"]),
    ("trust", &["root"]),
];

/// One parsed INI file, keys lower-cased as configparser does.
#[derive(Clone)]
pub struct Ini {
    path: PathBuf,
    // (section, key, value, line) in file order; small, so a Vec beats a map.
    entries: Vec<(String, String, String, usize)>,
    sections: Vec<String>,
}

/// Values may be secrets (`[device] key`): `Debug` shows only the shape.
impl std::fmt::Debug for Ini {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ini")
            .field("path", &self.path)
            .field("sections", &self.sections)
            .finish_non_exhaustive()
    }
}

impl Ini {
    pub fn load(path: &Path) -> Result<Ini> {
        let text = std::fs::read(path).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "; set {HOME_VAR} to the install root, pass -c with the INI's path, \
                     or copy the sample (cncop3.ini.sample) there and set [device] and [network]"
                )
            } else {
                String::new()
            };
            Error::Config(crate::error::Reason::caused_by(
                format!("cannot read {}: {}{hint}", path.display(), io_reason(&e)),
                e,
            ))
        })?;
        let text = String::from_utf8(text)
            .map_err(|_| Error::Config(format!("{} is not UTF-8 text", path.display()).into()))?;
        Ini::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Ini> {
        let mut ini = Ini {
            path: path.to_path_buf(),
            entries: Vec::new(),
            sections: Vec::new(),
        };
        let mut section: Option<String> = None;
        // Index in `entries` of the last key, for continuation lines.
        let mut last: Option<usize> = None;
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let raw = if line_no == 1 {
                raw.trim_start_matches('\u{feff}')
            } else {
                raw
            };
            let trimmed = raw.trim();
            if trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            if trimmed.is_empty() {
                // configparser keeps blank lines inside multi-line values only
                // when followed by more indented text; a blank ends the value.
                last = None;
                continue;
            }
            let indented = raw.starts_with([' ', '\t']);
            if let (true, Some(idx)) = (indented, last) {
                let value = &mut ini.entries[idx].2;
                value.push('\n');
                value.push_str(trimmed);
                continue;
            }
            if let Some(header) = trimmed.strip_prefix('[') {
                section = Some(ini.section_header(header, line_no)?);
                last = None;
                continue;
            }
            let Some(sec) = section.clone() else {
                return Err(ini.line_error(
                    line_no,
                    "a key before any [section] header (configparser needs a section first)",
                ));
            };
            ini.key_value(sec, trimmed, line_no)?;
            last = Some(ini.entries.len() - 1);
        }
        Ok(ini)
    }

    /// A `[name]` line (without its `[`): the section's name, once per file.
    fn section_header(&mut self, header: &str, line_no: usize) -> Result<String> {
        let name = header
            .strip_suffix(']')
            .ok_or_else(|| self.line_error(line_no, "section header is missing its closing ']'"))?
            .trim();
        if self.sections.iter().any(|s| s == name) {
            return Err(self.line_error(line_no, &format!("section [{name}] appears twice")));
        }
        self.sections.push(name.to_string());
        Ok(name.to_string())
    }

    /// A `key = value` (or `key: value`) line of section `sec`; a key once
    /// per section, case-insensitive.
    fn key_value(&mut self, sec: String, line: &str, line_no: usize) -> Result<()> {
        let split = line
            .find(['=', ':'])
            .ok_or_else(|| self.line_error(line_no, "expected 'key = value'"))?;
        let key = line[..split].trim().to_ascii_lowercase();
        let value = line[split + 1..].trim().to_string();
        if key.is_empty() {
            return Err(self.line_error(line_no, "a value without a key"));
        }
        if self
            .entries
            .iter()
            .any(|(s, k, _, _)| *s == sec && *k == key)
        {
            return Err(self.line_error(
                line_no,
                &format!("key '{key}' appears twice in section [{sec}]"),
            ));
        }
        self.entries.push((sec, key, value, line_no));
        Ok(())
    }

    fn line_error(&self, line: usize, what: &str) -> Error {
        Error::Config(format!("{} line {line}: {what}", self.path.display()).into())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every `(section, key, value)` in file order. Values may be secrets:
    /// [`shown_value`] is how they may be shown.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.entries
            .iter()
            .map(|(s, k, v, _)| (s.as_str(), k.as_str(), v.as_str()))
    }

    pub fn has_section(&self, name: &str) -> bool {
        self.sections.iter().any(|s| s == name)
    }

    /// One warning line for each section name that is a near miss of a
    /// section in `known` and each key, in a section of `known`, that is a
    /// near miss of a key known there: naming file, line, section and key,
    /// and what was most likely meant. `[DEFAULT]` is the suite's, not
    /// checked.
    pub fn near_misses(&self, known: &[(&str, &[&str])]) -> Vec<String> {
        let path = self.path.display();
        let mut out = Vec::new();
        for name in &self.sections {
            if known.iter().any(|(s, _)| s == name) {
                continue;
            }
            if let Some(meant) = near_miss(name, known.iter().map(|(s, _)| *s)) {
                out.push(format!(
                    "{path}: section [{name}] is not one cncopgetprofile reads, so it is ignored; \
                     did you mean [{meant}]?"
                ));
            }
        }
        for (section, key, _, line) in &self.entries {
            let Some((_, keys)) = known.iter().find(|(s, _)| s == section) else {
                continue;
            };
            if keys.contains(&key.as_str()) {
                continue;
            }
            if let Some(meant) = near_miss(key, keys.iter().copied()) {
                out.push(format!(
                    "{path} line {line}: [{section}] {key} is not a key cncopgetprofile knows, \
                     so it is ignored; did you mean `{meant}`?"
                ));
            }
        }
        out
    }

    /// A view of one section; keys missing there fall back to `[DEFAULT]`, as
    /// in configparser.
    pub fn section<'a>(&'a self, name: &'a str) -> Section<'a> {
        Section { ini: self, name }
    }
}

/// One section of an `Ini`, with typed getters whose errors name file,
/// section and key.
#[derive(Clone, Copy)]
pub struct Section<'a> {
    ini: &'a Ini,
    name: &'a str,
}

impl<'a> Section<'a> {
    pub fn name(&self) -> &str {
        self.name
    }

    pub fn get(&self, key: &str) -> Option<&'a str> {
        let find = |sec: &str| {
            self.ini
                .entries
                .iter()
                .find(|(s, k, _, _)| s == sec && k == key)
                .map(|(_, _, v, _)| v.as_str())
        };
        find(self.name).or_else(|| find("DEFAULT"))
    }

    /// An error about `key` in this section, naming file, section and key.
    pub fn error(&self, key: &str, problem: impl std::fmt::Display) -> Error {
        Error::Config(
            format!(
                "{} [{}] {key}: {problem}",
                self.ini.path.display(),
                self.name
            )
            .into(),
        )
    }

    pub fn required(&self, key: &str) -> Result<&'a str> {
        if !self.ini.has_section(self.name) {
            return Err(Error::Config(
                format!(
                    "{}: section [{}] is missing (it needs '{key} = ...')",
                    self.ini.path.display(),
                    self.name
                )
                .into(),
            ));
        }
        match self.get(key) {
            Some(v) if !v.is_empty() => Ok(v),
            Some(_) => Err(self.error(key, "is empty")),
            None => Err(self.error(key, "is missing")),
        }
    }

    /// A value, or `None` when the key is absent or empty.
    pub fn optional(&self, key: &str) -> Option<&'a str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    pub fn boolean(&self, key: &str, default: bool) -> Result<bool> {
        match self.optional(key) {
            None => Ok(default),
            Some(v) => parse_bool(v).ok_or_else(|| {
                self.error(
                    key,
                    format!(
                        "'{}' is not a boolean (use On/Off, yes/no, true/false or 1/0)",
                        Shown::bare(v)
                    ),
                )
            }),
        }
    }

    pub fn number<T>(&self, key: &str, default: T, range: std::ops::RangeInclusive<T>) -> Result<T>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        match self.optional(key) {
            None => Ok(default),
            Some(v) => match v.parse::<T>() {
                Ok(n) if range.contains(&n) => Ok(n),
                _ => Err(self.error(
                    key,
                    format!(
                        "'{}' is not a whole number from {} to {}",
                        Shown::bare(v),
                        range.start(),
                        range.end()
                    ),
                )),
            },
        }
    }

    /// A duration in whole seconds.
    pub fn seconds(
        &self,
        key: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Duration> {
        self.number(key, default, range).map(Duration::from_secs)
    }

    /// A path; relative ones are relative to the install root, never to the
    /// working directory (cron starts us in `/`).
    pub fn path(&self, key: &str, root: &Path) -> Option<PathBuf> {
        self.optional(key).map(|v| root.join(v))
    }
}

/// The word of `candidates` that `word` most likely misspells: at most one
/// edit away (two for words of 6 or more characters), counting a swap of
/// neighbours as one edit; `None` when nothing is that close.
fn near_miss<'k>(word: &str, candidates: impl Iterator<Item = &'k str>) -> Option<&'k str> {
    let limit = if word.chars().count() >= 6 { 2 } else { 1 };
    candidates
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal string alignment distance: insertions, deletions, substitutions
/// and swaps of neighbouring characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows of the classic table: two back, one back, this one.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(before[j - 2] + 1);
            }
            cur[j] = d;
        }
        std::mem::swap(&mut before, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// A host as the INI or a profile may write it, an IPv6 literal in
/// brackets (`[::1]`) or not: the bare name or address.
pub fn unbracket_host(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// configparser's `getboolean` words.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Some(true),
        "0" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

/// An INI value as logs may show it: `***` for a secret key (`key`, or one
/// naming a password, secret or token), and a URL's password as `***`.
pub fn shown_value(key: &str, value: &str) -> String {
    let key = key.to_ascii_lowercase();
    if key == "key"
        || ["password", "passwd", "secret", "token"]
            .iter()
            .any(|w| key.contains(w))
    {
        return "***".to_string();
    }
    // scheme://user:password@host...
    if let Some(scheme_end) = value.find("://") {
        let rest = &value[scheme_end + 3..];
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if let Some(at) = authority.rfind('@') {
            let user = authority[..at].split(':').next().unwrap_or("");
            return format!("{}{user}:***{}", &value[..scheme_end + 3], &rest[at..]);
        }
    }
    value.to_string()
}

/// `[device]`: who this appliance is.
#[derive(Debug, Clone)]
pub struct Device {
    pub id: String,
    pub key: Secret,
}

/// `[network]`: how to reach the cncop network.
#[derive(Debug, Clone)]
pub struct Network {
    /// Base URL without a trailing slash.
    pub url: String,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub proxy: Option<String>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub splay: Duration,
    pub max_profile_bytes: u64,
    pub allow_insecure_http: bool,
}

/// The settings of the core run: device, network, logs.
#[derive(Debug, Clone)]
pub struct Config {
    pub root: InstallRoot,
    pub ini: Ini,
    pub device: Device,
    pub network: Network,
    pub days_of_logs: u32,
    /// `[defaults] max_log_mib`, in bytes: the `gp*.log` files together.
    pub max_log_bytes: u64,
}

pub const DEFAULT_MAX_PROFILE_BYTES: u64 = 64 * 1024 * 1024;

impl Device {
    fn from_ini(ini: &Ini) -> Result<Device> {
        let dev = ini.section("device");
        let id = dev.required("id")?;
        if id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(dev.error(
                "id",
                format!(
                    "'{}' is not a device id (1-64 of A-Z a-z 0-9 . _ -)",
                    Shown::bare(id)
                ),
            ));
        }
        Ok(Device {
            id: id.to_string(),
            key: Secret(dev.required("key")?.to_string()),
        })
    }
}

impl Network {
    /// Relative paths are below `root`.
    fn from_ini(ini: &Ini, root: &Path) -> Result<Network> {
        let net = ini.section("network");
        let allow_insecure_http = net.boolean("allow_insecure_http", false)?;
        let url = net.required("url")?.trim_end_matches('/').to_string();
        check_url(&net, &url, allow_insecure_http)?;
        let client_cert = net.path("client_cert", root);
        let client_key = net.path("client_key", root);
        if client_cert.is_some() != client_key.is_some() {
            let missing = if client_cert.is_some() {
                "client_key"
            } else {
                "client_cert"
            };
            return Err(net.error(
                missing,
                "is needed when the other of client_cert/client_key is set",
            ));
        }
        Ok(Network {
            url,
            ca_file: net.path("ca_file", root),
            client_cert,
            client_key,
            proxy: net.optional("proxy").map(str::to_string),
            connect_timeout: net.seconds("connect_timeout", 15, 1..=600)?,
            read_timeout: net.seconds("read_timeout", 60, 1..=3600)?,
            timeout: net.seconds("timeout", 300, 1..=86_400)?,
            retries: net.number("retries", 3, 0..=10)?,
            splay: net.seconds("splay", 0, 0..=86_400)?,
            max_profile_bytes: net.number(
                "max_profile_bytes",
                DEFAULT_MAX_PROFILE_BYTES,
                1024..=u64::from(u32::MAX),
            )?,
            allow_insecure_http,
        })
    }
}

/// `[network] url`: https (http only with `allow_insecure_http`), and a URL
/// the HTTP stack takes.
fn check_url(net: &Section<'_>, url: &str, allow_insecure_http: bool) -> Result<()> {
    let scheme_ok =
        url.starts_with("https://") || (allow_insecure_http && url.starts_with("http://"));
    if !scheme_ok {
        let why = if url.starts_with("http://") {
            "plain http:// is refused; use https:// (allow_insecure_http = On is for lab tests only)"
        } else {
            "must start with https://"
        };
        return Err(net.error("url", format!("'{}' {why}", Shown::bare(url))));
    }
    // The HTTP stack's own URI parser (http, through ureq): a URL it
    // would refuse at the first request is a configuration error now.
    match url.parse::<ureq::http::Uri>() {
        Ok(uri) if uri.host().is_some_and(|h| !h.is_empty()) => Ok(()),
        Ok(_) => Err(net.error("url", format!("'{}' names no host", Shown::bare(url)))),
        Err(e) => Err(net.error("url", format!("'{}' is not a URL ({e})", Shown::bare(url)))),
    }
}

/// `[defaults] max_log_mib`, in bytes.
fn max_log_bytes(defaults: &Section<'_>) -> Result<u64> {
    let Some(v) = defaults.optional("max_log_mib") else {
        return Ok(crate::logs::DEFAULT_MAX_LOG_BYTES);
    };
    v.parse::<f64>()
        .ok()
        .filter(|mib| (0.01..=1024.0).contains(mib))
        .map(|mib| (mib * 1024.0 * 1024.0) as u64)
        .ok_or_else(|| {
            defaults.error(
                "max_log_mib",
                format!(
                    "'{}' is not a number of MiB from 0.01 to 1024 (decimals allowed)",
                    Shown::bare(v)
                ),
            )
        })
}

impl Config {
    /// Reads and checks the INI. `ini_path` is `-c` (relative to the working
    /// directory) or `None` for the default under the root.
    pub fn load(root: &InstallRoot, ini_path: Option<&Path>) -> Result<Config> {
        let path = match ini_path {
            Some(p) => p.to_path_buf(),
            None => root.default_ini(),
        };
        let ini = Ini::load(&path)?;
        Config::from_ini(root, ini)
    }

    pub fn from_ini(root: &InstallRoot, ini: Ini) -> Result<Config> {
        let device = Device::from_ini(&ini)?;
        let network = Network::from_ini(&ini, root.path())?;
        let defaults = ini.section("defaults");
        let days_of_logs = defaults.number("days_of_logs", 90, 1..=3650)?;
        let max_log_bytes = max_log_bytes(&defaults)?;
        Ok(Config {
            root: root.clone(),
            ini,
            device,
            network,
            days_of_logs,
            max_log_bytes,
        })
    }

    /// The configuration as this run uses it, for the head of a `-d` log:
    /// every key of the file in order, secrets as `***`, then the core
    /// settings with their defaults applied.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!("config file {}", self.ini.path().display())];
        for (section, key, value) in self.ini.entries() {
            let value = shown_value(key, value).replace('\n', " ");
            lines.push(format!("config [{section}] {key} = {value}"));
        }
        let n = &self.network;
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or_else(|| "-".to_string(), |p| p.display().to_string())
        };
        lines.push(format!(
            "effective [network] url = {}, ca_file = {}, client_cert = {}, proxy = {}, \
             connect_timeout = {} s, read_timeout = {} s, timeout = {} s, retries = {}, \
             splay = {} s, max_profile_bytes = {}, allow_insecure_http = {}",
            shown_value("url", &n.url),
            path(&n.ca_file),
            path(&n.client_cert),
            n.proxy
                .as_deref()
                .map_or_else(|| "-".to_string(), |p| shown_value("proxy", p)),
            n.connect_timeout.as_secs(),
            n.read_timeout.as_secs(),
            n.timeout.as_secs(),
            n.retries,
            n.splay.as_secs(),
            n.max_profile_bytes,
            if n.allow_insecure_http { "On" } else { "Off" },
        ));
        lines.push(format!(
            "effective [defaults] days_of_logs = {}, max_log_mib = {} ({} bytes)",
            self.days_of_logs,
            self.max_log_bytes as f64 / 1024.0 / 1024.0,
            self.max_log_bytes
        ));
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_ipv6_brackets_only() {
        assert_eq!(unbracket_host("[::1]"), "::1");
        assert_eq!(unbracket_host("127.0.0.1"), "127.0.0.1");
        assert_eq!(unbracket_host("[::1"), "[::1");
        assert_eq!(unbracket_host("localhost"), "localhost");
    }

    fn ini(text: &str) -> Result<Ini> {
        Ini::parse(Path::new("/r/Config/cncop3.ini"), text)
    }

    const GOOD: &str = "\
# sample
[device]
ID = NAS-00042
key: s3cret=with=equals

[network]
url = https://cncop.example.net/cncop/
ca_file = Config/ca.pem
retries = 5
allow_insecure_http = off
";

    #[test]
    fn parses_configparser_syntax() {
        let cfg = Config::from_ini(&InstallRoot::new("/r"), ini(GOOD).unwrap()).unwrap();
        assert_eq!(cfg.device.id, "NAS-00042");
        assert_eq!(cfg.device.key.expose(), "s3cret=with=equals");
        assert_eq!(cfg.network.url, "https://cncop.example.net/cncop");
        assert_eq!(cfg.network.ca_file, Some(PathBuf::from("/r/Config/ca.pem")));
        assert_eq!(cfg.network.retries, 5);
        assert_eq!(cfg.network.max_profile_bytes, DEFAULT_MAX_PROFILE_BYTES);
        assert_eq!(cfg.days_of_logs, 90);
        assert!(!format!("{cfg:?}").contains("s3cret"));
    }

    #[test]
    fn continuation_lines_and_default_section() {
        let i = ini("[DEFAULT]\nretries = 2\n[network]\nproxy = a\n  b\n").unwrap();
        assert_eq!(i.section("network").get("proxy"), Some("a\nb"));
        assert_eq!(i.section("network").get("retries"), Some("2"));
    }

    #[test]
    fn a_value_with_continuation_lines_is_named_on_one_line() {
        // Found by the INI fuzz target: a continuation line put a newline
        // into the quoted value, and the error (which cron mails) into two.
        for text in [
            "[device]\nid = NAS\n  42\nkey = k\n",
            "[device]\nid = NAS-1\nkey = k\n[network]\nurl = https://a\n  b\n",
            "[device]\nid = NAS-1\nkey = k\n[network]\nurl = https://a\nretries = 1\n  2\n",
        ] {
            let e = Config::from_ini(&InstallRoot::new("/r"), ini(text).unwrap()).unwrap_err();
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "{msg:?}");
            assert!(msg.contains(r"\n"), "the newline is shown escaped: {msg:?}");
        }
    }

    #[test]
    fn errors_name_file_section_and_key() {
        let e = Config::from_ini(&InstallRoot::new("/r"), ini("[device]\nid = X\n").unwrap())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "configuration error: /r/Config/cncop3.ini [device] key: is missing"
        );
        let bad = GOOD.replace("retries = 5", "retries = lots");
        let e = Config::from_ini(&InstallRoot::new("/r"), ini(&bad).unwrap()).unwrap_err();
        assert!(
            e.to_string()
                .contains("[network] retries: 'lots' is not a whole number")
        );
        let e = Config::from_ini(
            &InstallRoot::new("/r"),
            ini("[device]\nid = X\nkey = k\n").unwrap(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("section [network] is missing"),
            "{e}"
        );
        let http = GOOD.replace("https://", "http://");
        let e = Config::from_ini(&InstallRoot::new("/r"), ini(&http).unwrap()).unwrap_err();
        assert!(e.to_string().contains("plain http:// is refused"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = ini("key = before section\n").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        let e = ini("[a]\nx = 1\nx = 2\n").unwrap_err();
        assert!(
            e.to_string().contains("line 3: key 'x' appears twice"),
            "{e}"
        );
        let e = ini("[a]\njunk\n").unwrap_err();
        assert!(
            e.to_string().contains("line 2: expected 'key = value'"),
            "{e}"
        );
    }

    #[test]
    fn the_shipped_sample_is_valid_and_documents_every_default() {
        let sample = include_str!("../Config/cncop3.ini");
        let cfg = Config::from_ini(&InstallRoot::new("/r"), ini(sample).unwrap()).unwrap();
        let net = &cfg.network;
        assert_eq!(net.connect_timeout, Duration::from_secs(15));
        assert_eq!(net.read_timeout, Duration::from_secs(60));
        assert_eq!(net.timeout, Duration::from_secs(300));
        assert_eq!(net.retries, 3);
        assert_eq!(net.splay, Duration::ZERO);
        assert_eq!(net.max_profile_bytes, DEFAULT_MAX_PROFILE_BYTES);
        assert!(!net.allow_insecure_http);
        assert_eq!(cfg.days_of_logs, 90);
        assert_eq!(cfg.max_log_bytes, crate::logs::DEFAULT_MAX_LOG_BYTES);
    }

    #[test]
    fn max_log_mib_takes_decimals_within_range() {
        let with = |v: &str| {
            let text = format!("{GOOD}\n[defaults]\nmax_log_mib = {v}\n");
            Config::from_ini(&InstallRoot::new("/r"), ini(&text).unwrap())
        };
        assert_eq!(with("0.01").unwrap().max_log_bytes, 10_485);
        assert_eq!(with("2").unwrap().max_log_bytes, 2 * 1024 * 1024);
        for bad in ["0", "-1", "nan", "inf", "2000", "lots"] {
            let e = with(bad).unwrap_err();
            assert!(
                e.to_string().contains("[defaults] max_log_mib"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn described_configuration_shows_no_secret() {
        let text = GOOD.replace(
            "retries = 5",
            "proxy = http://proxyuser:pr0xy-pass@127.0.0.1:3128/\n[reporter]\napi_token = t0k3n",
        );
        let cfg = Config::from_ini(&InstallRoot::new("/r"), ini(&text).unwrap()).unwrap();
        let all = cfg.describe().join("\n");
        for secret in ["s3cret", "pr0xy-pass", "t0k3n"] {
            assert!(!all.contains(secret), "{secret} shown:\n{all}");
        }
        assert!(all.contains("config [device] key = ***"), "{all}");
        assert!(
            all.contains("proxy = http://proxyuser:***@127.0.0.1:3128/"),
            "{all}"
        );
        assert!(all.contains("config [device] id = NAS-00042"), "{all}");
        assert!(all.contains("max_log_mib = 8 (8388608 bytes)"), "{all}");
    }

    #[test]
    fn near_miss_keys_and_sections_are_named_others_are_allowed() {
        let text = "[firewall]\nenabeld = Off\nprobe_timeout = 3\n\n[network]\nretires = 1\n\
                    url = https://x\nproxy_user = other-program\n\n[firwall]\nx = 1\n\n\
                    [DEFAULT]\nenabeld = 1\n\n[cncopagent]\nenabeld = 1\n";
        let w = ini(text).unwrap().near_misses(KNOWN_KEYS);
        assert_eq!(
            w,
            [
                "/r/Config/cncop3.ini: section [firwall] is not one cncopgetprofile reads, \
                 so it is ignored; did you mean [firewall]?",
                "/r/Config/cncop3.ini line 2: [firewall] enabeld is not a key cncopgetprofile \
                 knows, so it is ignored; did you mean `enabled`?",
                "/r/Config/cncop3.ini line 6: [network] retires is not a key cncopgetprofile \
                 knows, so it is ignored; did you mean `retries`?",
            ]
        );
    }

    #[test]
    fn edit_distance_counts_swaps_as_one() {
        assert_eq!(edit_distance("enabeld", "enabled"), 1);
        assert_eq!(edit_distance("retires", "retries"), 1);
        assert_eq!(edit_distance("probe-timeout", "probe_timeout"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(
            near_miss("timeout", ["timeout", "timeouts"].into_iter()),
            Some("timeout")
        );
        assert_eq!(near_miss("key", ["id", "url"].into_iter()), None);
        assert_eq!(near_miss("ky", ["key"].into_iter()), Some("key"));
    }

    /// The sample documents every key the agent reads, and no other in the
    /// agent's sections.
    #[test]
    fn the_shipped_sample_has_exactly_the_known_keys() {
        let sample = ini(include_str!("../Config/cncop3.ini")).unwrap();
        assert!(sample.near_misses(KNOWN_KEYS).is_empty());
        let commented: String = include_str!("../Config/cncop3.ini")
            .lines()
            .map(|l| l.strip_prefix(';').unwrap_or(l))
            .map(|l| format!("{l}\n"))
            .collect();
        for (section, keys) in KNOWN_KEYS {
            let at = commented
                .find(&format!("[{section}]"))
                .unwrap_or_else(|| panic!("sample has no [{section}]"));
            let body = &commented[at..];
            let body = &body[..body[1..].find("\n[").map_or(body.len(), |e| e + 1)];
            for key in *keys {
                assert!(
                    body.lines().any(|l| l.starts_with(&format!("{key} ="))),
                    "the sample documents [{section}] {key}"
                );
            }
            for (s, k, _, _) in &sample.entries {
                if s == section {
                    assert!(keys.contains(&k.as_str()), "[{s}] {k} is in KNOWN_KEYS");
                }
            }
        }
    }

    #[test]
    fn a_missing_ini_says_what_to_do() {
        let e = Ini::load(Path::new("/nonexistent/Config/cncop3.ini")).unwrap_err();
        let e = e.to_string();
        for what in [
            "/nonexistent/Config/cncop3.ini",
            "CNCOP_HOME",
            "-c",
            "sample",
        ] {
            assert!(e.contains(what), "{what}: {e}");
        }
    }

    #[test]
    fn booleans_follow_configparser() {
        for (v, b) in [
            ("On", true),
            ("off", false),
            ("YES", true),
            ("0", false),
            ("true", true),
        ] {
            assert_eq!(parse_bool(v), Some(b));
        }
        assert_eq!(parse_bool("maybe"), None);
    }
}
