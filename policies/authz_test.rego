# Unit tests for the default policy, run by `make test` (regorus) against the example catalog.
package portcullis.authz_test

import rego.v1

import data.portcullis.authz

reader := {"spiffe_id": "spiffe://portcullis.local/ns/agents/sa/reader", "trust_domain": "portcullis.local", "path": "/ns/agents/sa/reader"}

operator := {"spiffe_id": "spiffe://portcullis.local/ns/agents/sa/operator", "trust_domain": "portcullis.local", "path": "/ns/agents/sa/operator"}

intruder := {"spiffe_id": "spiffe://portcullis.local/ns/agents/sa/intruder", "trust_domain": "portcullis.local", "path": "/ns/agents/sa/intruder"}

call(who, tool) := {"method": "tools/call", "tool": tool, "arguments": {}, "plan_hash": "sha256:00", "workload": who, "user": null}

alice := {"sub": "alice", "iss": "https://idp.portcullis.local", "groups": ["sre"], "claims": {"sub": "alice"}}

# A call made for a verified user.
call_for(who, user, tool) := object.union(call(who, tool), {"user": user, "user_error": null})

rpc(who, method) := {"method": method, "tool": null, "arguments": null, "plan_hash": null, "workload": who, "user": null}

test_reader_may_call_query_tool if {
	d := authz.decision with input as call(reader, "inspect_sandbox")
	d.allow
	d.rule_ids == ["tools.role.reader"]
}

test_reader_may_not_apply if {
	d := authz.decision with input as call_for(reader, alice, "apply_config")
	not d.allow
	d.rule_ids == ["tools.not_permitted"]
	d.reasons == [`roles ["reader"] may not call apply tool apply_config (risk medium)`]
}

test_operator_may_apply if {
	d := authz.decision with input as call_for(operator, alice, "apply_config")
	d.allow
	not d.require_approval
}

test_apply_needs_a_verified_user if {
	d := authz.decision with input as object.union(call(operator, "apply_config"), {"user_error": "bearer token expired"})
	not d.allow
	d.rule_ids == ["user.required"]
	d.reasons == ["tool apply_config requires a verified user: bearer token expired"]
}

test_irreversible_denied_even_for_operator if {
	d := authz.decision with input as call_for(operator, alice, "delete_namespace")
	not d.allow
	d.rule_ids == ["tools.irreversible"]
}

test_unknown_tool_denied if {
	d := authz.decision with input as call(operator, "rm_rf")
	not d.allow
	"tools.unknown" in d.rule_ids
}

test_workload_without_role_denied if {
	d := authz.decision with input as call(intruder, "inspect_sandbox")
	not d.allow
	d.rule_ids == ["identity.no_role"]
}

test_protocol_methods_need_a_role if {
	r := authz.decision with input as rpc(reader, "tools/list")
	r.allow
	o := authz.decision with input as rpc(operator, "initialize")
	o.allow
	i := authz.decision with input as rpc(intruder, "tools/list")
	not i.allow
}

test_unknown_methods_denied if {
	d := authz.decision with input as rpc(operator, "resources/list")
	not d.allow
	d.rule_ids == ["method.unknown"]
}

test_decision_always_defined if {
	d := authz.decision with input as {}
	not d.allow
}
