//! A bundle's caller facts: what its optional [`CALLER_FACTS`] rule computes from the caller
//! alone (workload, verified user, why there is none), evaluated once per caller and reused.
//!
//! Most of a decision depends only on who calls: the caller's roles, what they grant, which
//! tools they may call at all. A bundle that names that work in [`CALLER_FACTS`] gets it
//! evaluated with an input of only `workload`, `user` and `user_error` (whatever else its rules
//! read is absent), kept per caller, and handed back to every decision as `input.caller_facts`;
//! its rules read the caller from there when it is present and compute it themselves when it is
//! not (another engine, a unit test), so the decisions are the same, only the cost differs.
//!
//! The memo belongs to one compiled bundle (an [`crate::authz::Authorizer`]) and is dropped
//! with it, so a new bundle, catalog or data never sees another's facts; it is keyed on the
//! SHA-256 of the caller's members as policy sees them, so two callers never share facts; and
//! it is bounded like the decision cache ([`crate::decision_cache`]), with fewer entries ([`GENERATION`]).

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::authz::AuthzError;
use crate::decision_cache::{DecisionCache, Key};

/// The optional rule that computes the caller facts (any value; undefined: none).
pub const CALLER_FACTS: &str = "data.portcullis.authz.caller_facts";
/// Where policy finds them in `input`.
pub const INPUT_MEMBER: &str = "caller_facts";
/// The members of `input` that the caller facts are computed from, and keyed on.
pub const CALLER_MEMBERS: [&str; 3] = ["workload", "user", "user_error"];
/// Callers per memo generation. One caller's facts cover every catalog tool (several KiB in
/// the wasm VM, once per worker), so the memo keeps fewer entries than the decision cache;
/// a caller beyond it costs one facts evaluation more.
pub const GENERATION: usize = 128;

pub struct CallerFacts {
    compiled: regorus::CompiledPolicy,
    memo: DecisionCache<regorus::Value>,
}

impl CallerFacts {
    /// Compiles the bundle's [`CALLER_FACTS`] rule; `None` when the bundle does not define it.
    pub fn new(mut engine: regorus::Engine) -> Result<Option<Self>, AuthzError> {
        match engine.compile_with_entrypoint(&CALLER_FACTS.into()) {
            Ok(compiled) => Ok(Some(Self { compiled, memo: DecisionCache::with_generation(GENERATION) })),
            Err(e) if e.to_string().contains("not a valid rule path") => Ok(None),
            Err(e) => Err(AuthzError::Compile(format!("{CALLER_FACTS}: {e}"))),
        }
    }

    /// Adds `caller_facts` to `input` (an object): the memoized facts of its caller, evaluated
    /// now if this caller has none yet. Facts that are undefined are not added.
    pub fn attach(&self, input: Value) -> Result<regorus::Value, AuthzError> {
        let Value::Object(mut members) = input else { return Ok(regorus::Value::from(input)) };
        // Nobody but the gateway says what the caller facts are.
        members.remove(INPUT_MEMBER);
        let caller: Map<String, Value> =
            CALLER_MEMBERS.iter().filter_map(|m| members.get(*m).map(|v| ((*m).to_owned(), v.clone()))).collect();
        let facts = self.facts(caller)?;
        let mut input = regorus::Value::from(Value::Object(members));
        if facts != regorus::Value::Undefined {
            input.as_object_mut().map_err(|e| AuthzError::Eval(e.to_string()))?.insert(regorus::Value::from(INPUT_MEMBER), facts);
        }
        Ok(input)
    }

    fn facts(&self, caller: Map<String, Value>) -> Result<regorus::Value, AuthzError> {
        let caller = Value::Object(caller);
        let key: Key = Sha256::digest(caller.to_string().as_bytes()).into();
        if let Some(hit) = self.memo.get(&key) {
            return Ok(hit);
        }
        crate::profile::mark("facts_key");
        let facts = self.compiled.eval_with_input(regorus::Value::from(caller)).map_err(|e| AuthzError::Eval(format!("{CALLER_FACTS}: {e}")))?;
        crate::profile::mark("facts_eval");
        if facts != regorus::Value::Undefined {
            self.memo.insert(key, facts.clone());
        }
        Ok(facts)
    }

    /// Memo lookups that hit and that missed, since the bundle was compiled.
    pub fn counts(&self) -> (u64, u64) {
        self.memo.counts()
    }

    /// How many callers' facts are kept now.
    pub fn len(&self) -> usize {
        self.memo.len()
    }

