# Unit tests for the default policy, run by `portcullis policy test` (regorus) and by
# tests/opa/cross_check.py (real OPA) against the example catalog. The JSON cases in
# policies/cases cover each rule with whole inputs; these tests cover the pieces, data
# variations (`with data...`) and the invariant that tools/list and tools/call agree.
package portcullis.authz_test

import rego.v1

import data.portcullis.authz

td := "spiffe://portcullis.local"

workload(ns, sa) := {"spiffe_id": sprintf("%s/ns/%s/sa/%s", [td, ns, sa]), "trust_domain": "portcullis.local", "path": sprintf("/ns/%s/sa/%s", [ns, sa]), "namespace": ns, "service_account": sa}

reader := workload("agents", "reader")

operator := workload("agents", "operator")

intruder := workload("agents", "intruder")

console := workload("agents", "console")

dana := {"sub": "carol", "iss": "https://idp.portcullis.local", "groups": ["approvers"], "claims": {}}

ci := workload("ci", "deploy")

alice := {"sub": "alice", "iss": "https://idp.portcullis.local", "groups": ["sre"], "claims": {}}

bob := {"sub": "bob", "iss": "https://idp.portcullis.local", "groups": ["dev"], "claims": {}}

carol := {"sub": "carol", "iss": "https://idp.portcullis.local", "groups": ["sre", "oncall"], "claims": {"break_glass_incident": "INC-1"}}

monday_10 := {"unix": 1790000000, "weekday": "Monday", "hour": 10, "minute": 0}

at(weekday, hour, minute) := {"unix": 1790000000, "weekday": weekday, "hour": hour, "minute": minute}

call(who, user, tool, args, time) := {
	"method": "tools/call", "tool": tool, "arguments": args, "plan_hash": "sha256:00",
	"workload": who, "user": user, "user_error": no_user_error(user), "time": time,
}

rpc(who, user, method, time) := {
	"method": method, "tool": null, "arguments": null, "plan_hash": null,
	"workload": who, "user": user, "user_error": no_user_error(user), "time": time,
}

no_user_error(user) := null if user != null
else := "no bearer token"

# --- SPIFFE patterns -------------------------------------------------------------------------

test_spiffe_pattern_exact if {
	authz.spiffe_match("spiffe://td/ns/a/sa/b", "spiffe://td/ns/a/sa/b")
	not authz.spiffe_match("spiffe://td/ns/a/sa/b", "spiffe://td/ns/a/sa/bb")
}

test_spiffe_pattern_star_is_one_segment if {
	authz.spiffe_match("spiffe://td/ns/ci/sa/*", "spiffe://td/ns/ci/sa/build")
	not authz.spiffe_match("spiffe://td/ns/ci/sa/*", "spiffe://td/ns/ci/sa/build/extra")
	not authz.spiffe_match("spiffe://td/ns/ci/sa/*", "spiffe://td/ns/ci/sa/")
	not authz.spiffe_match("spiffe://td/ns/*/sa/x", "spiffe://other/ns/ci/sa/x")
	authz.spiffe_match("spiffe://td/ns/*/sa/x", "spiffe://td/ns/ci/sa/x")
}

test_spiffe_pattern_star_is_not_a_prefix_glob if {
	not authz.spiffe_match("spiffe://td/ns/ci/sa/build-*", "spiffe://td/ns/ci/sa/build-1")
}

# --- grants and risk tiers -------------------------------------------------------------------

test_reader_may_call_low_query_tool if {
	d := authz.decision with input as call(reader, null, "inspect_sandbox", {}, monday_10)
	d.allow
	not d.require_approval
	d.rule_ids == ["tools.role.reader"]
}

test_reader_may_not_apply if {
	d := authz.decision with input as call(reader, null, "apply_config", {"name": "a", "content": "b"}, monday_10)
	not d.allow
	d.rule_ids == ["tools.not_permitted"]
	d.reasons == ["workload spiffe://portcullis.local/ns/agents/sa/reader (roles: reader) may not call apply tool apply_config (risk medium)"]
}

