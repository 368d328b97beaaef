//! A store page that redb's B-tree code cannot read.
//!
//! redb checks its pages' checksums only in `check_integrity`, so a page
//! damaged on the flash (a bit error, a block the flash lost) reaches the
//! B-tree code as it is, and that code panics on it. A release build aborts
//! on a panic (`panic = "abort"`: unwinding tables would cost the armv7
//! binary its size budget), so the damage is handled in the panic hook, the
//! one place that still runs: the store being read is named in one line,
//! moved aside when this process is the agent's writing run, and the process
//! exits with the store's exit code. The next run finds no store and
//! downloads the whole profile (the state file's ETag belongs to the moved
//! store's id, so it is not sent); nothing else is lost.
//!
//! Only a panic whose location is in redb's own code is taken for damage:
//! any other panic is a bug and keeps the default report.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

struct Watched {
    path: PathBuf,
    /// Set for the agent's writing run: move the file aside, naming the
    /// time (Unix seconds) in its new name.
    move_at: Option<u64>,
}

/// The store files being read, innermost last.
static WATCHED: Mutex<Vec<Watched>> = Mutex::new(Vec::new());

fn watched() -> MutexGuard<'static, Vec<Watched>> {
    // A panic never happens while this is held (nothing in it can panic),
    // and poisoning would only mean a lost entry: take the data either way.
    WATCHED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// While this lives, a panic inside redb is taken for damage in its file.
pub(crate) struct Watch {
    path: PathBuf,
}

/// Watches `path`; with `move_at`, damage found in it moves it aside.
pub(crate) fn watch(path: &Path, move_at: Option<u64>) -> Watch {
    watched().push(Watched {
        path: path.to_path_buf(),
        move_at,
    });
    Watch {
        path: path.to_path_buf(),
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut list = watched();
        if let Some(i) = list.iter().rposition(|w| w.path == self.path) {
            list.remove(i);
        }
    }
}

/// The innermost file being read, and whether any watcher of it may move
/// it aside.
fn damaged_file() -> Option<(PathBuf, Option<u64>)> {
    innermost(&WATCHED.try_lock().ok()?)
}

fn innermost(list: &[Watched]) -> Option<(PathBuf, Option<u64>)> {
    let last = list.last()?;
    let move_at = list
        .iter()
        .filter(|w| w.path == last.path)
        .find_map(|w| w.move_at);
    Some((last.path.clone(), move_at))
}

/// Installs the panic hook that turns damage found in a watched store into
/// a one-line store error and its exit code (see the module comment). The
/// agent's `main` calls it once, first.
#[cfg(feature = "agent")]
pub fn exit_on_store_damage() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_redb = info.location().is_some_and(|l| l.file().contains("redb"));
        match damaged_file().filter(|_| in_redb) {
            Some((path, move_at)) => report_and_exit(&path, move_at),
            None => previous(info),
        }
    }));
}

#[cfg(feature = "agent")]
fn report_and_exit(path: &Path, move_at: Option<u64>) -> ! {
    let what = "a page redb cannot read";
    let msg = match move_at.map(|now| crate::files::move_aside(path, now)) {
        Some(Ok(aside)) => format!(
            "{} is damaged ({what}); moved it to {}: the next run rebuilds it from a full download",
            path.display(),
            aside.display()
        ),
        Some(Err(e)) => format!(
            "{} is damaged ({what}) and stays in place ({e}): remove it, then run cncopgetprofile again",
            path.display()
        ),
        None => format!(
            "{} is damaged ({what}); the next run of cncopgetprofile moves it aside and rebuilds it",
            path.display()
        ),
    };
    let e = crate::error::Error::Store(msg.into());
    // A run has its logger (stderr and the day's file); --list has none.
    if log::max_level() == log::LevelFilter::Off {
        eprintln!("cncopgetprofile: {e}");
    } else {
        log::error!("{e}");
        log::logger().flush();
    }
    std::process::exit(i32::from(e.exit_code()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(path: &str, move_at: Option<u64>) -> Watched {
        Watched {
            path: PathBuf::from(path),
            move_at,
        }
    }

    #[test]
    fn the_innermost_file_is_named_and_any_watcher_of_it_may_allow_the_move() {
        let db = "/r/Config/backupjobs.db";
        assert_eq!(innermost(&[]), None);
        assert_eq!(
            innermost(&[at(db, Some(7)), at(db, None)]),
            Some((PathBuf::from(db), Some(7))),
            "the run's store, read through its reader"
        );
        assert_eq!(
            innermost(&[at(db, None)]),
            Some((PathBuf::from(db), None)),
            "a reader alone (--list) never moves the file"
        );
        assert_eq!(
            innermost(&[at(db, Some(7)), at("/elsewhere.db", None)]),
            Some((PathBuf::from("/elsewhere.db"), None)),
            "the move is allowed for the run's store only"
        );
    }

    #[test]
    fn a_dropped_watch_is_forgotten() {
        let path = Path::new("/only/this/test.db");
        let w = watch(path, Some(1));
        assert!(watched().iter().any(|w| w.path == path));
        drop(w);
        assert!(!watched().iter().any(|w| w.path == path));
    }
}
