//! Throwaway install roots: the folders an appliance has, the INI the tests
//! write, the agent run against the root, and the store as a user sees it
//! (bytes, mtime, inode; the state file's trust section).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};

use crate::agent::{RUN_LIMIT, agent_command, agent_command_at, agent_path, exec};
use crate::fixtures::{DEVICE_ID, DEVICE_KEY};
use crate::net::TestNetwork;

/// A throwaway install root with `Config/`, `Spool/Logs/`, `bin/`, removed
/// on drop. Two ways to make one, which differ in `bin/cncopreporter`:
/// [`Install::appliance`] (a do-nothing reporter, as on a real appliance)
/// and [`Install::bare`] (none: every run warns that it is missing).
pub struct Install {
    pub dir: tempfile::TempDir,
}

impl Install {
    /// A root as on a real appliance: with a do-nothing `bin/cncopreporter`
    /// (a missing reporter is a warning on every run, PROTOCOL 6).
    pub fn appliance() -> Install {
        Install::appliance_in(&std::env::temp_dir())
    }

    /// [`Install::appliance`] in a folder of the caller's choice (e.g. a
    /// small file system mounted for a test).
    pub fn appliance_in(parent: &Path) -> Install {
        use std::os::unix::fs::PermissionsExt;
        let inst = Install::bare_in(parent);
        let reporter = inst.path("bin/cncopreporter");
        std::fs::write(&reporter, "#!/bin/sh\nexit 0\n").expect("write the stub reporter");
        std::fs::set_permissions(&reporter, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the stub reporter");
        inst
    }

    /// A root whose `bin/` is empty: no `cncopreporter` (the tests of the
    /// command line and of a missing reporter).
    pub fn bare() -> Install {
        Install::bare_in(&std::env::temp_dir())
    }

    /// [`Install::bare`] in a folder of the caller's choice.
    pub fn bare_in(parent: &Path) -> Install {
        let dir = tempfile::Builder::new()
            .prefix("cncop-install-")
            .tempdir_in(parent)
            .expect("temp dir");
        for sub in ["Config", "Spool/Logs", "bin"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("create install folders");
        }
        Install { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `root/rel`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn ini_path(&self) -> PathBuf {
        self.path("Config/cncop3.ini")
    }

    /// Writes `Config/cncop3.ini`.
    pub fn write_ini(&self, text: &str) {
        std::fs::write(self.ini_path(), text).expect("write cncop3.ini");
    }

    /// Writes the network's CA as `Config/ca.pem` and returns a valid INI for
    /// it (device [`DEVICE_ID`]/[`DEVICE_KEY`], `ca_file = Config/ca.pem`,
    /// `splay = 0`, `retries = 1`, autoupdate and firewall Off; for a plain
    /// HTTP network also `allow_insecure_http = On`), merged with
    /// `extra_sections` (INI text: a key given there replaces the base one in
    /// the same section, new keys and sections are added, and a line `-key`
    /// removes `key` from the current section).
    pub fn ini_for(&self, net: &TestNetwork, extra_sections: &str) -> String {
        net.write_ca(&self.path("Config")).expect("write ca.pem");
        let mut base = vec![
            (
                "device".to_string(),
                vec![
                    ("id", DEVICE_ID.to_string()),
                    ("key", DEVICE_KEY.to_string()),
                ],
            ),
            (
                "network".to_string(),
                vec![
                    ("url", net.url()),
                    ("ca_file", "Config/ca.pem".to_string()),
                    ("splay", "0".to_string()),
                    ("retries", "1".to_string()),
                ],
            ),
            (
                "version".to_string(),
                vec![("autoupdate", "Off".to_string())],
            ),
            ("firewall".to_string(), vec![("enabled", "Off".to_string())]),
        ]
        .into_iter()
        .map(|(s, kv)| {
            (
                s,
                kv.into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect::<Vec<_>>(),
            )
        })
        .collect::<Vec<_>>();
        if net.is_plain() {
            base[1]
                .1
                .push(("allow_insecure_http".to_string(), "On".to_string()));
        }
        merge_ini(&mut base, extra_sections);
        render_ini(&base)
    }

    /// `write_ini(ini_for(net, extra_sections))`.
    pub fn setup(&self, net: &TestNetwork, extra_sections: &str) {
        let ini = self.ini_for(net, extra_sections);
        self.write_ini(&ini);
    }

    /// Runs the agent with the test's environment plus `CNCOP_HOME=root`,
    /// stdin null; panics if it runs longer than [`RUN_LIMIT`].
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_limited(args, RUN_LIMIT)
    }

    /// [`Install::run`] with a chosen time limit (the agent is killed and the
    /// test panics, showing its stderr, when it is exceeded).
    pub fn run_limited(&self, args: &[&str], limit: Duration) -> Output {
        let mut cmd = agent_command();
        cmd.args(args).env("CNCOP_HOME", self.root());
        exec(cmd, limit)
    }

    /// Runs the agent as busybox cron would: empty environment except
    /// `CNCOP_HOME`, working directory `/`, stdin null.
    pub fn run_cron_like(&self, args: &[&str]) -> Output {
        let mut cmd = agent_command();
        cmd.args(args)
            .env_clear()
            .env("CNCOP_HOME", self.root())
            .current_dir("/");
        exec(cmd, RUN_LIMIT)
    }

    /// Runs the agent without `CNCOP_HOME`, from a copy placed in
    /// `root/bin/` (so the root is found as the binary's grandparent).
    pub fn run_installed_copy(&self, args: &[&str]) -> Output {
        let exe = self.path("bin/cncopgetprofile");
        if !exe.exists() {
            std::fs::copy(agent_path(), &exe).expect("copy agent into bin/");
        }
        let mut cmd = agent_command_at(&exe);
        cmd.args(args).env_remove("CNCOP_HOME").current_dir("/");
        exec(cmd, RUN_LIMIT)
    }

    /// `Config/cncopgetprofile.state`, the agent's own state file.
    pub fn state_path(&self) -> PathBuf {
        self.path("Config/cncopgetprofile.state")
    }

    pub fn db_path(&self) -> PathBuf {
        self.path("Config/backupjobs.db")
    }

    /// Bytes of `Config/backupjobs.db`, if it exists.
    pub fn db_bytes(&self) -> Option<Vec<u8>> {
        std::fs::read(self.db_path()).ok()
    }

    /// Modification time of `Config/backupjobs.db`, if it exists.
    pub fn db_mtime(&self) -> Option<SystemTime> {
        std::fs::metadata(self.db_path())
            .and_then(|m| m.modified())
            .ok()
    }

    /// Files in `Spool/Logs/`, sorted.
    pub fn log_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.path("Spool/Logs"))
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// All of `Spool/Logs/`, concatenated (lossy UTF-8).
    pub fn read_logs(&self) -> String {
        let mut s = String::new();
        for p in self.log_files() {
            if let Ok(b) = std::fs::read(&p) {
                s.push_str(&String::from_utf8_lossy(&b));
            }
        }
        s
    }
}

fn merge_ini(base: &mut Vec<(String, Vec<(String, String)>)>, extra: &str) {
    let mut section: Option<usize> = None;
    for line in extra.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let name = name.trim();
            let idx = match base.iter().position(|(s, _)| s == name) {
                Some(i) => i,
                None => {
                    base.push((name.to_string(), Vec::new()));
                    base.len() - 1
                }
            };
            section = Some(idx);
            continue;
        }
        let Some(idx) = section else {
            panic!("ini_for: line {t:?} outside any [section]");
        };
        let keys = &mut base[idx].1;
        if let Some(k) = t.strip_prefix('-') {
            let k = k.trim();
            keys.retain(|(key, _)| !key.eq_ignore_ascii_case(k));
            continue;
        }
        let (k, v) = t
            .split_once('=')
            .or_else(|| t.split_once(':'))
            .map(|(k, v)| (k.trim(), v.trim()))
            .unwrap_or((t, ""));
        match keys.iter_mut().find(|(key, _)| key.eq_ignore_ascii_case(k)) {
            Some(slot) => slot.1 = v.to_string(),
            None => keys.push((k.to_string(), v.to_string())),
        }
    }
}

