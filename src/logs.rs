//! Diagnostic logs in `Spool/Logs/gp<YYYYMMDD>.log` (UTC, one file per day,
//! appended), as the suite's other agents keep them, and stderr for cron.
//!
//! With `-d` everything from debug up goes to the day's file; without it
//! warnings and errors go to stderr and each run appends one summary line
//! (`[INFO]`, or `[ERROR]` for a failed run, so grepping a pulled log for
//! errors finds it), plus the records logged to the [`DAY_LOG`] target.
//! Only this crate's own log records are kept: ureq and rustls log request
//! details that may include the Authorization header.
//!
//! The log folder cannot fill the flash, even with `-d` left in the crontab:
//! the `gp*.log` files together stay within `[defaults] max_log_mib`. A line
//! that would cross the cap first removes the oldest other days' files; when
//! only the day's own file is left, one line saying so ends it, and nothing
//! more is written to it that day (a file ending with that line stays as it
//! is). Every line goes through one [`DayFile`], whole lines only.
//!
//! What a power cut leaves (tests/power_loss.rs explores it): lines are
//! appended without a sync, and the day's file is synced once, after the
//! run's summary line and before the run record is written. So once
//! `cncopgetprofile.status` shows a run, that run's lines are durable; a
//! power cut during a run may lose the lines it had appended, or tear them:
//! a last line cut short, or NUL bytes where the file system kept the
//! file's new length but not what was written into it. The agent never
//! writes a NUL (a line holding one has it replaced), so the next run that
//! opens the day's file cuts it back to its last whole line before the
//! first NUL, then appends: bytes that were never written do not stay.
//! (Not while another process appends to it: each holds a shared `flock`
//! on the file, and only a run that gets it exclusively cuts.)
//! Every file operation goes through `files`.

use crate::clock::{self, UnixTime};
use crate::files;
use simplelog::{ConfigBuilder, LevelFilter, SharedLogger, WriteLogger};
use std::borrow::Cow;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// `[defaults] max_log_mib`'s default, in bytes.
pub const DEFAULT_MAX_LOG_BYTES: u64 = 8 * 1024 * 1024;

/// Kept free under the cap for the line that says the cap was reached.
const CAP_LINE_RESERVE: u64 = 1024;

/// The words of that line; a day's file whose last line holds them is full.
const CAP_MARK: &str = "log cap reached";

/// The day's file of this process, shared by the logger and the summary.
static DAY_FILE: Mutex<Option<DayFile>> = Mutex::new(None);

/// The log target of lines that belong in the day's file even without `-d`
/// and never on stderr (e.g. "cncopreporter is not installed": cron would
/// mail a stderr line every hour): `log::info!(target: DAY_LOG, ...)`.
pub const DAY_LOG: &str = concat!(env!("CARGO_CRATE_NAME"), "::day_log");

/// Where this run's log lines go.
pub struct Logs {
    debug: bool,
}

/// The day's log file name, `gp20261127.log`.
pub fn file_name(now: UnixTime) -> String {
    format!("gp{}.log", clock::day_stamp(now))
}

/// The day of a `gp<YYYYMMDD>.log` name.
fn day_of(name: &std::ffi::OsStr) -> Option<UnixTime> {
    name.to_str()
        .and_then(|n| n.strip_prefix("gp"))
        .and_then(|n| n.strip_suffix(".log"))
        .and_then(clock::parse_day_stamp)
}

/// The day's log file and the budget it shares with the other days' files.
///
/// Invariant: `size` plus the sizes in `older` plus `stuck` is what the
/// `gp*.log` files hold (as far as this process knows), and a line is
/// written only if that stays within `cap - CAP_LINE_RESERVE`.
struct DayFile {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    size: u64,
    /// The other days' files, oldest first, with their sizes.
    older: Vec<(PathBuf, u64)>,
    /// Bytes of older files that could not be removed.
    stuck: u64,
    cap: u64,
    /// The cap line ends the file: nothing more is written to it.
    full: bool,
    /// This run created the file: its folder is synced with it.
    created: bool,
    /// Bytes of a torn end (see the module header) cut when it was opened.
    cut: u64,
}

