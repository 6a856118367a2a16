//! Turns a catalog tool and a call's arguments into a sandbox job, and its output into an MCP
//! tool result.

use std::time::Duration;

use portcullis_core::catalog::Tool;
use portcullis_core::plan::{canonical_arguments, canonicalize, PlanError};
use serde_json::{Map, Value};

use crate::sandbox::{JobOutput, JobSpec};

/// Builds the job for one call. The tool gets exactly what the plan hash covers: the RFC 8785
/// canonical JSON of the arguments on stdin and in `PORTCULLIS_ARGUMENTS`, and each top-level
/// scalar as `ARG_<NAME>` in its canonical form (a string as is, `1.0` and `1e0` as `1`), so
/// two spellings of one call (one hash, one ticket, one approval) cannot run differently.
/// Fails for arguments that have no plan hash (integers past 2^53), which the ticket check has
/// refused already, and for a top-level string holding a NUL, which no environment variable
/// can carry (the gateway refuses those too): a tool never runs with an argument missing.
pub fn job_for(tool: &Tool, arguments: Option<&Map<String, Value>>, job_id: &str) -> Result<JobSpec, JobError> {
    let json = canonical_arguments(arguments)?;
    let mut env = vec![
        ("PORTCULLIS_TOOL".to_owned(), tool.name.clone()),
        ("PORTCULLIS_JOB_ID".to_owned(), job_id.to_owned()),
        ("PORTCULLIS_ARGUMENTS".to_owned(), json.clone()),
    ];
    // In name order whatever the map's own order, so which of two names that upper-case alike
    // (`a`, `A`) sets `ARG_A` depends on the call's content only, never on how it was written.
    let mut args: Vec<(&String, &Value)> = arguments.into_iter().flatten().collect();
    args.sort_by_key(|(name, _)| *name);
    for (key, value) in args {
        let scalar = match value {
            Value::String(s) => s.clone(),
            Value::Number(_) | Value::Bool(_) => canonicalize(value)?,
            _ => continue,
        };
        if scalar.contains('\0') {
            return Err(JobError::Nul(key.clone()));
        }
        if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            env.push((format!("ARG_{}", key.to_ascii_uppercase()), scalar));
        }
    }
    let local = &tool.execution.local;
    Ok(JobSpec {
        job_id: job_id.to_owned(),
        command: local.command.clone(),
        env,
        stdin: json.into_bytes(),
        timeout: Duration::from_secs(local.timeout_seconds),
        max_output_bytes: local.max_output_bytes,
        progress: None,
        meta: crate::sandbox::JobMeta { tool: tool.name.clone(), ..Default::default() },
        kubernetes: tool.execution.kubernetes.clone(),
        node_selector: Default::default(),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("arguments cannot be canonicalized: {0}")]
    Plan(#[from] PlanError),
    #[error("argument {0:?} contains a NUL character, which a tool's environment cannot carry")]
    Nul(String),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_logs() -> Tool {
        let catalog = crate::devstack::bundle::load_catalog(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../catalog/example.yaml"))).unwrap();
        catalog.get("tail_logs").unwrap().clone()
    }

    fn args(text: &str) -> Map<String, Value> {
        serde_json::from_str(text).unwrap()
    }

    fn env_of<'a>(job: &'a JobSpec, name: &str) -> Option<&'a str> {
        job.env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every spelling of the same arguments (one plan hash) gives the tool the same input: the
    /// canonical text the plan hash digests, on stdin, in PORTCULLIS_ARGUMENTS and ARG_*.
    #[test]
    fn the_tool_gets_the_canonical_arguments_that_were_hashed() {
        let tool = tail_logs();
        let canonical = r#"{"big":100,"lines":1,"namespace":"a\u001fb","pod":"p","ratio":0.5}"#;
        let spellings = [
            r#"{"lines":1,"big":100,"ratio":0.5,"namespace":"a\u001fb","pod":"p"}"#,
            r#"{"pod":"p","lines":1.0,"big":1e2,"ratio":5e-1,"namespace":"a\u001Fb"}"#,
            r#"{"lines":10e-1,"big":100.000,"ratio":0.50,"namespace":"a\u001fb","pod":"p"}"#,
        ];
        for text in spellings {
            let a = args(text);
            let plan = portcullis_core::plan::canonical_plan("tail_logs", Some(&a)).unwrap();
            let job = job_for(&tool, Some(&a), "j").unwrap();
            assert_eq!(String::from_utf8(job.stdin.clone()).unwrap(), canonical, "stdin for {text}");
            assert_eq!(env_of(&job, "PORTCULLIS_ARGUMENTS"), Some(canonical), "for {text}");
            assert_eq!(plan, format!(r#"{{"arguments":{canonical},"tool":"tail_logs"}}"#), "the hashed text for {text}");
            assert_eq!(env_of(&job, "ARG_LINES"), Some("1"), "for {text}");
            assert_eq!(env_of(&job, "ARG_BIG"), Some("100"), "for {text}");
            assert_eq!(env_of(&job, "ARG_RATIO"), Some("0.5"), "for {text}");
            assert_eq!(env_of(&job, "ARG_NAMESPACE"), Some("a\u{1f}b"), "strings reach ARG_* unquoted");
        }
    }

    /// A NUL cannot travel in an environment variable: the call is refused, never run with
    /// the argument left out.
    #[test]
    fn a_nul_in_a_top_level_string_refuses_the_job() {
        let a = args(r#"{"namespace":"default\u0000x","pod":"p","lines":1}"#);
        let err = job_for(&tail_logs(), Some(&a), "j").unwrap_err();
        assert!(matches!(err, JobError::Nul(ref name) if name == "namespace"), "{err}");
    }

    #[test]
    fn no_arguments_are_an_empty_object() {
        let job = job_for(&tail_logs(), None, "j").unwrap();
        assert_eq!(job.stdin, b"{}");
        assert_eq!(env_of(&job, "PORTCULLIS_ARGUMENTS"), Some("{}"));
    }
}
