//! No secret of a running stack is readable by another local user: every file under the state
//! dir that holds a private key (the ticket signing key travels in the filter's ECDS file) is
//! 0600 in 0700 directories, no log holds the signing key, Envoy's admin API (whose
//! /config_dump shows the plugin configuration) is a Unix socket only its owner can open, and
//! Envoy listens on no TCP port but the gateway's. Checked as an unprivileged user for real, so
//! this test must run as root; it fails (never skips) otherwise.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::stack;

/// The unprivileged user the checks run as (nobody).
const OTHER_USER: &str = "65534";
/// Files that may hold the ticket signing key: the key itself, and the filter's ECDS file.
const KEY_HOLDERS: &[&str] = &["ticket-signing-key.pem", portcullis_runner::devstack::up::ECDS_FILE];

#[test]
fn no_secret_is_readable_by_another_local_user() {
    assert!(
        std::fs::metadata("/proc/self").map(|m| m.uid()).ok() == Some(0),
        "this test checks access as another user (setpriv) and must run as root"
    );
    let s = stack();
    let state = s.state.path();
    let key_pem = std::fs::read_to_string(s.certs().join("ticket-signing-key.pem")).unwrap();
    let key_body: String = key_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(key_body.len() > 40, "no signing key body in {key_pem:?}");
    let mut problems = Vec::new();

    for (path, mode, is_dir) in walk(state) {
        let name = match path.strip_prefix(state).unwrap().to_str().unwrap() {
            "" => "the state dir".to_owned(),
            relative => relative.to_owned(),
        };
        if is_dir {
            if mode & 0o077 != 0 {
                problems.push(format!("directory {name} is mode {mode:o}, not 0700"));
            }
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned();
        let holds_key = text.contains(&key_body);
        let private = holds_key || text.contains("PRIVATE KEY");
        if private && mode & 0o077 != 0 {
            problems.push(format!("{name} holds a private key and is mode {mode:o}, not 0600"));
        }
        let file = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if holds_key && !KEY_HOLDERS.contains(&file) {
            problems.push(format!("{name} holds the ticket signing key"));
        }
    }

    let ecds = state.join(portcullis_runner::devstack::up::ECDS_FILE);
    let read = as_other_user(&["cat"], &[ecds.as_os_str().to_str().unwrap()]);
    if read.status.success() {
        problems.push(format!("user {OTHER_USER} read the ECDS file (the signing key)"));
    }

    let envoy = envoy_pid(state);
    let (tcp_ports, unix_paths) = listening_sockets(envoy);
    for port in tcp_ports.iter().filter(|p| **p != s.listen.port()) {
        let url = format!("http://127.0.0.1:{port}/config_dump");
        problems.push(format!("Envoy listens on TCP port {port} besides the gateway's {}", s.listen.port()));
        let dump = as_other_user(&["curl", "-sf", "--max-time", "5"], &[&url]);
        if String::from_utf8_lossy(&dump.stdout).contains(&key_body) {
            problems.push(format!("user {OTHER_USER} read the signing key from {url}"));
        }
    }
    if unix_paths.is_empty() {
        problems.push("Envoy serves its admin API on no Unix socket".to_owned());
    }
    for sock in &unix_paths {
        let args = ["curl", "-sf", "--max-time", "5", "--unix-socket", sock.to_str().unwrap(), "http://admin/config_dump"];
        let mine = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(
            String::from_utf8_lossy(&mine.stdout).contains(&key_body),
            "the owner cannot read config_dump from {} (so the check below proves nothing): {mine:?}",
            sock.display()
        );
        let other = as_other_user(&args, &[]);
        if other.status.success() || !other.stdout.is_empty() {
            problems.push(format!("user {OTHER_USER} read Envoy's admin API on {}", sock.display()));
        }
    }
    assert!(problems.is_empty(), "secrets readable by others:\n  {}", problems.join("\n  "));
}

/// Every file and directory under `dir` (itself included): path, permission bits, is a dir.
/// Sockets are left out (they are checked by connecting).
fn walk(dir: &Path) -> Vec<(PathBuf, u32, bool)> {
    let meta = std::fs::metadata(dir).unwrap();
    let mut out = vec![(dir.to_owned(), meta.permissions().mode() & 0o777, true)];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            out.extend(walk(&path));
        } else if !meta.file_type().is_socket() {
            out.push((path, meta.permissions().mode() & 0o777, false));
        }
    }
    out
}

fn as_other_user(command: &[&str], more: &[&str]) -> Output {
    Command::new("setpriv")
        .args([&format!("--reuid={OTHER_USER}"), &format!("--regid={OTHER_USER}"), "--clear-groups", "--"])
        .args(command)
        .args(more)
        .current_dir("/")
        .output()
        .expect("running setpriv")
}

/// The Envoy process of the stack whose state dir is `state` (its `-c` names a file there).
fn envoy_pid(state: &Path) -> u32 {
    let config = state.join("envoy.yaml");
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.split(|b| *b == 0).any(|arg| arg == config.as_os_str().as_encoded_bytes())
        })
        .collect();
    assert_eq!(pids.len(), 1, "expected one Envoy running {}", config.display());
    pids[0]
}

/// The TCP ports and Unix socket paths process `pid` listens on.
fn listening_sockets(pid: u32) -> (BTreeSet<u16>, Vec<PathBuf>) {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_str()?;
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut tcp = BTreeSet::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for fields in text.lines().skip(1).map(|l| l.split_whitespace().collect::<Vec<_>>()) {
            // local_address is "ADDR:PORT" in hex, st 0A is LISTEN, inode is field 9.
            if fields.get(3) == Some(&"0A") && fields.get(9).is_some_and(|i| inodes.contains(*i)) {
                let port = fields[1].rsplit(':').next().unwrap();
                tcp.insert(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap();
    let unix = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        // Flags 00010000 is __SO_ACCEPTCON: a listening socket; field 6 is the inode.
        .filter(|f| f.get(3) == Some(&"00010000") && f.get(6).is_some_and(|i| inodes.contains(*i)))
        .filter_map(|f| f.get(7).map(PathBuf::from))
        .collect();
    (tcp, unix)
}
