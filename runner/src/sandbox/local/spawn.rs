//! Starting init: the command line, the fds it inherits, and the `pre_exec` hook that
//! creates the namespaces between fork and exec.

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;

use super::protocol::{hostname_for, InitConfig, STATUS_SETUP};
use super::LocalNamespaces;
use crate::sandbox::{JobSpec, SandboxError};

/// Default environment of every job; `JobSpec::env` entries with the same name win.
const DEFAULT_ENV: [(&str, &str); 3] = [
    ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ("HOME", "/tmp"),
    ("TMPDIR", "/tmp"),
];

impl LocalNamespaces {
    /// Builds the init command and the fds it inherits. Everything the `pre_exec` hook needs
    /// is allocated here, because between fork and exec only async-signal-safe calls are
    /// allowed (the runner is multi-threaded).
    pub(super) fn prepare(&self, job: &JobSpec, jobdir: &Path) -> Result<Prepared, SandboxError> {
        let create = |context: &str| {
            let context = context.to_string();
            move |source| SandboxError::Create { context, source }
        };
        let mut env: Vec<(String, String)> = DEFAULT_ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in &job.env {
            env.retain(|(dk, _)| dk != k);
            env.push((k.clone(), v.clone()));
        }
        let config = InitConfig {
            job_id: job.job_id.clone(),
            hostname: hostname_for(&job.job_id),
            env,
            limits: self.limits.clone(),
            job_dir: jobdir.to_path_buf(),
            ro_binds: self.ro_binds.clone(),
        };
        // Fails only for non-UTF-8 paths (temp root, binds).
        let config = serde_json::to_vec(&config)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
            .map_err(create("encoding the job config"))?;
        let config_fd = memfd_with(&config).map_err(create("writing the job config"))?;
        let (status_r, status_w) = pipe().map_err(create("creating the status pipe"))?;
        let (lifeline_r, lifeline_w) = pipe().map_err(create("creating the lifeline pipe"))?;

        let mut cmd = std::process::Command::new(&self.exe);
        cmd.arg(INIT_SUBCOMMAND)
            .arg(format!("status-fd={}", status_w.as_raw_fd()))
            .arg(format!("config-fd={}", config_fd.as_raw_fd()))
            .arg(format!("lifeline-fd={}", lifeline_r.as_raw_fd()))
            .arg("--")
            .args(&job.command)
            .env_clear()
            .current_dir("/");

        let (uid, gid) = match self.host_user {
            Some((uid, gid)) => {
                // std drops supplementary groups and sets gid, then uid, before our hook runs.
                cmd.uid(uid).gid(gid);
                for dir in [
                    jobdir.to_path_buf(),
                    jobdir.join("tmp"),
                    jobdir.join("root"),
                ] {
                    std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                        .map_err(create("handing the job dir to the job's host user"))?;
                }
                (uid, gid)
            }
            None => (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
        };
        let hook = PreExec {
            uid_map: format!("0 {uid} 1\n").into_bytes(),
            gid_map: format!("0 {gid} 1\n").into_bytes(),
            status_fd: status_w.as_raw_fd(),
            inherit: [
                status_w.as_raw_fd(),
                config_fd.as_raw_fd(),
                lifeline_r.as_raw_fd(),
            ],
        };
        // SAFETY: the hook only makes async-signal-safe system calls on data prepared above.
        unsafe { cmd.pre_exec(move || hook.run()) };
        Ok(Prepared {
            cmd,
            status_r,
            child_fds: [status_w, config_fd, lifeline_r],
            lifeline_w,
        })
    }
}

/// The hidden subcommand of `portcullis` that runs `init_main`.
const INIT_SUBCOMMAND: &str = "__sandbox-init";

pub(super) struct Prepared {
    pub(super) cmd: std::process::Command,
    pub(super) status_r: OwnedFd,
    /// The child's ends; the runner must close its copies right after spawning so that EOF
    /// on the status pipe means "exec'd or failed".
    pub(super) child_fds: [OwnedFd; 3],
    /// Closing this (explicitly on timeout, or by the runner dying) makes init kill the job.
    pub(super) lifeline_w: OwnedFd,
}

/// The part of `prepare`d state the forked child uses before exec.
struct PreExec {
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    status_fd: RawFd,
    inherit: [RawFd; 3],
}

impl PreExec {
    /// Runs in the forked child. Async-signal-safe only: raw syscalls, no allocation.
    fn run(&self) -> io::Result<()> {
        let flags = libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS;
        // SAFETY: plain syscall, no memory involved.
        if unsafe { libc::unshare(flags) } != 0 {
            return Err(self.fail(b"unshare(user, mount, pid, net, ipc, uts namespaces)"));
        }
        // After a setuid (`with_host_user`) the kernel marks us non-dumpable, which makes our
        // /proc/self files root-owned and unwritable; we exec right after anyway.
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) } != 0 {
            return Err(self.fail(b"PR_SET_DUMPABLE"));
        }
        // setgroups must be denied before an unprivileged process may write gid_map.
        match write_proc(c"/proc/self/setgroups", b"deny") {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
                return Err(self.fail(b"writing /proc/self/setgroups"))
            }
            _ => {}
        }
        if write_proc(c"/proc/self/uid_map", &self.uid_map).is_err() {
            return Err(self.fail(b"writing /proc/self/uid_map"));
        }
        if write_proc(c"/proc/self/gid_map", &self.gid_map).is_err() {
            return Err(self.fail(b"writing /proc/self/gid_map"));
        }
        for fd in self.inherit {
            // SAFETY: fcntl on an fd we own; clears FD_CLOEXEC so init inherits it.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
                return Err(self.fail(b"passing fds to init"));
            }
        }
        Ok(())
    }

    /// Reports which step failed on the status pipe (std reports the errno itself).
    fn fail(&self, what: &[u8]) -> io::Error {
        let err = io::Error::last_os_error();
        for part in [STATUS_SETUP.as_bytes(), b"\tbefore init: ", what, b"\n"] {
            // SAFETY: write(2) of a valid buffer; failures are ignored (best effort).
            unsafe { libc::write(self.status_fd, part.as_ptr().cast(), part.len()) };
        }
        err
    }
}

/// open/write/close, async-signal-safe.
fn write_proc(path: &CStr, data: &[u8]) -> io::Result<()> {
    // SAFETY: path is NUL-terminated; the fd is closed on every path.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        let err = io::Error::last_os_error();
        libc::close(fd);
        if n < 0 {
            return Err(err);
        }
        if n as usize != data.len() {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
    }
    Ok(())
}

/// A CLOEXEC pipe whose ends are both >= 3, so they can never collide with the child's stdio.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    Ok((above_stdio(r)?, above_stdio(w)?))
}

fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) returns a new fd that we then own.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// An anonymous in-memory file holding `data`, offset rewound to 0.
fn memfd_with(data: &[u8]) -> io::Result<OwnedFd> {
    // SAFETY: name is NUL-terminated; the returned fd is owned by the File.
    let fd = unsafe { libc::memfd_create(c"portcullis-job".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(data)?;
    file.rewind()?;
    above_stdio(file.into())
}

pub(super) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; a non-negative result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
