//! Atomic writes: each output goes to a temporary file beside its destination,
//! renamed over it once complete, so a failed run leaves no partial file and an
//! existing destination stays whole until the rename.
//!
//! The temporary file gets the permissions a plain `File::create` would give
//! (`0o666` less the umask), or the destination's when it exists, rather than
//! the `0o600` of `tempfile`'s default. Temporary files still open are listed,
//! so that a program stopped by a signal can remove them first
//! ([`remove_pending`]; `normkit scale` does so on SIGINT, SIGTERM and SIGHUP).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tempfile::NamedTempFile;

/// The temporary files of [`AtomicFile`]s neither committed nor dropped.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A file being written in place of `dest`. Dropped without [`commit`]
/// (`AtomicFile::commit`), it removes its temporary file.
pub struct AtomicFile {
    // Fields drop in this order: the file is removed, then forgotten.
    tmp: NamedTempFile,
    dest: PathBuf,
    _listed: Listed,
}

/// Keeps a temporary file in [`PENDING`] while it lives.
struct Listed(PathBuf);

impl Drop for Listed {
    fn drop(&mut self) {
        lock_pending().retain(|p| *p != self.0);
    }
}

impl AtomicFile {
    /// A new, empty temporary file in `dest`'s directory.
    pub fn new(dest: &Path) -> io::Result<Self> {
        let dir = dir_of(dest);
        let mut builder = tempfile::Builder::new();
        builder.prefix(".normkit-").suffix(".tmp");
        #[cfg(unix)]
        let new_file_mode = {
            use std::os::unix::fs::PermissionsExt;
            // Passed to open(2), which applies the umask, as File::create does.
            std::fs::Permissions::from_mode(0o666)
        };
        #[cfg(unix)]
        builder.permissions(new_file_mode);
        let tmp = builder.tempfile_in(dir)?;
        if let Ok(existing) = std::fs::metadata(dest) {
            tmp.as_file().set_permissions(existing.permissions())?;
        }
        lock_pending().push(tmp.path().to_path_buf());
        let listed = Listed(tmp.path().to_path_buf());
        Ok(AtomicFile { tmp, dest: dest.to_path_buf(), _listed: listed })
    }

    /// The open temporary file.
    pub fn file(&self) -> &File {
        self.tmp.as_file()
    }

    /// Flushes the file to disk and renames it over the destination.
    pub fn commit(self) -> io::Result<()> {
        let AtomicFile { tmp, dest, _listed } = self;
        tmp.as_file().sync_all()?;
        tmp.persist(&dest).map(drop).map_err(|e| e.error)
    }
}

/// The directory a file at `path` is in (`.` for a bare file name).
pub fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Whether `a` and `b` name the same file, whether or not it exists yet (a
/// path that does not exist is resolved through its directory).
pub fn same_file(a: &Path, b: &Path) -> bool {
    fn resolve(p: &Path) -> Option<PathBuf> {
        match p.canonicalize() {
            Ok(real) => Some(real),
            Err(_) => Some(dir_of(p).canonicalize().ok()?.join(p.file_name()?)),
        }
    }
    matches!((resolve(a), resolve(b)), (Some(x), Some(y)) if x == y)
}

fn lock_pending() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    // A panic while the list was held leaves it usable: it is only paths.
    PENDING.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Removes every temporary file still being written (for a program about to
/// exit on a signal, which runs no destructors).
pub fn remove_pending() {
    remove_pending_where(|_| true);
}

/// Removes the listed temporary files for which `which` holds.
fn remove_pending_where(which: impl Fn(&Path) -> bool) {
    lock_pending().retain(|p| {
        if which(p) {
            let _ = std::fs::remove_file(p);
        }
        !which(p)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn commit_replaces_the_destination_and_drop_leaves_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.txt");
        std::fs::write(&dest, "old").unwrap();
        let a = AtomicFile::new(&dest).unwrap();
        a.file().write_all(b"new").unwrap();
        assert_eq!(lock_pending().iter().filter(|p| p.starts_with(dir.path())).count(), 1);
        drop(a);
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "old");
        let a = AtomicFile::new(&dest).unwrap();
        a.file().write_all(b"new").unwrap();
        a.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "new");
        assert!(lock_pending().iter().all(|p| !p.starts_with(dir.path())));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }

    #[test]
    fn remove_pending_deletes_unfinished_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = AtomicFile::new(&dir.path().join("x.csv")).unwrap();
        let tmp = a.tmp.path().to_path_buf();
        assert!(tmp.exists());
        // Only this test's files: the other tests run beside it.
        remove_pending_where(|p| p.starts_with(dir.path()));
        assert!(!tmp.exists());
        assert!(lock_pending().iter().all(|p| !p.starts_with(dir.path())));
        drop(a);
    }

    #[cfg(unix)]
    #[test]
    fn a_new_file_gets_the_umask_mode_and_a_replaced_one_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (new, old) = (dir.path().join("new"), dir.path().join("old"));
        std::fs::write(&old, "x").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o640)).unwrap();
        // What File::create gives here, under this process's umask.
        let probe = dir.path().join("probe");
        File::create(&probe).unwrap();
        let plain = std::fs::metadata(&probe).unwrap().permissions().mode() & 0o777;
        for (dest, want) in [(&new, plain), (&old, 0o640)] {
            AtomicFile::new(dest).unwrap().commit().unwrap();
            assert_eq!(std::fs::metadata(dest).unwrap().permissions().mode() & 0o777, want, "{}", dest.display());
        }
    }
}