test_medium_is_for_operators_even_with_a_broad_grant if {
	roles := object.union(data.portcullis.roles, {"reader": object.union(data.portcullis.roles.reader, {"grants": [{"kinds": ["query"], "max_risk": "medium"}]})})
	d := authz.decision with input as call(reader, null, "tail_logs", {"namespace": "a", "pod": "b"}, monday_10)
		with data.portcullis.roles as roles
	d.rule_ids == ["risk.operators_only"]
	u := authz.decision with input as call(operator, bob, "tail_logs", {"namespace": "a", "pod": "b"}, monday_10)
		with data.portcullis.roles as roles
	u.rule_ids == ["risk.operators_only"]
	u.reasons == ["tool tail_logs is medium risk: only operators may call it, and user bob is not one"]
}

test_explicit_tool_grant_still_meets_the_tier if {
	roles := object.union(data.portcullis.roles, {"ci": object.union(data.portcullis.roles.ci, {"grants": [{"tools": ["tail_logs"]}]})})
	d := authz.decision with input as call(ci, null, "tail_logs", {"namespace": "a", "pod": "b"}, monday_10)
		with data.portcullis.roles as roles
	d.rule_ids == ["risk.operators_only"]
}

test_tiers_are_data if {
	tiers := object.union(data.portcullis.risk_tiers, {"high": {"operators_only": true, "requires_user": true, "requires_approval": false, "requires_break_glass": false}})
	d := authz.decision with input as call(operator, alice, "restart_deployment", {"namespace": "a", "deployment": "b"}, monday_10)
		with data.portcullis.risk_tiers as tiers
	d.allow
	not d.require_approval
}

test_high_risk_needs_approval if {
	d := authz.decision with input as call(operator, alice, "restart_deployment", {"namespace": "a", "deployment": "b"}, monday_10)
	d.allow
	d.require_approval
	"risk.approval" in d.rule_ids
	"tool restart_deployment is high risk: approval is required before it runs" in d.reasons
}

test_unknown_tool_denied if {
	d := authz.decision with input as call(operator, alice, "rm_rf", {}, monday_10)
	not d.allow
	d.rule_ids == ["tools.unknown"]
}

test_workload_without_role_denied if {
	d := authz.decision with input as call(intruder, alice, "inspect_sandbox", {}, monday_10)
	not d.allow
	d.rule_ids == ["identity.no_role"]
}

test_protocol_methods_need_a_role if {
	r := authz.decision with input as rpc(reader, null, "tools/list", monday_10)
	r.allow
	o := authz.decision with input as rpc(operator, null, "initialize", monday_10)
	o.allow
	i := authz.decision with input as rpc(intruder, null, "tools/list", monday_10)
	not i.allow
}

test_unknown_methods_denied if {
	# A method the server sends (sampling/createMessage) is not one a client may send.
	every m in ["sampling/createMessage", "tasks/list", "resources/delete"] {
		d := authz.decision with input as rpc(operator, alice, m, monday_10) with data.portcullis.roles as granted_roles
		not d.allow
		d.rule_ids == ["method.unknown"]
	}
}

test_decision_always_defined if {
	d := authz.decision with input as {}
	not d.allow
}

# --- users -----------------------------------------------------------------------------------

test_apply_needs_a_user_and_says_why if {
	i := call(operator, null, "apply_config", {"name": "a", "content": "b"}, monday_10)
	d := authz.decision with input as object.union(i, {"user_error": "bearer token signature is invalid"})
	d.rule_ids == ["user.required"]
	d.reasons == ["tool apply_config requires a verified user: bearer token signature is invalid"]
}

test_user_roles_must_permit_too if {
	d := authz.decision with input as call(operator, bob, "apply_config", {"name": "a", "content": "b"}, monday_10)
	d.rule_ids == ["user.not_permitted"]
	a := authz.decision with input as call(operator, alice, "apply_config", {"name": "a", "content": "b"}, monday_10)
	a.allow
	a.rule_ids == ["tools.role.operator", "user.role.operator"]
}

test_user_required_kinds_are_data if {
	d := authz.decision with input as call(operator, null, "apply_config", {"name": "a", "content": "b"}, monday_10)
		with data.portcullis.user_required_kinds as []
	d.allow
}

# --- break-glass -----------------------------------------------------------------------------

test_break_glass_allows_irreversible if {
	d := authz.decision with input as call(operator, carol, "delete_namespace", {"namespace": "team-a"}, monday_10)
	d.allow
	"risk.break_glass" in d.rule_ids
	"break-glass: user carol declared INC-1" in d.reasons
}

