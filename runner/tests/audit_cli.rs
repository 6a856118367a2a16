//! `portcullis audit verify` and `audit show`, the real binary, on a log written by the
//! runner's audit code and on tampered copies of it.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use portcullis_runner::audit::{AuditConfig, AuditLog};
use serde_json::json;

struct Trail {
    dir: tempfile::TempDir,
}

impl Trail {
    /// A state dir with the dev PKI (for the runner's key) and a log of 12 records,
    /// checkpointed every 5.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = portcullis_runner::devstack::certs::ensure(&dir.path().join("certs"), "portcullis.local", &[]).unwrap();
        let mut cfg = AuditConfig::in_state_dir(dir.path(), None, std::fs::read(&pki.runner_signing_key).unwrap());
        cfg.checkpoint_every_records = 5;
        cfg.checkpoint_every = Duration::from_secs(3600);
        let log = AuditLog::open(cfg).unwrap();
        for i in 1..=12 {
            let event = if i % 3 == 0 { "job.finished" } else { "gateway.decision" };
            let fields = json!({"decision_id": format!("call-{}", i % 4), "n": i});
            log.append(event, fields.as_object().unwrap().clone()).unwrap();
        }
        Trail { dir }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("audit/audit.jsonl")
    }

    fn portcullis(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis")).args(args).arg("--state-dir").arg(self.dir.path()).output().unwrap();
        (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }

    /// `audit verify` on a copy of the log edited by `edit` (the state dir's checkpoints and key).
    fn verify_tampered(&self, name: &str, edit: impl FnOnce(&mut Vec<String>)) -> String {
        let mut lines: Vec<String> = std::fs::read_to_string(self.log()).unwrap().lines().map(str::to_owned).collect();
        edit(&mut lines);
        let copy = self.dir.path().join(format!("{name}.jsonl"));
        std::fs::write(&copy, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
        let (ok, text) = self.portcullis(&["audit", "verify", "--log", copy.to_str().unwrap()]);
        assert!(!ok, "{name}: {text}");
        text
    }
}

fn contains(text: &str, needle: &str) {
    assert!(text.contains(needle), "{needle:?} not in: {text}");
}

#[test]
fn verify_passes_on_an_intact_log() {
    let t = Trail::new();
    let (ok, text) = t.portcullis(&["audit", "verify"]);
    assert!(ok, "{text}");
    contains(&text, "intact: 12 records");
    contains(&text, "2 signed checkpoints, the last covering 10 records (2 newer)");
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[test]
fn verify_names_the_first_broken_record_or_checkpoint() {
    let t = Trail::new();
    contains(&t.verify_tampered("edited", |l| l[6] = l[6].replace("\"n\":7", "\"n\":70")), "BROKEN at record 7 (line 7): edited");
    contains(&t.verify_tampered("deleted", |l| drop(l.remove(3))), "BROKEN at record 4 (line 4): expected seq 4, found seq 5");
    contains(&t.verify_tampered("swapped", |l| l.swap(8, 9)), "BROKEN at record 9 (line 9): expected seq 9, found seq 10");
    contains(&t.verify_tampered("cut", |l| l.truncate(8)), "BROKEN at checkpoint 2: it covers 10 records, but the log ends at record 8: the last 2 records were cut off");
}

#[test]
fn verify_names_a_forged_checkpoint() {
    let t = Trail::new();
    let checkpoints = t.dir.path().join("audit/checkpoints.jsonl");
    let text = std::fs::read_to_string(&checkpoints).unwrap().replace("\"count\":10", "\"count\":12");
    let forged = t.dir.path().join("forged.jsonl");
    std::fs::write(&forged, text).unwrap();
    let (ok, text) = t.portcullis(&["audit", "verify", "--checkpoints", forged.to_str().unwrap()]);
    assert!(!ok);
    contains(&text, "BROKEN at checkpoint 2 (line 2 of the checkpoints): bad signature");
}

#[test]
fn show_prints_every_record_of_one_decision_in_order() {
    let t = Trail::new();
    let (ok, text) = t.portcullis(&["audit", "show", "--decision", "call-1"]);
    assert!(ok, "{text}");
    let seqs: Vec<u64> = text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 5, 9]);
    let (ok, text) = t.portcullis(&["audit", "show", "--decision", "nobody"]);
    assert!(!ok);
    contains(&text, "no record with decision_id nobody");
}

#[test]
fn a_missing_log_or_key_fails() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis")).args(["audit", "verify", "--state-dir"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(64), "no public key is bad usage");
}
