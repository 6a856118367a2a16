//! Starting init: the command line, the fds it inherits, and the `pre_exec` hook that
//! creates the namespaces between fork and exec.
//!
//! # Why init is executed from a descriptor
//!
//! With `with_host_user` (a root runner), std switches the child to the job's host uid before
//! the hook runs, and from then on every path the child walks is checked against that uid.
//! The runner binary and the job dir often sit below a directory that uid may not enter (a
//! checkout made with `mktemp -d`, root's 0700 home). So the runner, still itself, opens both
//! before forking (`O_PATH`, close-on-exec), and the child only ever uses the descriptors:
//! it `fchdir`s into the job dir (init and PID 1 then name it by relative paths, see
//! `rootfs.rs`) and `execveat(exe, "", AT_EMPTY_PATH)`s the binary. Neither walks a parent
//! directory; the kernel still checks the job uid's own right to execute the binary (0755
//! is enough; a binary it may not execute fails, naming that step) and to enter the job dir
//! (created for it, 0700).
//!
//! Nothing is loosened for the job: no directory mode changes and no copy of the binary is
//! placed anywhere, so the runner's checkout, state dir and keys stay unreachable by the job
//! uid on the host. Both descriptors are close-on-exec, so init never holds them, and the job
//! cannot see init at all: init stays outside the job's pid namespace (so no `/proc/<pid>/exe`
//! of it inside), and PID 1 pivots away from the host file system before it execs the job's
//! command. The alternative, exec'ing init as root and switching uid only inside it, would
//! run init with host root's credentials and need a second process to write the uid map
//! (a process cannot map a uid other than its own into a namespace it has entered).

use std::ffi::{CStr, CString, OsString};
use std::fs::File;
use std::io::{self, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use super::protocol::{hostname_for, InitConfig, STATUS_SETUP};
use super::LocalNamespaces;
use crate::sandbox::progress::{PROGRESS_FD, PROGRESS_FD_ENV};
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
        // Always the descriptor init puts the progress pipe on, whatever the spec says.
        env.retain(|(k, _)| k != PROGRESS_FD_ENV);
        env.push((PROGRESS_FD_ENV.to_string(), PROGRESS_FD.to_string()));
        let config = InitConfig {
            job_id: job.job_id.clone(),
            hostname: hostname_for(&job.job_id),
            env,
            limits: self.limits.clone(),
            ro_binds: self.ro_binds.clone(),
        };
        // Fails only for non-UTF-8 paths (temp root, binds).
        let config = serde_json::to_vec(&config)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
            .map_err(create("encoding the job config"))?;
        let config_fd = memfd_with(&config).map_err(create("writing the job config"))?;
        let (status_r, status_w) = pipe().map_err(create("creating the status pipe"))?;
        let (lifeline_r, lifeline_w) = pipe().map_err(create("creating the lifeline pipe"))?;
        let (progress_r, progress_w) = pipe().map_err(create("creating the progress pipe"))?;

        // Opened as the runner, before any uid change: see the module docs.
        let exe = open_path(&self.exe, 0).map_err(create(&format!(
            "opening the runner binary {}",
            self.exe.display()
        )))?;
        let dir = open_path(jobdir, libc::O_DIRECTORY).map_err(create("opening the job dir"))?;
        let mut argv = vec![self.exe.as_os_str().to_owned()];
        argv.extend(
            [
                INIT_SUBCOMMAND.to_string(),
                format!("status-fd={}", status_w.as_raw_fd()),
                format!("config-fd={}", config_fd.as_raw_fd()),
                format!("lifeline-fd={}", lifeline_r.as_raw_fd()),
                format!("progress-fd={}", progress_w.as_raw_fd()),
                "--".to_string(),
            ]
            .into_iter()
            .chain(job.command.iter().cloned())
            .map(Into::into),
        );
        // std's own exec (of the same binary, by path) is never reached: the hook execs.
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.args(argv.iter().skip(1)).env_clear();

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
        let exec_step = format!(
            "executing the runner binary {} as the sandbox init, as host uid {uid}",
            self.exe.display()
        );
        let hook = PreExec {
            uid_map: format!("0 {uid} 1\n").into_bytes(),
            gid_map: format!("0 {gid} 1\n").into_bytes(),
            status_fd: status_w.as_raw_fd(),
            inherit: [
                status_w.as_raw_fd(),
                config_fd.as_raw_fd(),
                lifeline_r.as_raw_fd(),
                progress_w.as_raw_fd(),
            ],
            exec: Exec::new(exe, argv, exec_step).map_err(create("encoding init's arguments"))?,
            dir,
        };
        // SAFETY: the hook only makes async-signal-safe system calls on data prepared above.
        unsafe { cmd.pre_exec(move || hook.run()) };
        Ok(Prepared {
            cmd,
            status_r,
            child_fds: [status_w, config_fd, lifeline_r, progress_w],
            lifeline_w,
            progress_r,
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
    pub(super) child_fds: [OwnedFd; 4],
    /// Closing this (explicitly on timeout, or by the runner dying) makes init kill the job.
    pub(super) lifeline_w: OwnedFd,
    /// The job's progress lines; EOF once every process of the job is gone.
    pub(super) progress_r: OwnedFd,
}

/// The part of `prepare`d state the forked child uses before exec.
struct PreExec {
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    status_fd: RawFd,
    inherit: [RawFd; 4],
    exec: Exec,
    /// The job dir, opened by the runner.
    dir: OwnedFd,
}

impl PreExec {
    /// Runs in the forked child, already as the job's host uid. Async-signal-safe only: raw
    /// syscalls, no allocation. Returns only on failure; on success init is running.
    fn run(&self) -> io::Result<()> {
        // Before unshare: the new mount namespace then gets this cwd translated into it
        // (descriptors, unlike the cwd, would keep pointing into the runner's namespace).
        // SAFETY: plain syscall on an fd we own.
        if unsafe { libc::fchdir(self.dir.as_raw_fd()) } != 0 {
            return Err(self.fail(b"entering the job dir"));
        }
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
        // SAFETY: every pointer is into `self.exec`, alive and NUL-terminated as required.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                self.exec.fd.as_raw_fd(),
                c"".as_ptr(),
                self.exec.argv_ptrs.as_ptr(),
                self.exec.envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        Err(self.fail(self.exec.step.as_bytes()))
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

/// Everything `execveat` needs, allocated before the fork.
struct Exec {
    fd: OwnedFd,
    /// Owns the strings `argv_ptrs` points into (moving the Vec does not move them).
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp: [*const libc::c_char; 1],
    /// Names the step in the status message if the exec fails.
    step: String,
}

// SAFETY: the raw pointers point into `_argv`, owned by the same value and never mutated.
unsafe impl Send for Exec {}
unsafe impl Sync for Exec {}

impl Exec {
    fn new(fd: OwnedFd, argv: Vec<OsString>, step: String) -> io::Result<Exec> {
        let argv = argv
            .into_iter()
            .map(|a| CString::new(a.into_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        Ok(Exec {
            fd,
            _argv: argv,
            argv_ptrs,
            envp: [std::ptr::null()],
            step,
        })
    }
}

/// An `O_PATH` close-on-exec descriptor of `path` (above stdio).
fn open_path(path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC | flags)
        .open(path)?;
    above_stdio(file.into())
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