test_break_glass_needs_group_and_claim if {
	no_claim := object.union(object.remove(carol, ["claims"]), {"claims": {}})
	d1 := authz.decision with input as call(operator, no_claim, "delete_namespace", {"namespace": "team-a"}, monday_10)
	d1.rule_ids == ["risk.irreversible"]
	not_oncall := object.union(object.remove(carol, ["groups"]), {"groups": ["sre"]})
	d2 := authz.decision with input as call(operator, not_oncall, "delete_namespace", {"namespace": "team-a"}, monday_10)
	d2.rule_ids == ["risk.irreversible"]
}

test_break_glass_claim_name_is_data if {
	d := authz.decision with input as call(operator, carol, "delete_namespace", {"namespace": "team-a"}, monday_10)
		with data.portcullis.break_glass.claim as "incident"
	d.rule_ids == ["risk.irreversible"]
}

# --- change windows --------------------------------------------------------------------------

deploy(time) := call(operator, alice, "deploy_release", {"namespace": "team-a", "release": "web", "version": "v1.0.0", "environment": "staging"}, time)

deploy_allowed(time) if {
	d := authz.decision with input as deploy(time)
	d.allow
}

test_window_edges if {
	deploy_allowed(at("Monday", 9, 0))
	not deploy_allowed(at("Monday", 8, 59))
	deploy_allowed(at("Thursday", 15, 59))
	not deploy_allowed(at("Thursday", 16, 0))
	not deploy_allowed(at("Friday", 12, 0))
}

test_window_closed_reason if {
	d := authz.decision with input as deploy(at("Saturday", 7, 5))
	d.rule_ids == ["window.closed"]
	d.reasons == ["tool deploy_release may only be called inside its change window (release-hours: Monday, Tuesday, Wednesday, Thursday 09:00-16:00 UTC); it is Saturday 07:05 UTC"]
}

test_any_of_several_windows if {
	windows := [
		{"id": "night", "tools": ["deploy_release"], "days": ["Saturday"], "start": "00:00", "end": "06:00"},
		{"id": "late", "tools": ["deploy_release"], "days": ["Saturday"], "start": "22:00", "end": "24:00"},
	]
	late := authz.decision with input as deploy(at("Saturday", 23, 59)) with data.portcullis.change_windows as windows
	late.allow
	d := authz.decision with input as deploy(at("Saturday", 5, 0)) with data.portcullis.change_windows as windows
	d.allow
	"window.open" in d.rule_ids
	"inside change window night; it is Saturday 05:00 UTC" in d.reasons
	noon := authz.decision with input as deploy(at("Saturday", 12, 0)) with data.portcullis.change_windows as windows
	not noon.allow
}

test_windows_read_input_time_only if {
	# The same call, two injected times: the decision follows input.time, not the clock.
	a := authz.decision with input as deploy(at("Tuesday", 11, 0))
	b := authz.decision with input as deploy(at("Tuesday", 17, 0))
	a.allow
	not b.allow
}

test_cacheable_only_when_time_is_not_read if {
	# A decision that does not depend on input.time may be reused for the same input.
	allowed := authz.decision with input as call(reader, null, "word_count", {"text": "a"}, monday_10)
	allowed.cacheable
	denied := authz.decision with input as call(reader, null, "apply_config", {}, monday_10)
	denied.cacheable
	ping := authz.decision with input as rpc(reader, null, "ping", monday_10)
	ping.cacheable

	# A windowed tool reads the time, allowed or not; so does tools/list while windows exist.
	inside := authz.decision with input as deploy(at("Tuesday", 11, 0))
	inside.allow
	not inside.cacheable
	outside := authz.decision with input as deploy(at("Tuesday", 17, 0))
	not outside.cacheable
	list := authz.decision with input as rpc(operator, alice, "tools/list", monday_10)
	not list.cacheable
	no_windows := authz.decision with input as rpc(operator, alice, "tools/list", monday_10) with data.portcullis.change_windows as []
	no_windows.cacheable
}

# --- argument rules --------------------------------------------------------------------------

