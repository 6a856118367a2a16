//! `portcullis policy eval`: evaluates `data.portcullis.authz.decision` for one input document
//! with regorus, through the same compiled authorizer the filter uses, and prints the decision.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use portcullis_core::authz::{Authorizer, Decision, PolicyBundle};
use portcullis_core::catalog::Catalog;
use serde_json::Value;

use crate::devstack::bundle;

/// Exit status of `policy eval` for an allowed request.
pub const EXIT_ALLOWED: u8 = 0;
/// Exit status of `policy eval` for a denied request.
pub const EXIT_DENIED: u8 = 3;

/// Evaluates the bundle's decision for any input document (including ones the gateway never
/// sends, such as a missing workload), failing closed on an undefined decision as the gateway
/// does.
pub fn evaluate(bundle: &PolicyBundle, catalog: &Catalog, input: &Value) -> Result<Decision> {
    Ok(Authorizer::new(bundle, catalog)?.decide_value(input)?)
}

/// Reads an input document (a file, or stdin for `-`), strictly: duplicate keys, invalid
/// UTF-8 and excessive nesting are refused as they are at the gateway.
pub fn read_input(path: &Path) -> Result<Value> {
    let bytes = if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("reading input from stdin")?;
        buf
    } else {
        std::fs::read(path).with_context(|| format!("reading input {}", path.display()))?
    };
    portcullis_core::json::parse_strict(&bytes, portcullis_core::json::Limits::default())
        .with_context(|| format!("parsing input {}", path.display()))
}

/// `portcullis policy eval`: prints the decision (and, unless `json_only`, its reasons) and
/// returns exit status 0 when allowed, 3 when denied. Errors (bad input, a bundle that does
/// not load, compile or evaluate) are the caller's exit status 64.
pub fn eval_command(input: &Path, policies: &Path, catalog: &Path, json_only: bool) -> Result<ExitCode> {
    let input = read_input(input)?;
    let bundle = bundle::load_policy(policies, false)?;
    let catalog = bundle::load_catalog(catalog)?;
    let decision = evaluate(&bundle, &catalog, &input)?;
    if json_only {
        println!("{}", serde_json::to_string(&decision)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&decision)?);
        println!();
        print!("{}", human_readable(&decision));
    }
    Ok(ExitCode::from(if decision.allow { EXIT_ALLOWED } else { EXIT_DENIED }))
}

/// The verdict, one line per reason, the rule ids, the placement if the policy named one and,
/// for tools/list, the visible tools.
pub fn human_readable(decision: &Decision) -> String {
    let verdict = match (decision.allow, decision.require_approval) {
        (true, false) => "ALLOWED",
        (true, true) => "ALLOWED, approval required",
        (false, _) => "DENIED",
    };
    let mut out = format!("{verdict}\n");
    if decision.reasons.is_empty() {
        out.push_str("  reason: (none given)\n");
    }
    for reason in &decision.reasons {
        out.push_str(&format!("  reason: {reason}\n"));
    }
    out.push_str(&format!("  rules:  {}\n", decision.rule_ids.join(", ")));
    if let Some(placement) = &decision.placement {
        out.push_str(&format!("  placement: {}\n", placement.describe()));
    }
    if let Some(tools) = &decision.visible_tools {
        let tools = if tools.is_empty() { "(none)".to_owned() } else { tools.join(", ") };
        out.push_str(&format!("  visible tools: {tools}\n"));
    }
    out
}
