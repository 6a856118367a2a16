//! Turns a catalog tool and a call's arguments into a sandbox job, and its output into an MCP
//! tool result.

use std::time::Duration;

use portcullis_core::catalog::Tool;
use serde_json::{Map, Value};

use crate::sandbox::{JobOutput, JobSpec};

/// Builds the job for one call. Arguments arrive as JSON on stdin and in
/// `PORTCULLIS_ARGUMENTS`; each top-level scalar also as `ARG_<NAME>` for shell tools.
pub fn job_for(tool: &Tool, arguments: Option<&Map<String, Value>>, job_id: &str) -> JobSpec {
    let empty = Map::new();
    let args = arguments.unwrap_or(&empty);
    let json = Value::Object(args.clone()).to_string();
    let mut env = vec![
        ("PORTCULLIS_TOOL".to_owned(), tool.name.clone()),
        ("PORTCULLIS_JOB_ID".to_owned(), job_id.to_owned()),
        ("PORTCULLIS_ARGUMENTS".to_owned(), json.clone()),
    ];
    for (key, value) in args {
        let scalar = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => continue,
        };
        if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !scalar.contains('\0') {
            env.push((format!("ARG_{}", key.to_ascii_uppercase()), scalar));
        }
    }
    let local = &tool.execution.local;
    JobSpec {
        job_id: job_id.to_owned(),
        command: local.command.clone(),
        env,
        stdin: json.into_bytes(),
        timeout: Duration::from_secs(local.timeout_seconds),
        max_output_bytes: local.max_output_bytes,
    }
}

/// The text a caller sees: stdout, then stderr and the exit status when they say something.
pub fn render_output(out: &JobOutput) -> (String, bool) {
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.stderr.is_empty() {
        text.push_str("\n[stderr]\n");
        text.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    if out.truncated {
        text.push_str("\n[output truncated]");
    }
    let failed = out.timed_out || out.exit_code != Some(0);
    if out.timed_out {
        text.push_str(&format!("\n[timed out after {:?}]", out.duration));
    } else if let Some(code) = out.exit_code.filter(|c| *c != 0) {
        text.push_str(&format!("\n[exit status {code}]"));
    } else if let Some(sig) = out.signal {
        text.push_str(&format!("\n[killed by signal {sig}]"));
    }
    (text, failed)
}