test_protected_namespaces if {
	d := authz.decision with input as call(operator, carol, "delete_namespace", {"namespace": "kube-system"}, monday_10)
	d.rule_ids == ["arguments.protected_namespace"]
	ok := authz.decision with input as call(operator, carol, "delete_namespace", {"namespace": "kube-system"}, monday_10)
		with data.portcullis.arguments.protected_namespaces.prefixes as []
	ok.allow
}

test_wildcards_in_resource_names if {
	d := authz.decision with input as call(reader, null, "list_pods", {"namespace": "team-*"}, monday_10)
	d.rule_ids == ["arguments.wildcard"]
}

test_production_only_for_operators if {
	d := authz.decision with input as call(reader, null, "list_pods", {"namespace": "prod-pay"}, monday_10)
	d.rule_ids == ["arguments.production"]
	o := authz.decision with input as call(operator, null, "list_pods", {"namespace": "prod-pay"}, monday_10)
	o.allow
}

# --- tools/list agrees with tools/call -------------------------------------------------------

callers := [
	[reader, null, monday_10],
	[reader, alice, monday_10],
	[operator, null, monday_10],
	[operator, alice, monday_10],
	[operator, alice, at("Friday", 10, 0)],
	[operator, bob, monday_10],
	[operator, carol, monday_10],
	[ci, null, monday_10],
	[intruder, alice, monday_10],
]

listed_for(c) := d.visible_tools if {
	d := authz.decision with input as rpc(c[0], c[1], "tools/list", c[2])
}

# For every caller: a tool is listed exactly when a call to it (with arguments no argument rule
# refuses) is allowed.
test_visible_tools_match_call_decisions if {
	every c in callers {
		listed := listed_for(c)
		every t, _ in data.portcullis.catalog.tools {
			d := authz.decision with input as call(c[0], c[1], t, {}, c[2])
			d.allow == (t in listed)
		}
	}
}

test_visible_tools_for_three_identities if {
	r := authz.decision with input as rpc(reader, null, "tools/list", monday_10)
	r.visible_tools == ["inspect_sandbox", "list_pods", "watch_rollout", "word_count"]
	o := authz.decision with input as rpc(operator, alice, "tools/list", monday_10)
	o.visible_tools == ["apply_config", "apply_release", "deploy_release", "inspect_sandbox", "list_pods", "plan_release", "restart_deployment", "tail_logs", "watch_rollout", "word_count"]
	i := authz.decision with input as rpc(intruder, null, "tools/list", monday_10)
	i.visible_tools == []
}

# Approvals are decided by people: a user in group approvers, through the approval console's
# workload. The console alone (no user), an agent's workload carrying an approver's token, and a
# user without the group are each denied. (The runner refuses the requester's own user.)
test_only_approvers_from_the_console_decide_approvals if {
	decide := {"id": "apr_00000000000000000000000000000000", "decision": "approve"}
	ok := authz.decision with input as call(console, dana, "approvals_decide", decide, monday_10)
	ok.allow
	not ok.require_approval
	no_user := authz.decision with input as call(console, null, "approvals_decide", decide, monday_10)
	not no_user.allow
	"user.required" in no_user.rule_ids
	agent := authz.decision with input as call(operator, dana, "approvals_decide", decide, monday_10)
	not agent.allow
	"tools.not_permitted" in agent.rule_ids
	not_approver := authz.decision with input as call(console, alice, "approvals_decide", decide, monday_10)
	not not_approver.allow
	"user.not_permitted" in not_approver.rule_ids
	l := authz.decision with input as rpc(console, dana, "tools/list", monday_10)
	l.visible_tools == ["approvals_decide", "approvals_list", "approvals_show"]
}

plan_made(tool, created) := {"artifact": "sha256:aa", "tool": tool, "requester": {"workload": "spiffe://portcullis.local/ns/agents/sa/operator"}, "created_at": created, "expires_at": created + 3600}

