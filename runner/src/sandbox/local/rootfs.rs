//! The job's file system view, built by PID 1 of the sandbox before it execs the command.
//!
//! A fresh tmpfs becomes the root and is populated with read-only, non-recursive bind mounts
//! of what programs need (`/usr`, `/etc`, the `/bin`, `/lib*` dirs or merged-usr symlinks),
//! a handful of devices, the sandbox's own `/proc` and sysfs, and the job's private `/tmp`.
//! Then `pivot_root` and a lazy unmount of the old root make the rest of the host file
//! system unreachable. Binds are non-recursive so no writable submount can hide under a
//! read-only one, and since the job runs with no capabilities it cannot remount anything.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};

use super::protocol::InitConfig;

/// Host dirs every job gets read-only, at the same path.
const RO_DIRS: [&str; 2] = ["/usr", "/etc"];
/// Top-level dirs that are symlinks into /usr on merged-usr systems and real dirs elsewhere.
const MAYBE_LINKS: [&str; 6] = ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];
/// Device nodes bound from the host (mknod is not allowed in a user namespace).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// Parts of the job's /proc made read-only, and masked, as container runtimes do. They matter
/// when the runner runs as root: the job's uid is then host uid 0, which owns these files, so
/// dropping capabilities alone would still let it write e.g. /proc/sysrq-trigger.
const PROC_RO: [&str; 5] = ["sys", "sysrq-trigger", "irq", "bus", "fs"];
const PROC_MASK_FILES: [&str; 4] = ["kcore", "keys", "timer_list", "sched_debug"];
const PROC_MASK_DIRS: [&str; 3] = ["acpi", "scsi", "asound"];

type Result<T> = std::result::Result<T, String>;

/// The job dir's `root/` and `tmp/`, relative: init starts with its cwd in the job dir (the
/// runner `fchdir`s there by descriptor), so PID 1, running as the job's host uid, never
/// walks the host directories above it, which that uid may not be allowed to enter.
const ROOT: &str = "root";
const TMP: &str = "tmp";

pub(super) fn build(cfg: &InitConfig) -> Result<()> {
    let root = PathBuf::from(ROOT);
    // Nothing we mount may propagate back to the host (it would if / is shared, as under
    // systemd), and nothing from the host may appear later.
    mnt(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    mnt(
        Some(Path::new("tmpfs")),
        &root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755,size=1m"),
    )?;

    for dir in RO_DIRS {
        bind_ro(Path::new(dir), &mkdir_in(&root, dir)?)?;
    }
    for dir in MAYBE_LINKS {
        let host = Path::new(dir);
        match fs::symlink_metadata(host) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(host).map_err(|e| format!("readlink {dir}: {e}"))?;
                let at = inside(&root, dir)?;
                symlink(&target, &at).map_err(|e| format!("symlink {}: {e}", at.display()))?;
            }
            Ok(m) if m.is_dir() => bind_ro(host, &mkdir_in(&root, dir)?)?,
            _ => {}
        }
    }
    for path in &cfg.ro_binds {
        let p = path
            .to_str()
            .ok_or_else(|| format!("non-UTF-8 bind path {path:?}"))?;
        let meta = fs::metadata(path).map_err(|e| format!("bind source {p}: {e}"))?;
        let at = if meta.is_dir() {
            mkdir_in(&root, p)?
        } else {
            touch_in(&root, p)?
        };
        bind_ro(path, &at)?;
    }

    build_dev(&root, cfg.limits.shm_bytes)?;
    build_proc(&root)?;
    // A sysfs of the job's own network namespace (only `lo` in /sys/class/net), read-only.
    // Best effort: some hosts forbid it, and nothing we promise depends on /sys.
    let sys = mkdir_in(&root, "/sys")?;
    let _ = mnt(
        Some(Path::new("sysfs")),
        &sys,
        Some("sysfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    );
    if sys.join("firmware").is_dir() {
        mask_dir(&sys.join("firmware"))?;
    }

    let tmp = mkdir_in(&root, "/tmp")?;
    mnt(Some(Path::new(TMP)), &tmp, None, MsFlags::MS_BIND, None)?;
    remount(&tmp, MsFlags::MS_NOSUID | MsFlags::MS_NODEV)?;

    // pivot_root(".", ".") stacks the old root on top of the new one; unmounting "." then
    // detaches it (see pivot_root(2)). No host path is reachable afterwards.
    nix::unistd::chdir(&root).map_err(|e| format!("chdir {}: {e}", root.display()))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detaching the host root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    // The root tmpfs itself read-only: writable places are /tmp and /dev/shm only.
    mnt(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None,
    )
}

fn build_dev(root: &Path, shm_bytes: u64) -> Result<()> {
    let dev = mkdir_in(root, "/dev")?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if host.exists() {
            let at = touch_in(root, &format!("/dev/{name}"))?;
            mnt(Some(&host), &at, None, MsFlags::MS_BIND, None)?;
        }
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(name)).map_err(|e| format!("symlink /dev/{name}: {e}"))?;
    }
    let shm = mkdir_in(root, "/dev/shm")?;
    mnt(
        Some(Path::new("tmpfs")),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(&format!("mode=1777,size={shm_bytes}")),
    )
}

