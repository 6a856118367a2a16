//! The job's private directory on the host: `tmp/` (the job's /tmp) and `root/` (mount point
//! of its new root), created fresh for each job and removed after it.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::KILL_GRACE;
use crate::sandbox::SandboxError;

const PREFIX: &str = "portcullis-job-";

/// Removes job dirs under `parent` whose runner process no longer exists (a runner killed
/// mid-job cannot clean up; its jobs die with it, their dirs stay). Returns how many.
pub(super) fn sweep_stale(parent: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(parent)?.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // kill(pid, 0): ESRCH means no such process; anything else (even EPERM) means alive,
        // possibly a reused pid, in which case the dir waits for a later sweep.
        let dead = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH);
        if dead && entry.file_type().is_ok_and(|t| t.is_dir()) {
            match remove_tree(&entry.path()) {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!(path = %entry.path().display(), error = %e,
                    "cannot remove a stale sandbox job dir"),
            }
        }
    }
    Ok(removed)
}

/// The job's private dir on the host. Removed by `remove`, or (if the run future is dropped)
/// in the background once init has exited.
pub(super) struct JobDir {
    pub(super) path: PathBuf,
    /// pidfd of init, to know when the job's processes are gone.
    pub(super) init: Option<OwnedFd>,
    armed: bool,
}

impl JobDir {
    pub(super) fn create(parent: &Path) -> Result<Self, SandboxError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut builder = std::fs::DirBuilder::new();
        builder.mode(0o700);
        for _ in 0..16 {
            // Unpredictable enough to avoid collisions; mkdir's O_EXCL semantics (it fails on
            // an existing name, symlink or not) is what makes it safe.
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            // The runner's pid in the name lets `sweep_stale` find dirs of dead runners.
            let name = format!("{PREFIX}{}-{:016x}", std::process::id(), random_u64() ^ n);
            let path = parent.join(name);
            match builder.create(&path) {
                Ok(()) => {
                    let dir = JobDir {
                        path,
                        init: None,
                        armed: true,
                    };
                    for sub in ["tmp", "root"] {
                        builder.create(dir.path.join(sub)).map_err(|source| {
                            SandboxError::Create {
                                context: format!("creating {sub}/ in the job dir"),
                                source,
                            }
                        })?;
                    }
                    return Ok(dir);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(SandboxError::Create {
                        context: format!("creating a job dir in {}", parent.display()),
                        source,
                    })
                }
            }
        }
        Err(SandboxError::Create {
            context: format!("creating a job dir in {}", parent.display()),
            source: io::Error::from(io::ErrorKind::AlreadyExists),
        })
    }

    pub(super) fn remove(mut self) -> Result<(), SandboxError> {
        self.armed = false;
        remove_tree(&self.path).map_err(|source| SandboxError::Teardown {
            context: format!("removing {}", self.path.display()),
            source,
        })
    }
}

impl Drop for JobDir {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let path = std::mem::take(&mut self.path);
        let remove = move || {
            if let Err(e) = remove_tree(&path) {
                tracing::warn!(path = %path.display(), error = %e, "leaked a sandbox job dir");
            }
        };
        // Without a running init (early errors) nothing can be using the dir: remove it now.
        let Some(init) = self.init.take() else {
            return remove();
        };
        std::thread::spawn(move || {
            // Readable once init has exited, i.e. once the job's processes are gone.
            let mut pfd = libc::pollfd {
                fd: init.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, (KILL_GRACE.as_millis() * 2) as i32) };
            remove()
        });
    }
}

/// `remove_dir_all`, also when the job left directories without write or search permission.
fn remove_tree(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_dirs_writable(path);
            std::fs::remove_dir_all(path)
        }
    }
}

fn make_dirs_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            // file_type() does not follow symlinks.
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                make_dirs_writable(&e.path());
            }
        }
    }
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}
