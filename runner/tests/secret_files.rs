//! Files that hold secrets are created 0600 (never widened, never chmod-ed after), their
//! directories 0700, and `portcullis plugin-config` (which holds the ticket signing key) writes
//! to a 0600 file or to a pipe. The stack as a whole is checked by tests/tests/cases/secrets.rs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use portcullis_runner::devstack::{certs, reload};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root").to_owned()
}

#[test]
fn secret_files_replace_wider_ones_with_mode_0600() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ecds = tmp.path().join("portcullis-filter.ecds.json");
    fs::write(&ecds, "old").expect("write");
    fs::set_permissions(&ecds, fs::Permissions::from_mode(0o644)).expect("chmod");
    // A temp file a crash left behind is replaced too, not written through.
    fs::write(tmp.path().join("portcullis-filter.ecds.json.tmp"), "stale").expect("write");
    reload::write_ecds(&ecds, "{\"new\":1}").expect("write_ecds");
    assert_eq!((mode(&ecds), fs::read_to_string(&ecds).expect("read").as_str()), (0o600, "{\"new\":1}"));
    assert!(!tmp.path().join("portcullis-filter.ecds.json.tmp").exists());
}

#[test]
fn state_dirs_are_created_0700_and_tightened() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let nested = tmp.path().join("a/b");
    certs::prepare_dir(&nested).expect("prepare");
    assert_eq!((mode(&tmp.path().join("a")), mode(&nested)), (0o700, 0o700));
    let wide = tmp.path().join("wide");
    fs::create_dir(&wide).expect("mkdir");
    fs::set_permissions(&wide, fs::Permissions::from_mode(0o755)).expect("chmod");
    certs::prepare_dir(&wide).expect("prepare");
    assert_eq!(mode(&wide), 0o700);
}

#[test]
fn plugin_config_goes_to_a_private_file_or_a_pipe() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = certs::ensure(&tmp.path().join("certs"), "portcullis.local", &[]).expect("pki");
    let key = fs::read_to_string(&pki.ticket_signing_key).expect("key");
    let run = |extra: &[&str]| {
        Command::new(BIN)
            .current_dir(root())
            .arg("plugin-config")
            .arg("--signing-key")
            .arg(&pki.ticket_signing_key)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run portcullis")
    };
    let out = tmp.path().join("plugin-config.json");
    let written = run(&["--output", out.to_str().expect("utf-8")]);
    assert!(written.status.success() && written.stdout.is_empty(), "{written:?}");
    assert_eq!(mode(&out), 0o600);
    let config: serde_json::Value = serde_json::from_str(&fs::read_to_string(&out).expect("read")).expect("json");
    assert_eq!(config["ticket"]["signing_key_pem"].as_str(), Some(key.as_str()));

    let piped = run(&[]);
    assert!(piped.status.success(), "{piped:?}");
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&piped.stdout).expect("json"), config);

    // On a terminal (script(1) gives it one) the key is not printed.
    let command = format!("{BIN} plugin-config --signing-key {}", pki.ticket_signing_key.display());
    let tty = Command::new("script").args(["-qec", &command, "/dev/null"]).current_dir(root()).output().expect("run script");
    let text = String::from_utf8_lossy(&tty.stdout);
    let key_body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!tty.status.success() && text.contains("refusing to print"), "{tty:?}");
    assert!(!text.contains(&key_body), "the key reached the terminal: {text}");
}