# The runner asks plan_decision about the plan an apply cites: the team's own rules on it.
test_plan_rules_owner_and_age if {
	apply := call(operator, alice, "apply_release", {}, monday_10)
	fresh := authz.plan_decision with input as object.union(apply, {"plan": plan_made("plan_release", 1790000000 - 60)})
	fresh.allow
	fresh.rule_ids == ["plan.allowed"]
	old := authz.plan_decision with input as object.union(apply, {"plan": plan_made("plan_release", 1790000000 - 7200)})
	not old.allow
	old.rule_ids == ["plan.age"]
	other_team := authz.plan_decision with input as object.union(apply, {"plan": plan_made("plan_release", 1790000000 - 60)})
		with data.portcullis.catalog.tools.plan_release.owner as "platform-team"
	not other_team.allow
	other_team.rule_ids == ["plan.owner"]
	none := authz.plan_decision with input as apply
	not none.allow
	none.rule_ids == ["plan.missing"]
}

# --- other MCP methods -----------------------------------------------------------------------

# mcp(who, user, method, members): an input for a method other than tools/call, with the
# members the gateway adds for it (resource, prompt, completion, log_level, response).
mcp(who, user, method, members) := object.union(rpc(who, user, method, monday_10), members)

read(who, user, uri) := mcp(who, user, "resources/read", {"resource": {"uri": uri}})

answer(who, to, error) := mcp(who, null, "response", {"response": {"to": to, "error": error}})

complete_prompt(who, user, name) := mcp(who, user, "completion/complete", {"completion": {"ref": {"type": "ref/prompt", "name": name}, "argument": {"name": "a", "value": "b"}}})

# The shipped roles plus grants for the other methods: the reader some, the operator all.
granted_roles := object.union(data.portcullis.roles, {
	"reader": object.union(data.portcullis.roles.reader, {"grants": [
		{"kinds": ["query"], "max_risk": "low"},
		{"resources": ["file:///docs/", "db://reports/"]},
		{"resources": ["file:///docs/live/"], "subscribe": true},
		{"prompts": ["summarize"]},
		{"completion": true},
		{"log_levels": ["warning", "error"]},
		{"responses": ["roots/list"]},
	]}),
	"operator": object.union(data.portcullis.roles.operator, {"grants": [
		{"kinds": ["query", "plan", "apply"], "max_risk": "irreversible"},
		{"resources": [""], "subscribe": true},
		{"prompts": ["*"]},
		{"completion": true},
		{"log_levels": ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]},
		{"responses": ["roots/list", "sampling/createMessage", "elicitation/create"]},
		{"listen": true},
	]}),
})

granted(i) := d if {
	d := authz.decision with input as i with data.portcullis.roles as granted_roles
}

test_session_methods_need_only_a_role if {
	every m in ["server/discover", "notifications/cancelled", "notifications/progress", "notifications/roots/list_changed"] {
		r := authz.decision with input as rpc(reader, null, m, monday_10)
		r.allow
		r.rule_ids == ["protocol.member"]
		i := authz.decision with input as rpc(intruder, null, m, monday_10)
		not i.allow
		i.rule_ids == ["identity.no_role"]
	}
}

test_shipped_roles_grant_none_of_the_other_methods if {
	every c in [
		[read(operator, alice, "file:///etc/hosts"), "resources.not_granted"],
		[mcp(operator, alice, "resources/subscribe", {"resource": {"uri": "file:///a"}}), "resources.not_granted"],
		[mcp(operator, alice, "prompts/get", {"prompt": {"name": "p", "arguments": null}}), "prompts.not_granted"],
		[complete_prompt(operator, alice, "p"), "completion.not_granted"],
		[mcp(operator, alice, "logging/setLevel", {"log_level": "debug"}), "logging.not_granted"],
		[mcp(operator, alice, "subscriptions/listen", {}), "subscriptions.not_granted"],
		[answer(operator, "sampling/createMessage", false), "responses.not_granted"],
	] {
		d := authz.decision with input as c[0]
		not d.allow
		d.rule_ids == [c[1]]
		d.cacheable
	}
}

test_resources_by_uri_prefix if {
	ok := granted(read(reader, null, "file:///docs/guide.md"))
	ok.allow
	ok.rule_ids == ["resources.role.reader"]
	ok.reasons == ["workload spiffe://portcullis.local/ns/agents/sa/reader may read resource file:///docs/guide.md as reader"]
	ok.cacheable
	no := granted(read(reader, null, "file:///etc/shadow"))
	not no.allow
	no.rule_ids == ["resources.not_granted"]
	no.reasons == ["workload spiffe://portcullis.local/ns/agents/sa/reader (roles: reader) may not read resource file:///etc/shadow"]
}

