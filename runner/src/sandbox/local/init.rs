//! Sandbox side: `portcullis __sandbox-init status-fd=N config-fd=N lifeline-fd=N
//! progress-fd=N -- argv...`.
//!
//! Started by the runner already inside fresh user, mount, net, ipc and uts namespaces, with
//! the pid namespace pending for its children (see `local.rs`). This process is
//! single-threaded, so unlike the runner's `pre_exec` hook it may allocate and fork freely.
//!
//! It forks PID 1 of the new pid namespace, which sets everything up and execs the command,
//! then supervises it: it exits with PID 1's status (re-raising the signal that killed it,
//! so the runner sees the same thing), and kills it when the runner's lifeline closes.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;

use nix::errno::Errno;
use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::protocol::{cstrings, InitConfig, EXIT_SETUP, STATUS_EXEC, STATUS_SETUP};
use super::rootfs;
use super::spawn::pidfd_open;
use crate::sandbox::progress::PROGRESS_FD;

/// Entry point of the hidden `__sandbox-init` subcommand. Not for direct use: it expects the
/// fds and namespaces the runner sets up.
pub fn init_main(args: Vec<String>) -> ExitCode {
    let args = match Args::parse(&args).and_then(Args::progress_on_its_fd) {
        Ok(a) => a,
        Err(m) => {
            eprintln!("portcullis-sandbox: {m}");
            return ExitCode::from(EXIT_SETUP as u8);
        }
    };
    close_inherited_fds(&[
        args.status_fd,
        args.config_fd,
        args.lifeline_fd,
        PROGRESS_FD,
    ]);
    let status = Status(args.status_fd);
    // Exec'd by descriptor, the kernel named us after the fd number; `ps` shows this instead.
    let _ = nix::sys::prctl::set_name(c"portcullis");
    // The job must not inherit any of these (it inherits only PROGRESS_FD).
    for fd in [args.status_fd, args.config_fd, args.lifeline_fd] {
        // SAFETY: fcntl on an fd number; failure is harmless here (checked by exec later).
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let config = {
        // SAFETY: the runner passed us this fd for exactly this purpose; we own it now.
        let mut f = unsafe { File::from_raw_fd(args.config_fd) };
        let mut buf = Vec::new();
        if let Err(e) = f.read_to_end(&mut buf) {
            status.fail(&format!("reading the job config: {e}"));
        }
        match serde_json::from_slice::<InitConfig>(&buf) {
            Ok(c) => c,
            Err(e) => status.fail(&format!("parsing the job config: {e}")),
        }
    };
    // Lets PID 1 detect that we died before its PR_SET_PDEATHSIG took effect.
    let me = pidfd_open(std::process::id() as i32).ok();

    // SAFETY: this process is single-threaded (no runtime has been started).
    let child = match unsafe { fork() } {
        Ok(ForkResult::Child) => pid1(&config, &args.argv, &status, me),
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => status.fail(&format!("fork: {e}")),
    };
    drop(me);
    // Our copy of the status pipe must close so the runner sees EOF once PID 1 has exec'd,
    // and our copy of the progress pipe so that it sees EOF once the job is gone.
    // SAFETY: closing our own fds; PID 1 has its own copies.
    unsafe {
        libc::close(args.status_fd);
        libc::close(PROGRESS_FD);
    }
    supervise(child, args.lifeline_fd)
}

/// Closes every descriptor above stdio but `keep`: whatever the runner's own parent left
/// open without close-on-exec (a make jobserver pipe, say) must not reach the job.
fn close_inherited_fds(keep: &[RawFd]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .filter(|fd| *fd > 2 && !keep.contains(fd))
        .collect();
    for fd in fds {
        // SAFETY: closing a descriptor nothing in this process uses (the directory's own,
        // listed too, is closed already: EBADF, ignored).
        unsafe { libc::close(fd) };
    }
}

struct Args {
    status_fd: RawFd,
    config_fd: RawFd,
    lifeline_fd: RawFd,
    progress_fd: RawFd,
    argv: Vec<String>,
}

impl Args {
    fn parse(args: &[String]) -> Result<Args, String> {
        let usage =
            "usage: __sandbox-init status-fd=N config-fd=N lifeline-fd=N progress-fd=N -- argv...";
        let fd = |i: usize, key: &str| -> Result<RawFd, String> {
            args.get(i)
                .and_then(|a| a.strip_prefix(key))
                .and_then(|v| v.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .filter(|&fd: &RawFd| fd > 2)
                .ok_or_else(|| usage.to_string())
        };
        let (status_fd, config_fd, lifeline_fd, progress_fd) = (
            fd(0, "status-fd")?,
            fd(1, "config-fd")?,
            fd(2, "lifeline-fd")?,
            fd(3, "progress-fd")?,
        );
        // Tolerate a parser in front of us having already consumed the "--".
        let rest = &args[4..];
        let argv = match rest.first() {
            Some(s) if s == "--" => rest[1..].to_vec(),
            _ => rest.to_vec(),
        };
        if argv.is_empty() {
            return Err(usage.to_string());
        }
        Ok(Args {
            status_fd,
            config_fd,
            lifeline_fd,
            progress_fd,
            argv,
        })
    }

    /// Moves the progress pipe to [`PROGRESS_FD`], the number the job is told, moving
    /// whichever of our other fds holds that number out of the way first. The progress fd
    /// ends up inheritable; the others keep close-on-exec.
    fn progress_on_its_fd(mut self) -> Result<Args, String> {
        if self.progress_fd == PROGRESS_FD {
            return Ok(self);
        }
        for fd in [
            &mut self.status_fd,
            &mut self.config_fd,
            &mut self.lifeline_fd,
        ] {
            if *fd == PROGRESS_FD {
                // SAFETY: fcntl/close on fds the runner passed to us.
                let moved = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, PROGRESS_FD + 1) };
                if moved < 0 {
                    return Err(format!("moving fd {fd}: {}", Errno::last()));
                }
                // SAFETY: as above; `moved` replaces it.
                unsafe { libc::close(*fd) };
                *fd = moved;
            }
        }
        // SAFETY: dup2 onto a number none of our fds holds any more; clears FD_CLOEXEC.
        if unsafe { libc::dup2(self.progress_fd, PROGRESS_FD) } < 0 {
            return Err(format!("moving the progress pipe: {}", Errno::last()));
        }
        // SAFETY: closing our now duplicate copy.
        unsafe { libc::close(self.progress_fd) };
        self.progress_fd = PROGRESS_FD;
        Ok(self)
    }
}