fn render_ini(sections: &[(String, Vec<(String, String)>)]) -> String {
    let mut s = String::new();
    for (name, keys) in sections {
        s.push_str(&format!("[{name}]\n"));
        for (k, v) in keys {
            s.push_str(&format!("{k} = {v}\n"));
        }
        s.push('\n');
    }
    s
}

/// Files in the install's `Config/` whose name starts with `prefix`, sorted.
pub fn config_files(inst: &Install, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(inst.path("Config"))
        .expect("read Config/")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// What a user can see of the store file.
pub struct Snap {
    pub bytes: Vec<u8>,
    pub mtime: SystemTime,
    pub ino: u64,
}

pub fn snap(inst: &Install) -> Snap {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(inst.db_path()).expect("the store exists");
    Snap {
        bytes: inst.db_bytes().expect("read the store"),
        mtime: meta.modified().expect("mtime"),
        ino: meta.ino(),
    }
}

/// Sets the store's mtime far in the past (without writing to it), so that
/// any later write shows.
pub fn age_store(inst: &Install) {
    let f = std::fs::File::options()
        .write(true)
        .open(inst.db_path())
        .expect("open the store");
    f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000))
        .expect("set mtime");
}

#[track_caller]
pub fn assert_store_untouched(before: &Snap, inst: &Install, what: &str) {
    let now = snap(inst);
    assert!(
        now.bytes == before.bytes,
        "{what}: the store's bytes changed ({} bytes before, {} now)",
        before.bytes.len(),
        now.bytes.len()
    );
    assert_eq!(now.mtime, before.mtime, "{what}: the store's mtime changed");
    assert_eq!(
        now.ino, before.ino,
        "{what}: the store file was replaced (new inode)"
    );
}

/// The trust section of the agent's state file as kept on disk, if written.
pub fn trust_state_bytes(inst: &Install) -> Option<Vec<u8>> {
    let bytes = std::fs::read(inst.state_path()).ok()?;
    let sections = cncopgetprofile::internals::state::decode(&bytes)
        .unwrap_or_else(|e| panic!("the state file does not decode: {e}"));
    sections.get("trust").cloned()
}
