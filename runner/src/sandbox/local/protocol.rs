//! What the runner and init say to each other: the job config (runner to init, through a
//! memfd) and the status line (init to runner, through a pipe).

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Limits;
use crate::sandbox::SandboxError;

/// Exit status of init when the sandbox could not be set up (message on the status pipe and
/// on stderr, prefixed `portcullis-sandbox:`); 126/127 as in shells when exec fails.
pub(super) const EXIT_SETUP: i32 = 125;

/// What init needs besides argv. Sent as JSON through a memfd: not visible in `ps`, not
/// limited by the size of a pipe buffer, and never in the runner's environment.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct InitConfig {
    pub(super) job_id: String,
    pub(super) hostname: String,
    /// The job's complete environment, defaults included.
    pub(super) env: Vec<(String, String)>,
    pub(super) limits: Limits,
    pub(super) ro_binds: Vec<PathBuf>,
}

/// Status pipe: empty at EOF if the command was exec'd, otherwise one line
/// `setup\t<message>` or `exec\t<errno>\t<message>`.
pub(super) const STATUS_SETUP: &str = "setup";
pub(super) const STATUS_EXEC: &str = "exec";

pub(super) struct StatusMsg(pub(super) Vec<u8>);

impl StatusMsg {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0).trim_end().to_string()
    }

    pub(super) fn describe(&self, fallback: &str) -> String {
        if self.is_empty() {
            return fallback.to_string();
        }
        let t = self.text();
        t.split_once('\t')
            .map(|(_, m)| m.replace('\t', ": "))
            .unwrap_or(t)
    }

    pub(super) fn to_error(&self, program: &str) -> Option<SandboxError> {
        if self.is_empty() {
            return None;
        }
        let text = self.text();
        let mut parts = text.splitn(3, '\t');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(STATUS_EXEC), Some(errno), Some(message)) => Some(SandboxError::Exec {
                program: program.to_string(),
                message: message.to_string(),
                errno: errno.parse().ok(),
            }),
            (Some(STATUS_SETUP), Some(a), b) => Some(SandboxError::Setup {
                message: b.map_or_else(|| a.to_string(), |b| format!("{a}\t{b}")),
            }),
            _ => Some(SandboxError::Setup { message: text }),
        }
    }
}

/// Reads the status pipe to EOF, blocking; only used once the writers are known to be gone.
pub(super) fn read_status_blocking(fd: OwnedFd) -> StatusMsg {
    let mut buf = Vec::new();
    let _ = File::from(fd).read_to_end(&mut buf);
    StatusMsg(buf)
}

/// `pc-` and the first alphanumerics of the job id, as a valid hostname.
pub(super) fn hostname_for(job_id: &str) -> String {
    let short: String = job_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect::<String>()
        .to_ascii_lowercase();
    if short.is_empty() {
        "pc-job".into()
    } else {
        format!("pc-{short}")
    }
}

/// argv for exec, as C strings (used by init).
pub(super) fn cstrings<I: IntoIterator<Item = S>, S: AsRef<str>>(items: I) -> Vec<CString> {
    items
        .into_iter()
        .map(|s| CString::new(s.as_ref()).unwrap_or_default())
        .collect()
}