/// The status pipe to the runner (see `local.rs` for the protocol).
struct Status(RawFd);

impl Status {
    fn send(&self, line: &str) {
        // SAFETY: borrowing the fd without taking ownership.
        let mut f = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(self.0) });
        let _ = f.write_all(line.as_bytes());
    }

    /// Setup failed: tell the runner and whoever reads stderr, then exit 125.
    fn fail(&self, message: &str) -> ! {
        let message = message.replace('\n', " ");
        self.send(&format!("{STATUS_SETUP}\t{message}\n"));
        let _ = writeln!(std::io::stderr(), "portcullis-sandbox: {message}");
        // _exit: in a forked child, atexit handlers and buffers belong to the parent.
        // SAFETY: terminates the process.
        unsafe { libc::_exit(EXIT_SETUP) }
    }
}

/// Waits for PID 1, killing it if the lifeline closes; then mirrors its exit.
fn supervise(child: Pid, lifeline: RawFd) -> ExitCode {
    // Without pidfds (Linux < 5.3) we just wait; the runner then falls back to SIGKILLing us
    // on timeout and PDEATHSIG takes PID 1 down.
    if let Ok(pidfd) = pidfd_open(child.as_raw()) {
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: lifeline,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfds.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if n < 0 && Errno::last() == Errno::EINTR {
                continue;
            }
            if n < 0 || fds[1].revents != 0 {
                break;
            }
            if fds[0].revents != 0 {
                // Timeout or the runner died. PID 1 is the namespace's init: killing it kills
                // every process in the namespace.
                let _ = signal::kill(child, Signal::SIGKILL);
                break;
            }
        }
    }
    // Returns only after PID 1 and, because it was the namespace's init, every other process
    // of the namespace have exited: the kernel reaps them all before PID 1's exit completes.
    let status = loop {
        match waitpid(child, None) {
            Err(Errno::EINTR) => continue,
            other => break other,
        }
    };
    match status {
        Ok(WaitStatus::Exited(_, code)) => ExitCode::from(code as u8),
        Ok(WaitStatus::Signaled(_, sig, _)) => reraise(sig),
        other => {
            eprintln!("portcullis-sandbox: waiting for the job: {other:?}");
            ExitCode::from(EXIT_SETUP as u8)
        }
    }
}

/// Dies of the same signal as the job so the runner can report it as such.
fn reraise(sig: Signal) -> ExitCode {
    // No core dump of init for the job's SIGSEGV & co.
    let _ = nix::sys::prctl::set_dumpable(false);
    // SAFETY: restoring the default disposition; no handler involved.
    let _ = unsafe { signal::signal(sig, SigHandler::SigDfl) };
    let mut set = SigSet::empty();
    set.add(sig);
    let _ = signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
    let _ = signal::raise(sig);
    // Signals whose default action is not to terminate.
    ExitCode::from(128u8.wrapping_add(sig as u8))
}

