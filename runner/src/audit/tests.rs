//! The audit trail's unit tests: tampering of every kind is named, a torn tail is repaired,
//! and gateway decisions are ingested exactly once across restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::ingest::Ingester;
use super::{verify, AuditConfig, AuditLog, Break, GATEWAY_DECISION, SOURCE_RESET};

struct Fixture {
    dir: tempfile::TempDir,
    private: String,
    public: String,
}

impl Fixture {
    fn new() -> Self {
        let (private, public) = crate::devstack::certs::ed25519_pkcs8_v1().unwrap();
        Self { dir: tempfile::tempdir().unwrap(), private, public }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("audit/audit.jsonl")
    }

    fn checkpoints_path(&self) -> PathBuf {
        self.dir.path().join("elsewhere/checkpoints.jsonl")
    }

    fn open(&self, every_records: u64) -> Arc<AuditLog> {
        AuditLog::open(AuditConfig {
            log: self.log_path(),
            checkpoints: self.checkpoints_path(),
            signing_key_pem: self.private.clone().into_bytes(),
            checkpoint_every_records: every_records,
            checkpoint_every: Duration::from_secs(3600),
        })
        .unwrap()
    }

    fn verify(&self) -> Result<super::Summary, Break> {
        verify(&self.log_path(), &self.checkpoints_path(), self.public.as_bytes())
    }

    /// A log of `n` records, with a checkpoint every 4.
    fn with_records(n: u64) -> Self {
        let f = Fixture::new();
        let log = f.open(4);
        for i in 1..=n {
            let seq = log.append(super::JOB_STARTED, fields(json!({"decision_id": format!("d{i}"), "n": i}))).unwrap();
            assert_eq!(seq, i);
        }
        f
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.log_path()).unwrap().lines().map(str::to_owned).collect()
    }

    fn write_lines(&self, lines: &[String]) {
        std::fs::write(self.log_path(), lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    }

    /// Tampers with the log's lines, verifies, and returns the break.
    fn tampered(&self, edit: impl FnOnce(&mut Vec<String>)) -> Break {
        let mut lines = self.lines();
        edit(&mut lines);
        self.write_lines(&lines);
        self.verify().unwrap_err()
    }
}