impl DayFile {
    fn open(dir: &Path, now: UnixTime) -> std::io::Result<DayFile> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(file_name(now));
        let (mut file, created) = files::open_append(&path, 0o640)?;
        // Every process appending to the file holds a shared lock on it (a
        // run the run lock refuses logs its summary too): only a file no
        // one else is appending to is cut, never a line being written.
        let alone = !matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock));
        let mut size = file.metadata()?.len();
        let whole = if alone {
            whole_length(&mut file, size)?
        } else {
            size
        };
        if whole < size {
            files::truncate(&file, &path, whole)?;
        }
        let cut = size - whole;
        size = whole;
        // Converts the exclusive lock; where the file system has no locks,
        // logging goes on without.
        let _ = file.lock_shared();
        let full = last_line_has_mark(&mut file, size);
        let mut day = DayFile {
            dir: dir.to_path_buf(),
            path,
            file,
            size,
            older: Vec::new(),
            stuck: 0,
            cap: DEFAULT_MAX_LOG_BYTES,
            full,
            created,
            cut,
        };
        day.rescan();
        Ok(day)
    }

    /// Lists the other days' files again (after some were removed by age).
    fn rescan(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut older: Vec<(UnixTime, PathBuf, u64)> = entries
            .flatten()
            .filter(|e| e.path() != self.path)
            .filter_map(|e| {
                let day = day_of(&e.file_name())?;
                let len = e.metadata().ok().filter(|m| m.is_file())?.len();
                Some((day, e.path(), len))
            })
            .collect();
        older.sort();
        self.older = older.into_iter().map(|(_, p, l)| (p, l)).collect();
        self.stuck = 0;
    }

    fn total(&self) -> u64 {
        self.size + self.stuck + self.older.iter().map(|(_, l)| l).sum::<u64>()
    }

    /// Appends one whole line (with its newline), within the cap.
    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.full {
            return Ok(());
        }
        // A NUL in the file marks damage (module header): none is written.
        let line = if line.contains(&0) {
            Cow::Owned(
                line.iter()
                    .map(|&b| if b == 0 { b' ' } else { b })
                    .collect(),
            )
        } else {
            Cow::Borrowed(line)
        };
        let room = self.cap.saturating_sub(CAP_LINE_RESERVE);
        let len = line.len() as u64;
        while self.total() + len > room && !self.older.is_empty() {
            let (path, bytes) = self.older.remove(0);
            if files::remove(&path).is_err() {
                self.stuck += bytes;
            }
        }
        if self.total() + len <= room {
            files::append(&mut self.file, &self.path, self.size, &line)?;
            self.size += len;
            return Ok(());
        }
        self.full = true;
        let cap_line = format!(
            "{} [WARN] {CAP_MARK}: the gp*.log files in {} hold {} bytes, [defaults] max_log_mib is {} bytes; {} gets no more lines today\n",
            clock::rfc3339(clock::system_now()),
            self.dir.display(),
            self.total(),
            self.cap,
            self.path.display()
        );
        files::append(&mut self.file, &self.path, self.size, cap_line.as_bytes())?;
        self.size += cap_line.len() as u64;
        Ok(())
    }

    /// Makes the lines appended so far durable, and the file's name with
    /// them when this run created it.
    fn sync(&mut self) {
        if files::sync(&self.file, &self.path).is_ok() && self.created {
            files::sync_dir(&self.path);
            self.created = false;
        }
    }
}

/// The length of the file's whole lines before any damage a power cut left
/// (module header): up to the last newline before the first NUL byte, or
/// before a last line without its newline. Reads the file once.
fn whole_length(file: &mut File, size: u64) -> std::io::Result<u64> {
    file.seek(SeekFrom::Start(0))?;
    let mut buf = [0u8; 8192];
    let mut reader = Read::take(&*file, size);
    let (mut at, mut whole) = (0u64, 0u64);
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(whole),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..n];
        let nul = chunk.iter().position(|&b| b == 0);
        if let Some(p) = chunk[..nul.unwrap_or(n)].iter().rposition(|&b| b == b'\n') {
            whole = at + p as u64 + 1;
        }
        if nul.is_some() {
            return Ok(whole);
        }
        at += n as u64;
    }
}

/// Whether the last line of the file (of `size` bytes) is the cap line.
fn last_line_has_mark(file: &mut File, size: u64) -> bool {
    let tail = size.min(CAP_LINE_RESERVE);
    let mut buf = Vec::new();
    if file.seek(SeekFrom::Start(size - tail)).is_err()
        || file.take(tail).read_to_end(&mut buf).is_err()
    {
        return false;
    }
    let text = String::from_utf8_lossy(&buf);
    let text = text.trim_end_matches('\n');
    text.rsplit('\n')
        .next()
        .is_some_and(|l| l.contains(CAP_MARK))
}

