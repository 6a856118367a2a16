//! The audit trail's disk fails under a running stack: it fills up, or the kernel turns it
//! read-only (as ext4 does on an error with `errors=remount-ro`). The runner must refuse to run
//! a call it cannot record, and a job it starts must be able to record its end. These tests
//! mount file systems, so they run as root (as the whole suite does: namespaces, netns).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use portcullis_e2e::mcp::{open_session, post, tools_call, Reply};
use portcullis_e2e::Stack;
use serde_json::{json, Value};

use super::audit::decision_id;

/// A file system mounted on a path for one test, unmounted (lazily) on drop.
struct Mounted {
    path: PathBuf,
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what} (this test needs root and the tool installed): {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Mounted {
    fn tmpfs(path: &Path, size: &str) -> Mounted {
        std::fs::create_dir_all(path).unwrap();
        run(Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"]).arg(path), "mounting a tmpfs");
        Mounted { path: path.to_owned() }
    }

    /// A small ext4 file system in `image` (a loop device) that the kernel remounts read-only
    /// on its first error.
    fn ext4(path: &Path, image: &Path) -> Mounted {
        std::fs::create_dir_all(path).unwrap();
        std::fs::File::create(image).unwrap().set_len(16 << 20).unwrap();
        run(Command::new("mkfs.ext4").arg("-q").arg(image), "mkfs.ext4 (e2fsprogs)");
        run(Command::new("mount").args(["-o", "loop,errors=remount-ro"]).arg(image).arg(path), "mounting an ext4 image on a loop device");
        Mounted { path: path.to_owned() }
    }

    /// Makes ext4 record an error, which turns the file system read-only under every file
    /// open on it: later writes fail with EROFS.
    fn fail(&self) {
        let device = run(Command::new("findmnt").args(["-n", "-o", "SOURCE"]).arg(&self.path), "findmnt");
        let name = Path::new(&device).file_name().unwrap().to_string_lossy().into_owned();
        std::fs::write(format!("/sys/fs/ext4/{name}/trigger_fs_error"), "1").expect("triggering an ext4 error");
        let options = run(Command::new("findmnt").args(["-n", "-o", "OPTIONS"]).arg(&self.path), "findmnt");
        assert!(options.split(',').any(|o| o == "ro" || o == "emergency_ro"), "the file system did not turn read-only: {options}");
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        // The stack's state dir was removed around the mount point: remove it and its parent.
        let _ = std::fs::remove_dir(&self.path);
        if let Some(parent) = self.path.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

fn records(s: &Stack) -> Vec<Value> {
    let text = std::fs::read_to_string(s.state.path().join("audit/audit.jsonl")).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).expect("an audit line")).collect()
}

/// Events by decision id.
fn events_by_decision(s: &Stack) -> BTreeMap<String, Vec<String>> {
    let mut by = BTreeMap::<String, Vec<String>>::new();
    for r in records(s) {
        if let (Some(id), Some(event)) = (r["decision_id"].as_str(), r["event"].as_str()) {
            by.entry(id.to_owned()).or_default().push(event.to_owned());
        }
    }
    by
}

/// Every job that started has its end and its sandbox's end recorded.
fn assert_every_started_job_ended(s: &Stack) {
    for (id, events) in events_by_decision(s) {
        if events.iter().any(|e| e == "job.started") {
            let ended = events.iter().any(|e| e == "job.finished" || e == "job.aborted");
            assert!(ended && events.iter().any(|e| e == "sandbox.destroyed"), "decision {id}: a job started without its end recorded: {events:?}");
        }
    }
}

fn assert_refused_unrun(s: &Stack, r: &Reply, id: i64) {
    assert!(r.message.get("result").is_none(), "a result came back: {} {}", r.status, r.text);
    assert_eq!(r.message["id"], json!(id), "the error does not answer the request: {}", r.text);
    assert!(r.error_message().contains("audit trail cannot be written"), "{} {}", r.status, r.text);
    let events = events_by_decision(s).remove(&decision_id(r)).unwrap_or_default();
    assert!(!events.iter().any(|e| e == "job.started"), "the refused call's job started: {events:?}");
}

fn ok(r: &Reply) -> bool {
    r.status == 200 && r.message.get("result").is_some() && r.message.pointer("/result/isError") != Some(&json!(true))
}

#[tokio::test]
async fn a_full_audit_disk_refuses_calls_before_their_jobs_start_and_recovers_when_freed() {
    let state = tempfile::Builder::new().prefix("portcullis-e2e-").tempdir().unwrap();
    let audit_dir = state.path().join("audit");
    let _mounted = Mounted::tmpfs(&audit_dir, "4m");
    let s = Stack::start_in(state, &[]);
    let http = s.http_client(Some("reader"));
    let sid = open_session(&http, &s.url()).await.unwrap();
    let r = post(&http, &s.url(), Some(&sid), &[], &tools_call(1, "word_count", json!({"text": "room"}))).await.unwrap();
    assert!(ok(&r), "{}", r.text);

    let filler_path = audit_dir.join("filler");
    let mut filler = std::fs::File::create(&filler_path).unwrap();
    while filler.write_all(&[0u8; 4096]).is_ok() {}
    drop(filler);
    // What the log had allocated ahead before the disk filled is used up by the calls that
    // follow; then the first call that would eat into the room kept for ending jobs is refused.
    let mut ran_after_full = 0;
    let refused = loop {
        let id = 100 + ran_after_full;
        let r = post(&http, &s.url(), Some(&sid), &[], &tools_call(id, "word_count", json!({"text": format!("call {id}")}))).await.unwrap();
        if !ok(&r) {
            break (r, id);
        }
        ran_after_full += 1;
        assert!(ran_after_full < 500, "500 calls ran with the audit disk full");
    };
    eprintln!("audit disk full: {ran_after_full} calls ran on the room allocated before, then HTTP {} {}", refused.0.status, refused.0.message);
    assert_refused_unrun(&s, &refused.0, refused.1);
    assert_every_started_job_ended(&s);

    std::fs::remove_file(&filler_path).unwrap();
    let r = post(&http, &s.url(), Some(&sid), &[], &tools_call(2, "word_count", json!({"text": "room again"}))).await.unwrap();
    assert!(ok(&r), "with room again: {}", r.text);
    assert_every_started_job_ended(&s);
}

#[tokio::test]
async fn an_audit_disk_turned_read_only_refuses_calls_before_their_jobs_start() {
    let state = tempfile::Builder::new().prefix("portcullis-e2e-").tempdir().unwrap();
    let image_dir = tempfile::tempdir().unwrap();
    let audit_dir = state.path().join("audit");
    let mounted = Mounted::ext4(&audit_dir, &image_dir.path().join("audit.ext4"));
    let s = Stack::start_in(state, &[]);
    let http = s.http_client(Some("reader"));
    let sid = open_session(&http, &s.url()).await.unwrap();
    let r = post(&http, &s.url(), Some(&sid), &[], &tools_call(1, "word_count", json!({"text": "writable"}))).await.unwrap();
    assert!(ok(&r), "{}", r.text);

    mounted.fail();
    let r = post(&http, &s.url(), Some(&sid), &[], &tools_call(2, "word_count", json!({"text": "read-only"}))).await.unwrap();
    eprintln!("audit disk read-only: HTTP {} {}", r.status, r.message);
    assert_refused_unrun(&s, &r, 2);
    assert_every_started_job_ended(&s);
    drop(s);
    drop(mounted);
}
