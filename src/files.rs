//! How the agent changes its files: the job store, the state file, the run
//! record and the logs. A file under `Config/` is created with mode 0600
//! (the store holds credentials, the state file trust data), the run record
//! 0644 (monitoring reads it); such a file is never rewritten in place but
//! replaced whole by a rename of a synced file beside it, the rename is made
//! durable by syncing the folder, and a damaged file is moved aside rather
//! than deleted. Logs are only appended to (and cut back after a power cut
//! tore them, see `logs`). Every file operation of the agent goes through
//! these few functions, and each reports what it did to `write_tap` (the
//! crash-state explorer's seam; nothing in production listens).

use crate::error::{Error, Reason, Result};
use crate::write_tap::{self, Event};
use std::io::Write;
use std::path::{Path, PathBuf};

/// `<path>: <what>: <reason>`, the shape of every file error message. A
/// full disk, the common failure on a small appliance, says what to do.
pub(crate) fn io_error(path: &Path, what: &str, e: &std::io::Error) -> Error {
    let reason = crate::error::io_reason(e);
    let text = if is_disk_full(e) {
        format!(
            "{}: {what}: the disk is full ({reason}); free space on it (the previous file is kept)",
            path.display()
        )
    } else {
        format!("{}: {what}: {reason}", path.display())
    };
    Error::Store(Reason::caused_by(text, same_io_error(e)))
}

/// An owned copy of a borrowed I/O error for a cause: the same OS error
/// (so the same kind and text) when it has one, else its kind and text.
pub(crate) fn same_io_error(e: &std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(e.kind(), e.to_string()),
    }
}

/// No space left, a file-size limit (`ulimit -f`) or a quota: all mean
/// "free space", whatever words the platform's errno has.
fn is_disk_full(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::StorageFull | ErrorKind::FileTooLarge | ErrorKind::QuotaExceeded
    )
}

/// Who may read a file the agent replaces whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Mode 0600: the store (credentials) and the state file (trust data).
    Private,
    /// Mode 0644: the run record, which monitoring reads.
    Public,
}

impl Access {
    fn mode(self) -> u32 {
        match self {
            Access::Private => 0o600,
            Access::Public => 0o644,
        }
    }
}

/// Creates `path` anew with mode 0600; fails if it exists.
pub(crate) fn create_private(path: &Path) -> Result<std::fs::File> {
    create_new(path, Access::Private)
}

/// Creates `path` anew, readable as `access` says; fails if it exists.
fn create_new(path: &Path, access: Access) -> Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, access.mode());
    let file = opts
        .open(path)
        .map_err(|e| io_error(path, "cannot create", &e))?;
    write_tap::report(Event::Create(path));
    Ok(file)
}

