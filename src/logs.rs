//! Diagnostic logs in `Spool/Logs/gp<YYYYMMDD>.log` (UTC, one file per day,
//! appended), as the suite's other agents keep them, and stderr for cron.
//!
//! With `-d` everything from debug up goes to the day's file; without it
//! warnings and errors go to stderr and each run appends one summary line.
//! Only this crate's own log records are kept: ureq and rustls log request
//! details that may include the Authorization header.

use crate::clock::{self, UnixTime};
use simplelog::{ConfigBuilder, LevelFilter, SharedLogger, WriteLogger};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where this run's log lines go.
pub struct Logs {
    file: Option<(PathBuf, File)>,
    debug: bool,
}

/// The day's log file name, `gp20261127.log`.
pub fn file_name(now: UnixTime) -> String {
    format!("gp{}.log", clock::day_stamp(now))
}

fn open_day_file(dir: &Path, now: UnixTime) -> std::io::Result<(PathBuf, File)> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(file_name(now));
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o640);
    let file = opts.open(&path)?;
    Ok((path, file))
}

fn log_config(with_time: bool) -> simplelog::Config {
    let mut b = ConfigBuilder::new();
    b.add_filter_allow_str(env!("CARGO_CRATE_NAME"))
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off);
    if with_time {
        b.set_time_format_rfc3339();
    } else {
        b.set_time_level(LevelFilter::Off);
    }
    b.build()
}

impl Logs {
    /// Sets up the global logger. A log folder that cannot be created or
    /// written is reported on stderr and the run goes on: logs help the
    /// technician, they must not stop the backups from being updated.
    pub fn init(dir: &Path, debug: bool, now: UnixTime) -> Logs {
        let mut loggers: Vec<Box<dyn SharedLogger>> = vec![WriteLogger::new(
            LevelFilter::Warn,
            log_config(false),
            std::io::stderr(),
        )];
        let file = match open_day_file(dir, now) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!(
                    "[WARN] cannot write the log folder {}: {}; logging to stderr only",
                    dir.display(),
                    crate::config::io_reason(&e)
                );
                None
            }
        };
        if let (true, Some((_, f))) = (debug, &file) {
            match f.try_clone() {
                Ok(f) => loggers.push(WriteLogger::new(LevelFilter::Debug, log_config(true), f)),
                Err(e) => eprintln!("[WARN] cannot write the debug log: {e}"),
            }
        }
        // Only fails if a logger is already set (tests); then keep that one.
        let _ = simplelog::CombinedLogger::init(loggers);
        Logs { file, debug }
    }

    /// Appends the run's one summary line to the day's file. With `-d` it is
    /// logged like any other line instead.
    pub fn summary(&mut self, line: &str) {
        if self.debug {
            log::info!("{line}");
            return;
        }
        if let Some((_, f)) = &mut self.file {
            let _ = writeln!(f, "{} [INFO] {line}", clock::rfc3339(clock::system_now()));
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|(p, _)| p.as_path())
    }
}

/// Deletes `gp<YYYYMMDD>.log` files whose day is more than `days` days
/// before `now`; returns how many were removed. Judged by the name, not the
/// mtime, since copying logs off a device changes mtimes.
pub fn remove_old(dir: &Path, days: u32, now: UnixTime) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let cutoff = now.saturating_sub(u64::from(days) * 86_400);
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(day) = name
            .to_str()
            .and_then(|n| n.strip_prefix("gp"))
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(clock::parse_day_stamp)
        else {
            continue;
        };
        if day + 86_400 <= cutoff {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) => log::warn!("cannot remove old log {}: {e}", entry.path().display()),
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_logs_older_than_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let now = clock::parse_day_stamp("20261127").unwrap() + 3600;
        for name in [
            "gp20261127.log",
            "gp20260829.log",
            "gp20260828.log",
            "gp2026.log",
            "other.log",
        ] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        assert_eq!(remove_old(dir.path(), 90, now), 1);
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "gp2026.log",
                "gp20260829.log",
                "gp20261127.log",
                "other.log"
            ]
        );
    }
}