test_subscribe_needs_a_subscribe_grant if {
	every m in ["resources/subscribe", "resources/unsubscribe"] {
		live := granted(mcp(reader, null, m, {"resource": {"uri": "file:///docs/live/status"}}))
		live.allow
		# Readable is not enough.
		docs := granted(mcp(reader, null, m, {"resource": {"uri": "file:///docs/guide.md"}}))
		not docs.allow
		docs.rule_ids == ["resources.not_granted"]
	}
}

test_a_user_narrows_resources if {
	# bob (group dev) holds reader: the operator workload acting for him reads what both may.
	ok := granted(read(operator, bob, "file:///docs/guide.md"))
	ok.allow
	ok.rule_ids == ["resources.role.operator", "user.role.reader"]
	no := granted(read(operator, bob, "file:///etc/hosts"))
	not no.allow
	no.rule_ids == ["user.not_permitted"]
	no.reasons == ["user bob (roles: reader) may not read resource file:///etc/hosts"]
	# The workload is checked first: a user cannot widen what it may read.
	w := granted(read(reader, alice, "file:///etc/hosts"))
	w.rule_ids == ["resources.not_granted"]
}

test_missing_or_malformed_members_are_denied_with_a_reason if {
	d := granted(mcp(operator, null, "resources/read", {}))
	not d.allow
	d.reasons == ["workload spiffe://portcullis.local/ns/agents/sa/operator (roles: operator) may not read resource (no uri)"]
	n := granted(mcp(operator, null, "resources/read", {"resource": {"uri": 7}}))
	not n.allow
	p := granted(mcp(operator, null, "prompts/get", {"prompt": null}))
	p.reasons == ["workload spiffe://portcullis.local/ns/agents/sa/operator (roles: operator) may not get prompt (no name)"]
	r := granted(mcp(operator, null, "response", {}))
	r.rule_ids == ["responses.not_granted"]
	r.reasons == ["workload spiffe://portcullis.local/ns/agents/sa/operator (roles: operator) may not answer the server's (unknown) request"]
}

test_a_malformed_grant_grants_nothing if {
	roles := object.union(data.portcullis.roles, {"reader": object.union(data.portcullis.roles.reader, {"grants": [{"resources": "file:///"}, {"prompts": "summarize"}, "everything"]})})
	d := authz.decision with input as read(reader, null, "file:///a") with data.portcullis.roles as roles
	not d.allow
	p := authz.decision with input as mcp(reader, null, "prompts/get", {"prompt": {"name": "summarize"}}) with data.portcullis.roles as roles
	not p.allow
	l := authz.decision with input as rpc(reader, null, "resources/list", monday_10) with data.portcullis.roles as roles
	l.visible_resources == []
}

test_prompts_by_name_or_all if {
	ok := granted(mcp(reader, null, "prompts/get", {"prompt": {"name": "summarize", "arguments": {"text": "x"}}}))
	ok.allow
	ok.rule_ids == ["prompts.role.reader"]
	no := granted(mcp(reader, null, "prompts/get", {"prompt": {"name": "triage", "arguments": null}}))
	no.rule_ids == ["prompts.not_granted"]
	no.reasons == ["workload spiffe://portcullis.local/ns/agents/sa/reader (roles: reader) may not get prompt triage"]
	any := granted(mcp(operator, null, "prompts/get", {"prompt": {"name": "triage", "arguments": null}}))
	any.allow
	narrowed := granted(mcp(operator, bob, "prompts/get", {"prompt": {"name": "triage", "arguments": null}}))
	narrowed.rule_ids == ["user.not_permitted"]
}