/// Opens `path` to append to it (read too), creating it with `mode` if
/// there is none; says whether it did. Appends go through [`append`].
pub(crate) fn open_append(path: &Path, mode: u32) -> std::io::Result<(std::fs::File, bool)> {
    let opts = |create_new: bool| {
        let mut o = std::fs::OpenOptions::new();
        o.append(true).read(true).create_new(create_new);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, mode);
        o
    };
    match opts(true).open(path) {
        Ok(file) => {
            write_tap::report(Event::Create(path));
            Ok((file, true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            opts(false).open(path).map(|f| (f, false))
        }
        Err(e) => Err(e),
    }
}

/// Appends `data` to `file` (opened by [`open_append`]), which holds `len`
/// bytes before it.
pub(crate) fn append(
    file: &mut std::fs::File,
    path: &Path,
    len: u64,
    data: &[u8],
) -> std::io::Result<()> {
    file.write_all(data)?;
    write_tap::report(Event::Write {
        path,
        offset: len,
        data,
    });
    Ok(())
}

/// Cuts `file` to `len` bytes.
pub(crate) fn truncate(file: &std::fs::File, path: &Path, len: u64) -> std::io::Result<()> {
    file.set_len(len)?;
    write_tap::report(Event::SetLen { path, len });
    Ok(())
}

/// Makes what was written to `file` durable (`fdatasync`).
pub(crate) fn sync(file: &std::fs::File, path: &Path) -> std::io::Result<()> {
    file.sync_data()?;
    write_tap::report(Event::Sync(path));
    Ok(())
}

/// The redb backend of a store file the agent writes: `file` itself, its
/// changes reported to `write_tap`.
pub(crate) fn store_backend(
    file: std::fs::File,
    path: &Path,
) -> std::result::Result<write_tap::TappedBackend, redb::DatabaseError> {
    write_tap::TappedBackend::new(file, path, None)
}

/// The redb backend of a new store file, which nothing reads before it is
/// renamed into place: its syncs are skipped while `syncs_held` is true.
/// Only the last commit, made after it is set to false, has to reach the
/// disk before the rename, and its `fdatasync` writes all of the file's
/// data, not just what came since an earlier one. A crash before that
/// leaves a leftover that the next run removes. The skipped syncs were
/// about 30 at 100 000 jobs, each one waited for (on flash, each waits for
/// the device).
pub(crate) fn new_store_backend(
    file: std::fs::File,
    path: &Path,
    syncs_held: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::result::Result<write_tap::TappedBackend, redb::DatabaseError> {
    write_tap::TappedBackend::new(file, path, Some(syncs_held))
}

/// Removes `path`; `Ok(false)` when there was none.
pub(crate) fn remove(path: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            write_tap::report(Event::Remove(path));
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes a temporary file an earlier, interrupted run may have left.
pub(crate) fn remove_leftover(tmp: &Path) -> Result<()> {
    remove(tmp)
        .map(drop)
        .map_err(|e| io_error(tmp, "cannot remove a leftover temporary file", &e))
}

/// Makes a rename in `path`'s folder durable. Best effort: some file
/// systems refuse to fsync a directory, and the rename itself is atomic.
pub(crate) fn sync_dir(path: &Path) {
    let Some(dir) = path.parent() else { return };
    if let Ok(d) = std::fs::File::open(dir)
        && d.sync_all().is_ok()
    {
        write_tap::report(Event::SyncDir(dir));
    }
}

/// Makes the complete, synced file `tmp` the file `path`: the one atomic
/// step of every change to a file of the agent.
pub(crate) fn rename_into_place(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).map_err(|e| io_error(path, "cannot replace the file", &e))?;
    write_tap::report(Event::Rename {
        from: tmp,
        to: path,
    });
    sync_dir(path);
    Ok(())
}

/// Replaces `path` with `bytes`: written to `tmp` beside it (readable as
/// `access` says), synced, renamed over `path`, the folder synced. A crash
/// at any moment leaves the old file or the new one whole, and maybe `tmp`,
/// which the next run removes.
pub(crate) fn replace_with_bytes(
    path: &Path,
    tmp: &Path,
    bytes: &[u8],
    access: Access,
) -> Result<()> {
    remove_leftover(tmp)?;
    let written = create_new(tmp, access).and_then(|mut f| {
        f.write_all(bytes)
            .map(|()| {
                write_tap::report(Event::Write {
                    path: tmp,
                    offset: 0,
                    data: bytes,
                })
            })
            .and_then(|()| f.sync_all())
            .map(|()| write_tap::report(Event::Sync(tmp)))
            .map_err(|e| io_error(tmp, "cannot write", &e))
    });
    if let Err(e) = written {
        // Best effort: a leftover is removed by the next run anyway.
        let _ = remove(tmp);
        return Err(e);
    }
    rename_into_place(tmp, path)
}

/// Moves a damaged `path` to `<name>.corrupt-<UTC time>` beside it and
/// returns the new name.
pub(crate) fn move_aside(path: &Path, now: u64) -> Result<PathBuf> {
    let stamp = crate::clock::rfc3339(now).replace([':', '-'], "");
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".corrupt-{stamp}"));
    let aside = path.with_file_name(name);
    std::fs::rename(path, &aside)
        .map_err(|e| io_error(path, "damaged and cannot be moved aside", &e))?;
    write_tap::report(Event::Rename {
        from: path,
        to: &aside,
    });
    sync_dir(path);
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replace_with_bytes_writes_a_private_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let tmp = dir.path().join("f.new");
        std::fs::write(&tmp, b"left by a killed run").unwrap();
        replace_with_bytes(&path, &tmp, b"one", Access::Private).unwrap();
        replace_with_bytes(&path, &tmp, b"two", Access::Private).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(!tmp.exists());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let public = dir.path().join("p");
        replace_with_bytes(&public, &tmp, b"all", Access::Public).unwrap();
        let mode = std::fs::metadata(&public).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn a_full_disk_is_told_by_its_kind_not_its_words() {
        use std::io::{Error as IoError, ErrorKind};
        for kind in [
            ErrorKind::StorageFull,
            ErrorKind::FileTooLarge,
            ErrorKind::QuotaExceeded,
        ] {
            // Words that name nothing: only the kind can tell.
            let e = io_error(
                Path::new("/x/f"),
                "cannot write",
                &IoError::new(kind, "errno 28"),
            );
            assert!(e.to_string().contains("the disk is full"), "{kind:?}: {e}");
        }
        let e = IoError::other("No space left on device (lookalike)");
        let e = io_error(Path::new("/x/f"), "cannot write", &e);
        assert!(!e.to_string().contains("the disk is full"), "{e}");
    }

    #[test]
    fn a_failed_replacement_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"old").unwrap();
        // The temporary file's folder does not exist: creating it fails.
        let tmp = dir.path().join("missing").join("f.new");
        assert!(replace_with_bytes(&path, &tmp, b"new", Access::Private).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
    }

    #[test]
    fn a_file_error_keeps_the_io_error_as_its_source() {
        use std::error::Error as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let tmp = dir.path().join("missing").join("f.new");
        let e = replace_with_bytes(&path, &tmp, b"new", Access::Private).unwrap_err();
        let io = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            io.map(|io| io.kind()),
            Some(std::io::ErrorKind::NotFound),
            "{e}"
        );
        // The cause is for callers; the message stays one line without it.
        let shown = e.to_string();
        assert!(
            shown.ends_with(": cannot create: no such file or directory"),
            "{shown}"
        );
        assert!(!shown.contains("os error"), "{shown}");
    }

    #[test]
    fn move_aside_names_the_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.state");
        std::fs::write(&path, b"junk").unwrap();
        let aside = move_aside(&path, 1_795_762_805).unwrap();
        assert_eq!(
            aside.file_name().unwrap(),
            "x.state.corrupt-20261127T070005Z"
        );
        assert!(!path.exists());
        assert_eq!(std::fs::read(aside).unwrap(), b"junk");
    }
}