/// Runs `f` on the day's file, if it is open.
fn with_day_file(f: impl FnOnce(&mut DayFile)) {
    // A panic elsewhere while logging must not silence the logs.
    let mut guard = DAY_FILE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(day) = guard.as_mut() {
        f(day);
    }
}

/// The logger's writer: hands whole lines to the day's file (simplelog
/// writes one record in several pieces).
struct LineSink {
    pending: Vec<u8>,
}

impl Write for LineSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') {
            let lines: Vec<u8> = self.pending.drain(..=end).collect();
            with_day_file(|day| {
                for line in lines.split_inclusive(|&b| b == b'\n') {
                    let _ = day.append(line);
                }
            });
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// simplelog's settings: only records whose target starts with `allow` and
/// not with `ignore`, with or without a time stamp.
fn log_config(
    with_time: bool,
    allow: &'static str,
    ignore: Option<&'static str>,
) -> simplelog::Config {
    let mut b = ConfigBuilder::new();
    b.add_filter_allow_str(allow)
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off);
    if let Some(ignore) = ignore {
        b.add_filter_ignore_str(ignore);
    }
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
            log_config(false, env!("CARGO_CRATE_NAME"), Some(DAY_LOG)),
            std::io::stderr(),
        )];
        let mut cut = None;
        match DayFile::open(dir, now) {
            Ok(day) => {
                cut = (day.cut > 0).then(|| (day.path.clone(), day.cut));
                *DAY_FILE.lock().unwrap_or_else(|p| p.into_inner()) = Some(day);
                // With -d, everything of this crate from debug up; without,
                // only the day-log lines.
                let (level, allow) = if debug {
                    (LevelFilter::Debug, env!("CARGO_CRATE_NAME"))
                } else {
                    (LevelFilter::Info, DAY_LOG)
                };
                let sink = LineSink {
                    pending: Vec::new(),
                };
                loggers.push(WriteLogger::new(level, log_config(true, allow, None), sink));
            }
            Err(e) => eprintln!(
                "[WARN] cannot write the log folder {}: {}; logging to stderr only",
                dir.display(),
                crate::error::io_reason(&e)
            ),
        }
        // Only fails if a logger is already set (tests); then keep that one.
        let _ = simplelog::CombinedLogger::init(loggers);
        if let Some((path, bytes)) = cut {
            log::info!(
                target: DAY_LOG,
                "{}: cut {bytes} bytes of torn lines a power cut left at its end",
                path.display()
            );
        }
        Logs { debug }
    }

    /// Appends the run's one summary line to the day's file: `[INFO]` when
    /// the run's exit code is 0, else `[ERROR]`. Never on stderr (the error
    /// itself went there). With `-d` it is logged like any other line. Then
    /// the day's file is synced: the run record, written next, never shows
    /// a run whose lines a power cut could still take.
    pub fn summary(&mut self, line: &str, exit_code: u8) {
        self.write_summary(line, exit_code);
        with_day_file(DayFile::sync);
    }

    fn write_summary(&mut self, line: &str, exit_code: u8) {
        let level = if exit_code == crate::error::exit::OK {
            log::Level::Info
        } else {
            log::Level::Error
        };
        if self.debug {
            log::log!(target: DAY_LOG, level, "{line}");
            return;
        }
        let line = format!(
            "{} [{}] {line}\n",
            clock::rfc3339(clock::system_now()),
            level.as_str().to_ascii_uppercase()
        );
        with_day_file(|day| {
            let _ = day.append(line.as_bytes());
        });
    }
}