test_completion_needs_its_grant_and_the_ref if {
	ok := granted(complete_prompt(reader, null, "summarize"))
	ok.allow
	ok.rule_ids == ["completion.role.reader"]
	other := granted(complete_prompt(reader, null, "triage"))
	other.rule_ids == ["completion.not_granted"]
	other.reasons == ["workload spiffe://portcullis.local/ns/agents/sa/reader (roles: reader) may not complete arguments of prompt triage (the prompt or resource is not granted)"]
	res := granted(mcp(reader, null, "completion/complete", {"completion": {"ref": {"type": "ref/resource", "uri": "db://reports/{quarter}"}, "argument": {"name": "quarter", "value": "q"}}}))
	res.allow
	tmpl := granted(mcp(reader, null, "completion/complete", {"completion": {"ref": {"type": "ref/resource", "uri": "file:///{path}"}, "argument": {"name": "path", "value": "e"}}}))
	not tmpl.allow
	# A prompt grant alone does not let a role complete.
	roles := object.union(granted_roles, {"reader": object.union(data.portcullis.roles.reader, {"grants": [{"prompts": ["summarize"]}]})})
	bare := authz.decision with input as complete_prompt(reader, null, "summarize") with data.portcullis.roles as roles
	bare.reasons == ["workload spiffe://portcullis.local/ns/agents/sa/reader (roles: reader) may not complete arguments of prompt summarize (no completion grant)"]
}

test_completion_from_two_roles if {
	# One role holds the completion grant, another the prompt: both are named as why.
	roles := object.union(granted_roles, {
		"reader": object.union(data.portcullis.roles.reader, {"grants": [{"prompts": ["summarize"]}]}),
		"helper": {"workloads": ["spiffe://portcullis.local/ns/agents/sa/reader"], "groups": [], "operator": false, "grants": [{"completion": true}]},
	})
	d := authz.decision with input as complete_prompt(reader, null, "summarize") with data.portcullis.roles as roles
	d.allow
	d.rule_ids == ["completion.role.helper", "completion.role.reader"]
}

test_log_levels_are_granted_one_by_one if {
	ok := granted(mcp(reader, null, "logging/setLevel", {"log_level": "error"}))
	ok.allow
	ok.rule_ids == ["logging.role.reader"]
	no := granted(mcp(reader, null, "logging/setLevel", {"log_level": "debug"}))
	no.rule_ids == ["logging.not_granted"]
	no.reasons == ["workload spiffe://portcullis.local/ns/agents/sa/reader (roles: reader) may not set the server's log level to debug"]
}

test_answers_by_the_method_answered if {
	ok := granted(answer(reader, "roots/list", false))
	ok.allow
	ok.rule_ids == ["responses.role.reader"]
	no := granted(answer(reader, "sampling/createMessage", false))
	no.rule_ids == ["responses.not_granted"]
	no.reasons == ["workload spiffe://portcullis.local/ns/agents/sa/reader (roles: reader) may not answer the server's sampling/createMessage request"]
	op := granted(answer(operator, "elicitation/create", false))
	op.allow
}

test_any_role_holder_may_decline_a_server_request if {
	d := authz.decision with input as answer(reader, "sampling/createMessage", true)
	d.allow
	d.rule_ids == ["responses.error"]
	d.reasons == ["workload spiffe://portcullis.local/ns/agents/sa/reader declines or fails the server's sampling/createMessage request"]
	i := authz.decision with input as answer(intruder, "sampling/createMessage", true)
	i.rule_ids == ["identity.no_role"]
}

test_listening_is_granted if {
	ok := granted(mcp(operator, null, "subscriptions/listen", {}))
	ok.allow
	ok.rule_ids == ["subscriptions.role.operator"]
	no := granted(mcp(reader, null, "subscriptions/listen", {}))
	no.rule_ids == ["subscriptions.not_granted"]
}

test_lists_are_trimmed_to_grants if {
	every m in ["resources/list", "resources/templates/list"] {
		r := granted(rpc(reader, null, m, monday_10))
		r.allow
		r.rule_ids == ["protocol.member"]
		r.visible_resources == ["db://reports/", "file:///docs/", "file:///docs/live/"]
		r.cacheable
		not r.visible_tools
		o := granted(rpc(operator, null, m, monday_10))
		o.visible_resources == [""]
		ob := granted(rpc(operator, bob, m, monday_10))
		ob.visible_resources == ["db://reports/", "file:///docs/", "file:///docs/live/"]
		i := granted(rpc(intruder, null, m, monday_10))
		not i.allow
		i.visible_resources == []
	}
	p := granted(rpc(reader, null, "prompts/list", monday_10))
	p.allow
	p.visible_prompts == ["summarize"]
	not p.visible_resources
	o := granted(rpc(operator, null, "prompts/list", monday_10))
	o.visible_prompts == ["*"]
	ob := granted(rpc(operator, bob, "prompts/list", monday_10))
	ob.visible_prompts == ["summarize"]
	ra := granted(rpc(reader, alice, "prompts/list", monday_10))
	ra.visible_prompts == ["summarize"]
	i := granted(rpc(intruder, null, "prompts/list", monday_10))
	i.visible_prompts == []
	shipped := authz.decision with input as rpc(operator, alice, "prompts/list", monday_10)
	shipped.allow
	shipped.visible_prompts == []
}