    pub fn is_empty(&self) -> bool {
        self.memo.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::authz::{Authorizer, McpInput, PolicyBundle, PolicyInput, PolicyModule, PolicyTime, Workload};
    use crate::catalog::Catalog;
    use crate::userjwt::VerifiedUser;

    /// A bundle whose caller facts say who the caller is and what else they were shown, and
    /// whose decision repeats them (and says whether they came from input.caller_facts).
    const SOURCE: &str = r#"package portcullis.authz

import rego.v1

caller_facts := {
	"who": sprintf("%s/%s", [input.workload.spiffe_id, object.get(input, ["user", "sub"], "-")]),
	"shown": sort([k | some k, _ in input]),
}

facts := input.caller_facts if is_object(input.caller_facts)
else := caller_facts

decision := {
	"allow": true,
	"reasons": [facts.who, concat(",", facts.shown), sprintf("memo %v", [is_object(input.caller_facts)])],
	"rule_ids": ["t"],
	"cacheable": false,
}
"#;

    fn authorizer(source: &str) -> Authorizer {
        let bundle = PolicyBundle { modules: vec![PolicyModule { name: "p.rego".into(), source: source.into() }], data: serde_json::Value::Null };
        let catalog = Catalog::from_value(json!({"version": 1, "tools": [{"name": "t", "description": "d", "kind": "query", "risk": "low", "owner": "o",
            "input_schema": {"type": "object"}, "execution": {"local": {"command": ["true"], "timeout_seconds": 1}}}]}))
        .unwrap();
        Authorizer::new(&bundle, &catalog).unwrap()
    }

    fn reasons(a: &Authorizer, workload: &str, user: Option<&VerifiedUser>, namespace: &str) -> Vec<String> {
        let workload = Workload::from_spiffe_id(workload).unwrap();
        let arguments = json!({"namespace": namespace});
        let input = PolicyInput {
            method: "tools/call",
            tool: Some("t"),
            arguments: arguments.as_object(),
            plan_hash: None,
            workload: &workload,
            user,
            user_error: user.is_none().then_some("no bearer token"),
            time: PolicyTime::from_unix(0),
            mcp: McpInput::default(),
        };
        a.decide(&input).unwrap().reasons
    }

    fn user(sub: &str) -> VerifiedUser {
        VerifiedUser { sub: sub.into(), iss: "https://idp".into(), groups: Vec::new(), claims: serde_json::Map::new() }
    }

    #[test]
    fn facts_are_per_caller_see_only_the_caller_and_reach_the_decision() {
        let a = authorizer(SOURCE);
        let (r, o) = ("spiffe://td/ns/a/sa/reader", "spiffe://td/ns/a/sa/operator");
        let (alice, bob) = (user("alice"), user("bob"));
        for round in 0..2 {
            // New arguments every time: only the memo can answer the caller's part.
            let ns = format!("ns-{round}");
            assert_eq!(reasons(&a, r, None, &ns), [format!("{r}/-"), "user,user_error,workload".into(), "memo true".into()]);
            assert_eq!(reasons(&a, o, None, &ns)[0], format!("{o}/-"));
            assert_eq!(reasons(&a, r, Some(&alice), &ns)[0], format!("{r}/alice"));
            assert_eq!(reasons(&a, r, Some(&bob), &ns)[0], format!("{r}/bob"));
        }
        let facts = a.caller_facts().expect("defined");
        assert_eq!((facts.counts(), facts.len()), ((4, 4), 4), "four callers, each evaluated once");
    }

    #[test]
    fn a_new_bundle_starts_without_facts_and_a_bundle_without_the_rule_has_none() {
        let a = authorizer(SOURCE);
        reasons(&a, "spiffe://td/ns/a/sa/reader", None, "x");
        assert_eq!(a.caller_facts().map(|f| f.len()), Some(1));
        // A reload compiles a new Authorizer: its memo is empty.
        let b = authorizer(SOURCE);
        assert_eq!(b.caller_facts().map(|f| f.len()), Some(0));
        let plain = authorizer(&SOURCE.replace("caller_facts :=", "other_facts :="));
        assert!(plain.caller_facts().is_none());
    }

    #[test]
    fn an_input_cannot_bring_its_own_caller_facts() {
        let a = authorizer(SOURCE);
        let input = json!({"workload": {"spiffe_id": "spiffe://td/ns/a/sa/reader"}, "user": null, "user_error": "none",
            "caller_facts": {"who": "someone else", "shown": []}});
        let d = a.decide_value(&input).unwrap();
        assert_eq!(d.reasons[0], "spiffe://td/ns/a/sa/reader/-");
    }
}