fn build_proc(root: &Path) -> Result<()> {
    // Mounted by PID 1 of the new pid namespace, so it lists only the sandbox's processes.
    let proc = mkdir_in(root, "/proc")?;
    mnt(
        Some(Path::new("proc")),
        &proc,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    for name in PROC_RO {
        let p = proc.join(name);
        if p.exists() {
            mnt(Some(&p), &p, None, MsFlags::MS_BIND, None)?;
            remount(&p, MsFlags::MS_RDONLY)?;
        }
    }
    for name in PROC_MASK_FILES {
        let p = proc.join(name);
        if p.exists() {
            mnt(
                Some(Path::new("/dev/null")),
                &p,
                None,
                MsFlags::MS_BIND,
                None,
            )?;
        }
    }
    for name in PROC_MASK_DIRS {
        let p = proc.join(name);
        if p.is_dir() {
            mask_dir(&p)?;
        }
    }
    Ok(())
}

/// Hides a directory under an empty read-only tmpfs.
fn mask_dir(p: &Path) -> Result<()> {
    mnt(
        Some(Path::new("tmpfs")),
        p,
        Some("tmpfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=4k,mode=0555"),
    )
}

/// Non-recursive read-only bind mount.
fn bind_ro(src: &Path, dst: &Path) -> Result<()> {
    mnt(Some(src), dst, None, MsFlags::MS_BIND, None)?;
    remount(dst, MsFlags::MS_RDONLY)
}

/// Remounts the bind mount at `p` adding `add`. Flags the host mount already has must be
/// kept: in a user namespace they are locked and dropping one fails with EPERM.
fn remount(p: &Path, add: MsFlags) -> Result<()> {
    let have = statvfs(p)
        .map_err(|e| format!("statvfs {}: {e}", p.display()))?
        .flags();
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | add;
    for (st, ms) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if have.contains(st) {
            flags |= ms;
        }
    }
    mnt(None, p, None, flags, None)
}

fn mnt(
    src: Option<&Path>,
    dst: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(src, dst, fstype, flags, data).map_err(|e| {
        let what = fstype.map_or_else(
            || {
                src.map_or_else(
                    || "remount".to_string(),
                    |s| format!("bind {}", s.display()),
                )
            },
            |t| format!("mount {t}"),
        );
        format!("{what} on {}: {e}", dst.display())
    })
}

/// `root` joined with the absolute in-sandbox path `p`, refusing `..` and relative paths.
fn inside(root: &Path, p: &str) -> Result<PathBuf> {
    let path = Path::new(p);
    let mut out = root.to_path_buf();
    for (i, c) in path.components().enumerate() {
        match c {
            Component::RootDir if i == 0 => {}
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return Err(format!("bind path must be absolute without '..': {p}")),
        }
    }
    if out == root {
        return Err(format!("cannot bind over the sandbox root: {p}"));
    }
    Ok(out)
}

fn mkdir_in(root: &Path, p: &str) -> Result<PathBuf> {
    let at = inside(root, p)?;
    fs::create_dir_all(&at).map_err(|e| format!("mkdir {}: {e}", at.display()))?;
    Ok(at)
}

fn touch_in(root: &Path, p: &str) -> Result<PathBuf> {
    let at = inside(root, p)?;
    if let Some(parent) = at.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
    }
    fs::File::create(&at).map_err(|e| format!("create {}: {e}", at.display()))?;
    Ok(at)
}
