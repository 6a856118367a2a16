//! The micro-benchmarks' criterion group and benchmark ids, shared by the bench that
//! produces them and `portcullis-bench`, which reads their estimates: they cannot drift.

use crate::payload::{Shape, SIZES};

pub const PARSE_VALIDATE: &str = "parse_validate";
pub const PLAN_HASH: &str = "plan_hash";
pub const REGO_DECIDE: &str = "rego_decide";
pub const GATEWAY_DECIDE: &str = "gateway_decide";
pub const TICKET: &str = "ticket";

/// Groups whose benchmarks run once per body shape and size.
pub const SIZED_GROUPS: [&str; 4] = [PARSE_VALIDATE, PLAN_HASH, REGO_DECIDE, GATEWAY_DECIDE];

/// The benchmark id of a sized benchmark, e.g. `str-10KiB`.
pub fn sized_id(shape: Shape, size_label: &str) -> String {
    format!("{}-{size_label}", shape.label())
}

/// Rego on the deny path (reader calling an apply tool), 200-byte body.
pub const REGO_DENY_ID: &str = "deny-str-200B";
/// Rego with a one-line policy that allows everything: the interpreter's fixed cost per call.
pub const REGO_TRIVIAL_ID: &str = "trivial-policy-str-200B";
/// `Gateway::decide` for a call decided before (the decision cache answers), 200-byte body.
/// The sized `GATEWAY_DECIDE` ids are all new calls.
pub const GATEWAY_CACHED_ID: &str = "cached-str-200B";
/// A new call whose argument the policy reads (`reader` → `list_pods` with a new `namespace`
/// each time): neither the decision cache nor `argument_names` can answer it, so every
/// iteration evaluates the policy. In `REGO_DECIDE` (the policy alone) and `GATEWAY_DECIDE`.
pub const NEW_READ_ARGS_ID: &str = "new-read-args";
pub const TICKET_SIGN_ID: &str = "sign";
pub const TICKET_VERIFY_ID: &str = "verify";
/// The bare Ed25519 signature over a ticket's signing input, with a key parsed once.
pub const ED25519_SIGN_ID: &str = "ed25519-sign-cached-key";
/// Parsing the PKCS#8 signing key (which derives the public key): what jsonwebtoken redoes
/// on every `encode`.
pub const ED25519_KEY_ID: &str = "ed25519-key-from-pkcs8";

/// Every (group, id) the criterion bench produces.
pub fn all_benchmarks() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for group in SIZED_GROUPS {
        for shape in Shape::ALL {
            for (label, _) in SIZES {
                out.push((group, sized_id(shape, label)));
            }
        }
    }
    out.push((REGO_DECIDE, REGO_DENY_ID.to_owned()));
    out.push((REGO_DECIDE, REGO_TRIVIAL_ID.to_owned()));
    out.push((GATEWAY_DECIDE, GATEWAY_CACHED_ID.to_owned()));
    out.push((REGO_DECIDE, NEW_READ_ARGS_ID.to_owned()));
    out.push((GATEWAY_DECIDE, NEW_READ_ARGS_ID.to_owned()));
    for id in [TICKET_SIGN_ID, TICKET_VERIFY_ID, ED25519_SIGN_ID, ED25519_KEY_ID] {
        out.push((TICKET, id.to_owned()));
    }
    out
}