test_prefix_meet_keeps_the_longer_of_each_overlap if {
	authz.meet_prefixes({"file:///", "db://"}, {"file:///docs/", "s3://"}) == {"file:///docs/"}
	authz.meet_prefixes({""}, {"a/", "b/"}) == {"a/", "b/"}
	authz.meet_prefixes({"a/"}, {"b/"}) == set()
}

uris := ["file:///docs/guide.md", "file:///docs/live/status", "db://reports/q1", "file:///etc/hosts", "", "s3://bucket/key"]

prompt_names := ["summarize", "triage"]

# true or false, never undefined, so that it can be compared with a decision's allow.
visible_to(prefixes, uri) := count([p | some p in prefixes; startswith(uri, p)]) > 0

shown_prompt(visible, name) := count([n | some n in visible; n in {"*", name}]) > 0

# For every caller: a resource is listed exactly when reading it is allowed, and a prompt
# exactly when getting it is.
test_visible_resources_and_prompts_match_decisions if {
	every c in callers {
		rl := granted(rpc(c[0], c[1], "resources/list", c[2]))
		every uri in uris {
			d := granted(read(c[0], c[1], uri))
			d.allow == visible_to(rl.visible_resources, uri)
		}
		pl := granted(rpc(c[0], c[1], "prompts/list", c[2]))
		every name in prompt_names {
			d := granted(mcp(c[0], c[1], "prompts/get", {"prompt": {"name": name, "arguments": null}}))
			d.allow == shown_prompt(pl.visible_prompts, name)
		}
	}
}

# --- placements ------------------------------------------------------------------------------

eu := {"backend": "kubernetes", "context": "prod-eu", "node_selector": {"topology.kubernetes.io/region": "eu-west-1"}}

test_placement_by_tool_then_by_risk if {
	places := {"tools": {"word_count": eu}, "risks": {"low": {"backend": "local"}}}
	by_tool := authz.decision with input as call(reader, null, "word_count", {"text": "a"}, monday_10) with data.portcullis.placements as places
	by_tool.allow
	by_tool.placement == eu
	by_risk := authz.decision with input as call(reader, null, "list_pods", {"namespace": "team-a"}, monday_10) with data.portcullis.placements as places
	by_risk.placement == {"backend": "local"}
}

test_a_call_placed_nowhere_has_no_placement if {
	# The tool's catalog default then applies. (A bundle without data.portcullis.placements at
	# all: core/tests/policies.rs, which can take the key out.)
	d := authz.decision with input as call(reader, null, "word_count", {"text": "a"}, monday_10)
	d.allow
	not d.placement
	none := authz.decision with input as call(reader, null, "inspect_sandbox", {}, monday_10) with data.portcullis.placements as {}
	none.allow
	not none.placement
}

test_only_allowed_calls_are_placed if {
	places := {"tools": {"word_count": eu, "apply_config": eu}}
	denied := authz.decision with input as call(reader, null, "apply_config", {"name": "x", "content": "y"}, monday_10) with data.portcullis.placements as places
	not denied.allow
	not denied.placement
	list := authz.decision with input as rpc(reader, null, "tools/list", monday_10) with data.portcullis.placements as places
	not list.placement
}

test_shipped_placements_keep_jobs_local if {
	sandbox := authz.decision with input as call(reader, null, "inspect_sandbox", {}, monday_10)
	sandbox.placement == {"backend": "local"}
	glass := authz.decision with input as call(operator, carol, "delete_namespace", {"namespace": "team-a"}, monday_10)
	glass.allow
	glass.placement == {"backend": "local"}
	every p in data.portcullis.placements.tools {
		p.backend == "local"
	}
	every p in data.portcullis.placements.risks {
		p.backend == "local"
	}
}