/// PID 1 of the sandbox: set up, drop privileges, exec. Never returns.
fn pid1(cfg: &InitConfig, argv: &[String], status: &Status, init: Option<OwnedFd>) -> ! {
    // If init dies, so do we, and with us (as the namespace's init) the whole job.
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        status.fail(&format!("PR_SET_PDEATHSIG: {e}"));
    }
    if let Some(fd) = init {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; timeout 0.
        if unsafe { libc::poll(&mut p, 1, 0) } != 0 {
            // init exited before PDEATHSIG was armed.
            // SAFETY: terminates the process.
            unsafe { libc::_exit(EXIT_SETUP) }
        }
    }
    let step = |r: Result<(), String>| {
        if let Err(m) = r {
            status.fail(&m)
        }
    };
    step(rootfs::build(cfg));
    step(nix::unistd::sethostname(&cfg.hostname).map_err(|e| format!("sethostname: {e}")));
    step(loopback_up());
    step(set_limits(&cfg.limits));
    step(drop_capabilities());
    reset_signals();
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    step(nix::unistd::chdir("/tmp").map_err(|e| format!("chdir /tmp: {e}")));
    exec(argv, &cfg.env, status)
}

/// execvp with the job's PATH (not ours), reporting failure on the status pipe.
fn exec(argv: &[String], env: &[(String, String)], status: &Status) -> ! {
    let envp = cstrings(env.iter().map(|(k, v)| format!("{k}={v}")));
    let args = cstrings(argv);
    let prog = &argv[0];
    let candidates: Vec<String> = if prog.contains('/') {
        vec![prog.clone()]
    } else {
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or("", |(_, v)| v.as_str());
        path.split(':')
            .map(|d| if d.is_empty() { "." } else { d })
            .map(|d| format!("{}/{prog}", d.trim_end_matches('/')))
            .collect()
    };
    let mut err = Errno::ENOENT;
    let mut denied = false;
    for c in &candidates {
        let Ok(path) = CString::new(c.as_str()) else {
            continue;
        };
        // Only returns on failure.
        let Err(e) = nix::unistd::execve(&path, &args, &envp);
        match e {
            Errno::ENOENT | Errno::ENOTDIR => {}
            Errno::EACCES => denied = true,
            other => {
                err = other;
                break;
            }
        }
    }
    if denied && err == Errno::ENOENT {
        err = Errno::EACCES;
    }
    let message = match err {
        Errno::ENOENT => "command not found".to_string(),
        e => e.desc().to_string(),
    };
    status.send(&format!("{STATUS_EXEC}\t{}\t{message}\n", err as i32));
    let _ = writeln!(std::io::stderr(), "portcullis-sandbox: {prog}: {message}");
    // SAFETY: terminates the process.
    unsafe { libc::_exit(if err == Errno::ENOENT { 127 } else { 126 }) }
}

/// The new network namespace has only `lo`, and it starts down.
fn loopback_up() -> Result<(), String> {
    let err = |what: &str| format!("bringing up lo: {what}: {}", Errno::last());
    // SAFETY: socket(2); the fd is owned below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(err("socket"));
    }
    // SAFETY: fresh fd.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo") {
        *d = *s as libc::c_char;
    }
    // SAFETY: ioctls with a valid ifreq; ifru_flags is the member these requests use.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(err("SIOCGIFFLAGS"));
        }
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(err("SIOCSIFFLAGS"));
        }
    }
    Ok(())
}

fn set_limits(l: &super::Limits) -> Result<(), String> {
    use nix::sys::resource::{setrlimit, Resource};
    let limits = [
        (Resource::RLIMIT_CORE, Some(0)),
        (Resource::RLIMIT_AS, l.address_space),
        (Resource::RLIMIT_FSIZE, l.file_size),
        (Resource::RLIMIT_NOFILE, l.open_files),
        (Resource::RLIMIT_NPROC, l.processes),
    ];
    for (res, value) in limits {
        if let Some(v) = value {
            setrlimit(res, v, v).map_err(|e| format!("setrlimit {res:?}={v}: {e}"))?;
        }
    }
    Ok(())
}

/// The job runs as uid 0 of its user namespace but with no capabilities at all, so it can
/// neither undo the mounts above (remount /usr read-write, unmount the /proc masks) nor
/// regain capabilities through exec (empty bounding and inheritable sets, no_new_privs).
fn drop_capabilities() -> Result<(), String> {
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<libc::c_ulong>().ok())
        .unwrap_or(63);
    for cap in 0..=last {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0
            && Errno::last() != Errno::EINVAL
        {
            return Err(format!(
                "dropping capability {cap} from the bounding set: {}",
                Errno::last()
            ));
        }
    }
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset with a v3 header and the two data words it requires.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(format!("capset: {}", Errno::last()));
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("PR_SET_NO_NEW_PRIVS: {e}"))
}

/// The Rust runtime ignores SIGPIPE, the runner may have inherited other ignored signals,
/// and ignored signals survive exec: give the job default dispositions and an empty mask so
/// e.g. `producer | head` behaves normally inside it.
fn reset_signals() {
    // The kernel's struct sigaction (x86_64, aarch64 and other asm-generic layouts). The raw
    // syscall because glibc refuses to touch the signals it reserves (32, 33).
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: installs SIG_DFL; the old action is not requested.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                )
            };
        }
    }
    let _ = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}