fn fields(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn an_intact_log_verifies_and_its_files_are_private() {
    let f = Fixture::with_records(10);
    let s = f.verify().unwrap();
    assert_eq!((s.records, s.checkpoints, s.covered), (10, 2, 8), "{s}");
    assert_eq!(mode(&f.log_path()), 0o600);
    assert_eq!(mode(&f.checkpoints_path()), 0o600);
    assert_eq!(mode(f.log_path().parent().unwrap()), 0o700);
    assert_eq!(mode(f.checkpoints_path().parent().unwrap()), 0o700);
    let first: Value = serde_json::from_str(&f.lines()[0]).unwrap();
    assert_eq!(first["prev"], super::GENESIS);
    assert_eq!(first["seq"], 1);
    assert_eq!(first["decision_id"], "d1");
}

#[test]
fn an_edited_record_is_named() {
    let b = Fixture::with_records(10).tampered(|lines| lines[4] = lines[4].replace("\"n\":5", "\"n\":6"));
    assert_eq!(b.record(), Some(5), "{b}");
    assert!(b.to_string().contains("edited"), "{b}");
}

#[test]
fn an_edited_record_with_its_hash_recomputed_breaks_the_next_one() {
    let b = Fixture::with_records(10).tampered(|lines| {
        let mut record: Map<String, Value> = serde_json::from_str(&lines[4]).unwrap();
        record.insert("n".into(), 500.into());
        record.remove("hash");
        let hash = super::chain::record_hash(&record).unwrap();
        record.insert("hash".into(), hash.into());
        lines[4] = Value::Object(record).to_string();
    });
    assert_eq!(b.record(), Some(6), "{b}");
    assert!(b.to_string().contains("prev"), "{b}");
}

#[test]
fn a_deleted_record_is_named() {
    let b = Fixture::with_records(10).tampered(|lines| {
        lines.remove(6);
    });
    assert_eq!(b.record(), Some(7), "{b}");
    assert!(b.to_string().contains("record 7 was deleted"), "{b}");
}

#[test]
fn swapped_records_are_named() {
    let b = Fixture::with_records(10).tampered(|lines| lines.swap(2, 3));
    assert_eq!(b.record(), Some(3), "{b}");
    assert!(b.to_string().contains("expected seq 3, found seq 4"), "{b}");
}

#[test]
fn a_cut_tail_is_found_by_the_checkpoint_beyond_it() {
    let f = Fixture::with_records(10);
    // The chain of six records is valid on its own; the checkpoint of eight is not met.
    let b = f.tampered(|lines| lines.truncate(6));
    assert_eq!(b, Break::Truncated { checkpoint: 2, count: 8, records: 6 }, "{b}");
    assert!(b.to_string().contains("the last 2 records were cut off"), "{b}");
    // The runner refuses to append to it too.
    let err = AuditLog::open(AuditConfig {
        log: f.log_path(),
        checkpoints: f.checkpoints_path(),
        signing_key_pem: f.private.clone().into_bytes(),
        checkpoint_every_records: 4,
        checkpoint_every: Duration::from_secs(60),
    })
    .err()
    .unwrap();
    assert!(err.to_string().contains("records were removed"), "{err}");
}

#[test]
fn a_rewritten_log_does_not_match_the_checkpoints_head() {
    let f = Fixture::with_records(10);
    // Rewrite everything as a consistent new chain of the same length.
    let other = Fixture::with_records(10);
    std::fs::copy(other.log_path(), f.log_path()).unwrap();
    let b = f.verify().unwrap_err();
    assert!(matches!(b, Break::HeadMismatch { checkpoint: 1, count: 4, .. }), "{b}");
}

#[test]
fn a_forged_or_foreign_checkpoint_is_named() {
    let f = Fixture::with_records(10);
    let text = std::fs::read_to_string(f.checkpoints_path()).unwrap();
    let forged = text.replacen("\"count\":8", "\"count\":7", 1);
    assert_ne!(forged, text);
    std::fs::write(f.checkpoints_path(), &forged).unwrap();
    let b = f.verify().unwrap_err();
    assert_eq!(b.checkpoint(), Some(2), "{b}");
    assert!(b.to_string().contains("bad signature"), "{b}");

    std::fs::write(f.checkpoints_path(), &text).unwrap();
    let stranger = Fixture::new();
    let b = verify(&f.log_path(), &f.checkpoints_path(), stranger.public.as_bytes()).unwrap_err();
    assert_eq!(b.checkpoint(), Some(1), "{b}");
    assert!(b.to_string().contains("not by the given public key"), "{b}");
}

#[test]
fn reopening_continues_the_chain_and_a_torn_last_line_is_set_aside() {
    let f = Fixture::with_records(5);
    let head = f.open(4).head();
    // A crash in the middle of writing record 6.
    let mut text = std::fs::read(f.log_path()).unwrap();
    text.extend_from_slice(br#"{"seq":6,"time":"2025-"#);
    std::fs::write(f.log_path(), &text).unwrap();
    assert!(f.verify().unwrap().unterminated_tail);
    let log = f.open(4);
    assert_eq!((log.records(), log.head()), (5, head));
    assert_eq!(log.append(super::JOB_FINISHED, Map::new()).unwrap(), 6);
    drop(log);
    let s = f.verify().unwrap();
    assert_eq!((s.records, s.unterminated_tail), (6, false));
    let torn = std::fs::read_to_string(f.dir.path().join("audit/audit.jsonl.torn")).unwrap();
    assert!(torn.starts_with(r#"{"seq":6,"time":"2025-"#), "{torn}");
}

#[test]
fn a_checkpoint_is_written_by_time_only_when_something_is_new() {
    let f = Fixture::new();
    let log = f.open(0);
    assert_eq!(log.checkpoint_if_new().unwrap(), None);
    log.append(super::PLAN_STORED, Map::new()).unwrap();
    assert_eq!(log.checkpoint_if_new().unwrap(), Some(1));
    assert_eq!(log.checkpoint_if_new().unwrap(), None);
    assert_eq!(f.verify().unwrap().covered, 1);
}

#[test]
fn reserved_fields_are_refused_and_nothing_is_written() {
    let f = Fixture::new();
    let log = f.open(0);
    assert!(log.append(super::JOB_STARTED, fields(json!({"seq": 9}))).is_err());
    assert_eq!(log.records(), 0);
    assert_eq!(log.append(super::JOB_STARTED, Map::new()).unwrap(), 1);
}

/// On a full disk the log refuses every record that opens something (a job's start among
/// them) while it can still write the records that end running jobs. Mounts a 2 MiB tmpfs, so
/// it needs root, as the runner's other namespace tests do.
#[test]
fn a_full_disk_refuses_opening_records_and_keeps_room_for_closing_ones() {
    let f = Fixture::new();
    let dir = f.log_path().parent().unwrap().to_owned();
    std::fs::create_dir_all(&dir).unwrap();
    let mounted = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs"]).arg(&dir).status().unwrap();
    assert!(mounted.success(), "mounting a tmpfs (this test needs root)");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(dir.clone());
    let log = f.open(0);
    let record = |n: u64| fields(json!({"decision_id": format!("d{n}"), "pad": "x".repeat(900)}));
    log.append(super::JOB_STARTED, record(0)).unwrap();
    let mut filler = std::fs::File::create(dir.join("filler")).unwrap();
    while std::io::Write::write_all(&mut filler, &[0u8; 4096]).is_ok() {}

    // What was allocated ahead is used up, then opening records are refused, whole.
    let mut opened = 0;
    let refusal = loop {
        match log.append(super::JOB_STARTED, record(opened + 1)) {
            Ok(_) => opened += 1,
            Err(e) => break e,
        }
        assert!(opened < 1000, "1000 records of 1 KiB on a full 2 MiB disk");
    };
    assert!(refusal.to_string().contains("kept for the records that end running jobs"), "{refusal}");
    let records = log.records();
    assert!(log.append_many(&[(super::JOB_FINISHED, record(1)), (super::JOB_STARTED, record(2))]).is_err(), "a batch that opens anything");
    assert_eq!(log.records(), records);
    // The room kept holds the ends of every job started, and of hundreds more.
    for n in 0..=opened.max(300) {
        log.append(super::JOB_FINISHED, record(n)).unwrap();
        log.append(super::SANDBOX_DESTROYED, record(n)).unwrap();
    }
    assert!(log.append(super::JOB_STARTED, record(0)).is_err());
    drop(log);
    f.verify().unwrap();
}

#[test]
fn each_start_records_the_unended_jobs_once_reading_back_only_to_the_last_start() {
    use super::interrupted::{record_interrupted_jobs, RUNNER_STARTED};
    let f = Fixture::new();
    let log = f.open(0);
    let job = |id: &str| fields(json!({"decision_id": id, "backend": "local"}));
    log.append(super::JOB_STARTED, job("a")).unwrap();
    log.append(super::JOB_STARTED, job("b")).unwrap();
    log.append(super::JOB_FINISHED, job("b")).unwrap();
    assert_eq!(record_interrupted_jobs(&log).unwrap(), 1);
    log.append(super::JOB_STARTED, job("c")).unwrap();
    let since = log.records_since_last(|r| r["event"] == RUNNER_STARTED).unwrap();
    assert_eq!(since.iter().map(|r| r["decision_id"].clone()).collect::<Vec<_>>(), vec![json!("c")]);
    assert_eq!(record_interrupted_jobs(&log).unwrap(), 1, "c only");
    assert_eq!(record_interrupted_jobs(&log).unwrap(), 0);
    let aborted: Vec<_> = f.lines().iter().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|r| r["event"] == super::JOB_ABORTED).map(|r| r["decision_id"].clone()).collect();
    assert_eq!(aborted, vec![json!("a"), json!("c")]);
    f.verify().unwrap();
}

fn access_line(id: &str, outcome: &str) -> String {
    let decision = json!({"decision_id": id, "outcome": outcome, "workload": "spiffe://x/ns/agents/sa/reader", "user": null,
        "method": "tools/call", "tool": "word_count", "plan_hash": "sha256:00", "rule_ids": ["r"], "policy_version": "v1"});
    json!({"start_time": "2025-01-01T00:00:00.000Z", "method": "POST", "path": "/mcp", "response_code": 200,
        "portcullis_decision": decision.to_string()})
    .to_string()
        + "\n"
}

fn append_to(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).create(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn decisions(f: &Fixture) -> Vec<Value> {
    f.lines().iter().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|r| r["event"] == GATEWAY_DECISION).collect()
}

#[test]
fn gateway_decisions_are_ingested_exactly_once_across_restarts() {
    let f = Fixture::new();
    let access = f.dir.path().join("access.log");
    let log = f.open(3);
    let mut ing = Ingester::new(log.clone(), access.clone()).unwrap();
    assert_eq!(ing.poll().unwrap(), 0, "no access log yet");

    append_to(&access, &(access_line("a", "allowed") + &access_line("b", "denied")));
    // Half a line: Envoy has not finished it.
    let third = access_line("c", "invalid");
    let (head, tail) = third.split_at(20);
    append_to(&access, head);
    assert_eq!(ing.poll().unwrap(), 2);
    append_to(&access, tail);
    // A line Envoy wrote without a decision (it refused before the filter).
    append_to(&access, "{\"start_time\":\"2025-01-01T00:00:01.000Z\",\"response_code\":400,\"portcullis_decision\":null}\n");
    // SIGKILL right after the records were appended: no clean shutdown, nothing else saved.
    assert_eq!(ing.poll().unwrap(), 2);
    drop(ing);
    drop(log);

    // More lines while the runner is down.
    append_to(&access, &access_line("d", "rate_limited"));
    // And a crash in the middle of the record for "d" on the next run: the torn line is
    // removed at open, and "d" is read again.
    let log = f.open(3);
    let ing = Ingester::new(log.clone(), access.clone()).unwrap();
    assert_eq!(ing.offset(), std::fs::metadata(&access).unwrap().len() - access_line("d", "rate_limited").len() as u64);
    drop(ing);
    drop(log);
    append_to(&f.log_path(), r#"{"seq":6,"time":"2025-01-01T00:00:00.000Z","event":"gateway.decision","decision_id":"d""#);

    let log = f.open(3);
    let mut ing = Ingester::new(log.clone(), access.clone()).unwrap();
    assert_eq!(ing.poll().unwrap(), 1);
    assert_eq!(ing.poll().unwrap(), 0);
    let ids: Vec<Value> = decisions(&f).iter().map(|r| r["decision_id"].clone()).collect();
    assert_eq!(ids, vec![json!("a"), json!("b"), json!("c"), Value::Null, json!("d")]);
    let records = decisions(&f);
    assert_eq!(records[3]["outcome"], "not_decided");
    assert_eq!(records[3]["http_status"], 400);
    assert_eq!(records[1]["outcome"], "denied");
    assert_eq!(records[1]["tool"], "word_count");
    assert_eq!(records[1]["http_method"], "POST");
    assert_eq!(records[1]["source_offset"], records[0]["source_next_offset"]);
    f.verify().unwrap();
}

#[test]
fn a_rotated_access_log_is_read_to_its_end_then_the_new_one_from_the_start() {
    let f = Fixture::new();
    let access = f.dir.path().join("access.log");
    let log = f.open(0);
    let mut ing = Ingester::new(log.clone(), access.clone()).unwrap();
    append_to(&access, &access_line("a", "allowed"));
    assert_eq!(ing.poll().unwrap(), 1);
    // Envoy wrote one more line into the file, then it was renamed and a new one started.
    append_to(&access, &access_line("b", "allowed"));
    std::fs::rename(&access, f.dir.path().join("access.log.1")).unwrap();
    append_to(&access, &access_line("c", "allowed"));
    assert_eq!(ing.poll().unwrap(), 2);
    let ids: Vec<Value> = decisions(&f).iter().map(|r| r["decision_id"].clone()).collect();
    assert_eq!(ids, vec![json!("a"), json!("b"), json!("c")]);
    let resets = f.lines().iter().filter(|l| l.contains(SOURCE_RESET)).count();
    assert_eq!(resets, 1);
    // A restart resumes in the new file.
    drop(ing);
    let mut ing = Ingester::new(log, access.clone()).unwrap();
    assert_eq!(ing.poll().unwrap(), 0);
    assert_eq!(ing.offset(), std::fs::metadata(&access).unwrap().len());
}

#[test]
fn show_prints_one_calls_records_in_order() {
    let f = Fixture::new();
    let log = f.open(0);
    for (event, id) in [("gateway.decision", "x"), ("gateway.decision", "y"), ("ticket.accepted", "x"), ("job.finished", "x")] {
        log.append(event, fields(json!({"decision_id": id}))).unwrap();
    }
    let mut out = Vec::new();
    assert_eq!(super::cli::show(&f.log_path(), "x", &mut out).unwrap(), 3);
    let events: Vec<String> = String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["event"].as_str().unwrap().to_owned()).collect();
    assert_eq!(events, ["gateway.decision", "ticket.accepted", "job.finished"]);
}
