//! The sandbox run from a private checkout: the binary, and the job dirs, inside a 0700
//! directory (what `mktemp -d` creates; root's home on Debian is 0700 too). Whoever runs the
//! runner, nothing the job's host uid does may need to walk a host path above its job dir.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use portcullis_runner::sandbox::Backend;
use portcullis_runner::devstack::up::{local_backend, JOB_HOST_ID};

use super::{chain, euid, sh, stdout};

/// A fresh directory of this test, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str, mode: u32) -> Dir {
        let path = std::env::temp_dir().join(format!("pc-private-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap();
        set_mode(&path, mode);
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(path: &Path, mode: u32) -> PathBuf {
    std::fs::create_dir(path).unwrap();
    set_mode(path, mode);
    path.to_path_buf()
}

/// A copy of the built `portcullis` binary at `path`, with `mode`.
fn copy_runner(path: &Path, mode: u32) -> PathBuf {
    std::fs::copy(env!("CARGO_BIN_EXE_portcullis"), path).unwrap();
    set_mode(path, mode);
    path.to_path_buf()
}

/// The job's uid map, then anything of the runner it can see: the private dir, or a
/// descriptor (of the shell or of a child) leading to the runner binary or that dir.
fn probe_script(private: &Path) -> String {
    let p = private.display();
    format!(
        "id -u; tr -s ' ' < /proc/self/uid_map; \
         test -e '{p}' && echo checkout visible; \
         {{ readlink /proc/$$/fd/* /proc/$$/exe; ls -l /proc/self/fd/; }} | grep -e portcullis -e '{p}'; \
         echo end"
    )
}

/// As the runner configures it (as root: jobs as the dedicated job uid, which cannot enter
/// the 0700 directory), with the binary and the job dirs inside that directory.
#[tokio::test]
async fn runs_from_a_binary_and_temp_root_in_a_0700_dir() {
    let private = Dir::new("checkout", 0o700);
    let bin = mkdir(&private.0.join("target"), 0o755);
    let exe = copy_runner(&bin.join("portcullis"), 0o755);
    let jobs = mkdir(&private.0.join("jobs"), 0o700);
    let backend = local_backend(exe).with_temp_root(&jobs);
    let out = match backend.run(sh(&probe_script(&private.0))).await {
        Ok(out) => out,
        Err(e) => panic!("sandbox from a 0700 dir failed: {}", chain(&e)),
    };
    let host_uid = if euid() == 0 { JOB_HOST_ID } else { euid() };
    // The job sees neither the checkout nor any descriptor of the runner's.
    assert_eq!(stdout(&out), format!("0\n 0 {host_uid} 1\nend\n"));
    assert_eq!(
        std::fs::read_dir(&jobs).unwrap().count(),
        0,
        "job dirs left"
    );
    backend.check().unwrap();
}

const UNPRIVILEGED_ENV: &str = "PORTCULLIS_TEST_UNPRIVILEGED_HOME";
/// nobody on Debian; any uid other than root's does.
const UNPRIVILEGED: u32 = 65534;

/// An unprivileged user running the runner from its own 0700 home. As root, the test
/// becomes that user: a copy of this test binary runs `helper_unprivileged_runner` as uid
/// 65534 from such a home. As a non-root user, the helper runs as that user.
#[test]
fn runs_for_an_unprivileged_user_from_a_0700_home() {
    let base = Dir::new("unprivileged", 0o755);
    let home = mkdir(&base.0.join("home"), 0o700);
    let test_exe = home.join("sandbox-test");
    std::fs::copy(std::env::current_exe().unwrap(), &test_exe).unwrap();
    copy_runner(&home.join("portcullis"), 0o755);
    let mut cmd = Command::new(&test_exe);
    cmd.args([
        "--exact",
        "private_dirs::helper_unprivileged_runner",
        "--ignored",
        "--nocapture",
    ])
    .env(UNPRIVILEGED_ENV, &home)
    .current_dir(&home);
    let want_uid = if euid() == 0 {
        for p in [&home, &test_exe, &home.join("portcullis")] {
            std::os::unix::fs::chown(p, Some(UNPRIVILEGED), Some(UNPRIVILEGED)).unwrap();
        }
        cmd.uid(UNPRIVILEGED).gid(UNPRIVILEGED).env("HOME", &home);
        UNPRIVILEGED
    } else {
        euid()
    };
    let out = cmd.output().expect("starting the helper");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "helper as uid {want_uid} failed: {text}"
    );
    assert!(
        text.contains(&format!("JOB-OUTPUT[0\n 0 {want_uid} 1\nend\n]")),
        "{text}"
    );
}

#[tokio::test]
#[ignore = "helper process of runs_for_an_unprivileged_user_from_a_0700_home"]
async fn helper_unprivileged_runner() {
    let Some(home) = std::env::var_os(UNPRIVILEGED_ENV).map(PathBuf::from) else {
        return;
    };
    assert_ne!(euid(), 0, "the helper must not run as root");
    let jobs = mkdir(&home.join("jobs"), 0o700);
    let backend = local_backend(home.join("portcullis")).with_temp_root(&jobs);
    match backend.run(sh(&probe_script(&home))).await {
        Ok(out) => println!("JOB-OUTPUT[{}]", stdout(&out)),
        Err(e) => panic!("sandbox as an unprivileged user failed: {}", chain(&e)),
    }
}

/// A runner binary the job's uid may not execute (as root: mode 0700, so the dedicated job
/// uid cannot run it; otherwise a binary that does not exist): the error names the step and
/// the errno, for the runner's log.
#[tokio::test]
async fn a_sandbox_that_cannot_start_names_the_cause() {
    let private = Dir::new("cause", 0o700);
    let (exe, errno) = if euid() == 0 {
        (
            copy_runner(&private.0.join("portcullis"), 0o700),
            "os error 13",
        )
    } else {
        (private.0.join("missing"), "os error 2")
    };
    let backend = local_backend(exe).with_temp_root(&private.0);
    let e = match backend.run(sh("true")).await {
        Ok(out) => panic!("expected a failure, got {out:?}"),
        Err(e) => e,
    };
    let log = e.log_text();
    assert!(log.contains(errno), "{log}");
    assert!(log.contains("runner binary"), "the step is missing: {log}");
    // The agent learns the kind of failure, not where the runner lives.
    let agent = e.agent_message();
    assert!(
        agent.starts_with("cannot start the job environment ("),
        "{agent}"
    );
    assert!(!agent.contains('/'), "{agent}");
}