/// Sets the cap on the `gp*.log` files together (`[defaults] max_log_mib`);
/// until it is called the default applies.
pub fn set_cap(bytes: u64) {
    with_day_file(|day| day.cap = bytes);
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
    let mut failed = Vec::new();
    for entry in entries.flatten() {
        let Some(day) = day_of(&entry.file_name()) else {
            continue;
        };
        if day + 86_400 <= cutoff {
            match files::remove(&entry.path()) {
                Ok(_) => removed += 1,
                Err(e) => failed.push(format!("{}: {e}", entry.path().display())),
            }
        }
    }
    with_day_file(DayFile::rescan);
    // Logged after the day's file is released: the logger writes to it.
    for f in failed {
        log::warn!("cannot remove old log {f}");
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

    #[test]
    fn a_torn_end_is_cut_back_to_the_last_whole_line_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let now = clock::parse_day_stamp("20261127").unwrap();
        let path = dir.path().join(file_name(now));
        let long = "x".repeat(20_000);
        for (torn, kept) in [
            ("a\nb\npart".to_string(), "a\nb\n".to_string()),
            ("a\n\0\0\0c\n".to_string(), "a\n".to_string()),
            ("a\nb\0".to_string(), "a\n".to_string()),
            (format!("{long}\n{long}\0\n"), format!("{long}\n")),
            ("\0\0".to_string(), String::new()),
            ("a\nb\n".to_string(), "a\nb\n".to_string()),
        ] {
            std::fs::write(&path, &torn).unwrap();
            let mut day = DayFile::open(dir.path(), now).unwrap();
            assert_eq!(day.cut, (torn.len() - kept.len()) as u64, "{torn:?}");
            day.append(b"new \0 line\n").unwrap();
            let after = std::fs::read(&path).unwrap();
            assert_eq!(after, format!("{kept}new   line\n").as_bytes(), "{torn:?}");
        }
    }

    #[test]
    fn a_file_another_run_is_appending_to_is_not_cut() {
        let dir = tempfile::tempdir().unwrap();
        let now = clock::parse_day_stamp("20261127").unwrap();
        let path = dir.path().join(file_name(now));
        std::fs::write(&path, "a\nline being writ").unwrap();
        let other = DayFile::open(dir.path(), now).unwrap();
        assert_eq!(other.cut, 15, "alone, the torn end is cut");
        std::fs::write(&path, "a\nline being writ").unwrap();
        let second = DayFile::open(dir.path(), now).unwrap();
        assert_eq!(second.cut, 0, "another process appends to it");
        assert_eq!(std::fs::read(&path).unwrap(), b"a\nline being writ");
        drop((other, second));
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_cap_removes_oldest_days_first_then_ends_the_day_with_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let now = clock::parse_day_stamp("20261127").unwrap();
        let kib = vec![b'x'; 1023];
        for name in ["gp20261120.log", "gp20261125.log", "gp20261126.log"] {
            std::fs::write(dir.path().join(name), [&kib[..], b"\n"].concat()).unwrap();
        }
        std::fs::write(dir.path().join("other.log"), vec![b'y'; 5000]).unwrap();
        let mut day = DayFile::open(dir.path(), now).unwrap();
        day.cap = 4 * 1024 + CAP_LINE_RESERVE;
        let line = [&vec![b'l'; 99][..], b"\n"].concat();
        // 3 KiB of older days + 10 lines fill the 4 KiB; the 11th line
        // needs room.
        for _ in 0..10 {
            day.append(&line).unwrap();
        }
        assert_eq!(names(dir.path()).len(), 5, "nothing removed below the cap");
        day.append(&line).unwrap();
        assert_eq!(
            names(dir.path()),
            [
                "gp20261125.log",
                "gp20261126.log",
                "gp20261127.log",
                "other.log"
            ],
            "the oldest day went first; other files are not the agent's"
        );
        for _ in 0..40 {
            day.append(&line).unwrap();
        }
        assert_eq!(names(dir.path()), ["gp20261127.log", "other.log"]);
        let text = std::fs::read_to_string(dir.path().join("gp20261127.log")).unwrap();
        assert_eq!(text.matches(CAP_MARK).count(), 1, "one cap line");
        assert!(
            text.trim_end().ends_with("gets no more lines today"),
            "{text}"
        );
        assert!(text.len() as u64 <= day.cap, "{} > {}", text.len(), day.cap);
        assert!(
            text.lines().all(|l| l.len() == 99 || l.contains(CAP_MARK)),
            "whole lines only"
        );

        // A later run the same day writes nothing more.
        drop(day);
        let mut again = DayFile::open(dir.path(), now).unwrap();
        again.cap = 4 * 1024 + CAP_LINE_RESERVE;
        again.append(&line).unwrap();
        let after = std::fs::read_to_string(dir.path().join("gp20261127.log")).unwrap();
        assert_eq!(after, text);
        // The next day starts a new file, and the full one is the oldest.
        let mut next = DayFile::open(dir.path(), now + 86_400).unwrap();
        next.cap = 4 * 1024 + CAP_LINE_RESERVE;
        next.append(&line).unwrap();
        assert_eq!(names(dir.path()), ["gp20261128.log", "other.log"]);
    }
}
