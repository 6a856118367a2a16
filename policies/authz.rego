# Portcullis default policy: least privilege by workload identity AND user identity.
#
# Everything is data (policies/data.json, under data.portcullis); the catalog arrives as
# data.portcullis.catalog.tools ({name: {kind, risk, owner}}). Everything not allowed is denied.
#
#   roles          bind to workloads by SPIFFE ID pattern and to users by group; a grant names
#                  tool kinds up to a max risk, or tools by name, or (other MCP methods)
#                  resource URI prefixes, prompts, completion, log levels, answers to server
#                  requests, listening; "operator" marks operators
#   risk_tiers     per catalog risk: operators only, user required, approval, break-glass
#   user_required_kinds   tool kinds that always need a verified user
#   break_glass    a user group plus a non-empty claim that unlocks irreversible tools
#   change_windows tools callable only inside weekday + HH:MM (UTC) windows, on input.time
#   arguments      wildcards in resource names, protected namespaces, production targets
#   placements     where an allowed call's job runs, by tool or by risk (else the catalog's)
#
# A tools/call needs the workload's roles to permit the tool AND, when a user is present or the
# tool needs one, the user's roles too. tools/list gets visible_tools: the tools for which the
# very same caller-level checks (tool_denials) find nothing; only argument rules are left out,
# because some arguments would pass them. Time comes from input.time only, never the clock.
#
# The other MCP methods: protocol and list methods need only a role (lists are trimmed to
# visible_resources / visible_prompts); resources, prompts, completion, logging, listening and
# answers to server requests need a grant, from the workload and from the user alike.
#
# Portable Rego: the same results under regorus (in the filter) and OPA (tests/opa). The filter's
# regorus has no glob/regex/time builtins, hence spiffe_match below; sprintf formats strings only.
package portcullis.authz

import rego.v1

catalog := data.portcullis.catalog.tools

# Methods every role holder may send: the session's own plumbing, and the lists (each trimmed
# to what the caller may use). Methods a grant decides are grant_methods.
protocol_methods := {
	"initialize", "notifications/initialized", "ping", "server/discover",
	"notifications/cancelled", "notifications/progress", "notifications/roots/list_changed",
	"tools/list", "resources/list", "resources/templates/list", "prompts/list",
}

risk_rank := {"low": 0, "medium": 1, "high": 2, "irreversible": 3}

# --- who is calling -------------------------------------------------------------------------

# SPIFFE ID patterns are compared segment by segment ("/"-separated): a segment that is exactly
# "*" matches any one non-empty segment, any other segment only itself. This is what
# glob.match(pattern, ["/"], id) does for such patterns.
spiffe_match(pattern, id) if {
	p := split(pattern, "/")
	s := split(id, "/")
	count(p) == count(s)
	every i, seg in p {
		segment_match(seg, s[i])
	}
}

segment_match(pat, seg) if {
	pat == "*"
	seg != ""
}

segment_match(pat, seg) if {
	pat != "*"
	pat == seg
}

workload_id := input.workload.spiffe_id if is_string(input.workload.spiffe_id)

workload_name := workload_id if workload_id
else := "(no workload identity)"

# Exact patterns are the common case and cost one comparison; only patterns with a "*" segment
# are split and compared segment by segment. (Rules after the caller-level section read the
# roles as workload_roles and user_roles, from caller_facts.)
caller_workload_roles contains name if {
	some name, role in data.portcullis.roles
	workload_id in role.workloads
}

caller_workload_roles contains name if {
	some name, role in data.portcullis.roles
	some pattern in role.workloads
	contains(pattern, "*")
	spiffe_match(pattern, workload_id)
}

# A user is only ever a verified token's claims; anything else (null) is no user.
has_user if is_object(input.user)

user_name := input.user.sub if {
	has_user
	is_string(input.user.sub)
} else := "(no sub)"

user_error := input.user_error if is_string(input.user_error)
else := "no verified user"

user_groups contains g if {
	has_user
	is_array(input.user.groups)
	some g in input.user.groups
	is_string(g)
}

caller_user_roles contains name if {
	some name, role in data.portcullis.roles
	some g in role.groups
	g in user_groups
}

is_operator(roles) if {
	some r in roles
	data.portcullis.roles[r].operator == true
}

role_list(roles) := concat(", ", sort(roles)) if count(roles) > 0
else := "none"

break_glass if {
	has_user
	some g in data.portcullis.break_glass.groups
	g in user_groups
	is_object(input.user.claims)
	claim := input.user.claims[data.portcullis.break_glass.claim]
	is_string(claim)
	claim != ""
}

# --- what a role may call -------------------------------------------------------------------

grant_permits(grant, t) if {
	some name in grant.tools
	name == t
}

grant_permits(grant, t) if {
	catalog[t].kind in grant.kinds
	risk_rank[catalog[t].risk] <= risk_rank[grant.max_risk]
}

permits(roles, t) if {
	some r in roles
	some grant in data.portcullis.roles[r].grants
	grant_permits(grant, t)
}

tier(t) := data.portcullis.risk_tiers[catalog[t].risk]

requires_user(t) if catalog[t].kind in data.portcullis.user_required_kinds

requires_user(t) if tier(t).requires_user == true

# --- change windows (UTC, from input.time) --------------------------------------------------

pad2(n) := format_int(n, 10) if n >= 10
else := concat("", ["0", format_int(n, 10)])

valid_clock(n, limit) if {
	is_number(n)
	n >= 0
	n < limit
	round(n) == n
}

# "HH:MM", compared as strings with the windows' zero-padded start (inclusive) and end
# (exclusive, "24:00" for midnight). A window does not cross midnight: write two.
now_hhmm := concat(":", [pad2(input.time.hour), pad2(input.time.minute)]) if {
	valid_clock(input.time.hour, 24)
	valid_clock(input.time.minute, 60)
}

now_text := sprintf("it is %s %s UTC", [input.time.weekday, now_hhmm]) if is_string(input.time.weekday)
else := "the request carries no valid time"

windowed(t) if {
	some w in data.portcullis.change_windows
	t in w.tools
}

window_open(w) if {
	input.time.weekday in w.days
	now_hhmm >= w.start
	now_hhmm < w.end
}

open_windows(t) := {w.id | some w in data.portcullis.change_windows; t in w.tools; window_open(w)}

window_text(t) := concat("; ", sort({sprintf("%s: %s %s-%s UTC", [w.id, concat(", ", w.days), w.start, w.end]) |
	some w in data.portcullis.change_windows
	t in w.tools
}))

# --- caller-level checks: the same for tools/call and for tools/list's visible_tools ----------

# Denials are [rule id, reason]. The workload's own checks come first: when the workload may
# never call the tool, the user, the time or the arguments cannot change that.
workload_denials(t) := {d |
	not permits(caller_workload_roles, t)
	d := ["tools.not_permitted", sprintf("workload %s (roles: %s) may not call %s tool %s (risk %s)", [workload_name, role_list(caller_workload_roles), catalog[t].kind, t, catalog[t].risk])]
} | {d |
	permits(caller_workload_roles, t)
	tier(t).operators_only == true
	not is_operator(caller_workload_roles)
	d := ["risk.operators_only", sprintf("tool %s is %s risk: only operators may call it, and workload %s is not one", [t, catalog[t].risk, workload_name])]
}

user_denials(t) := {d |
	requires_user(t)
	not has_user
	d := ["user.required", sprintf("tool %s requires a verified user: %s", [t, user_error])]
} | {d |
	has_user
	not permits(caller_user_roles, t)
	d := ["user.not_permitted", sprintf("user %s (roles: %s) may not call %s tool %s (risk %s)", [user_name, role_list(caller_user_roles), catalog[t].kind, t, catalog[t].risk])]
} | {d |
	has_user
	permits(caller_user_roles, t)
	tier(t).operators_only == true
	not is_operator(caller_user_roles)
	d := ["risk.operators_only", sprintf("tool %s is %s risk: only operators may call it, and user %s is not one", [t, catalog[t].risk, user_name])]
}

break_glass_denials(t) := {d |
	tier(t).requires_break_glass == true
	not break_glass
	d := ["risk.irreversible", sprintf("tool %s is irreversible and no break-glass rule applies", [t])]
}

# Who of the caller is not an operator, as the production argument rule names them.
caller_non_operators contains sprintf("workload %s", [workload_name]) if not is_operator(caller_workload_roles)

caller_non_operators contains sprintf("user %s", [user_name]) if {
	has_user
	not is_operator(caller_user_roles)
}

# What allowed a call, as [rule id, reason] (inside a change window: window_allows too).
caller_allows(t) := {a |
	some r in caller_workload_roles
	some grant in data.portcullis.roles[r].grants
	grant_permits(grant, t)
	a := [concat(".", ["tools.role", r]), sprintf("workload %s may call %s as %s", [workload_name, t, r])]
} | {a |
	some r in caller_user_roles
	some grant in data.portcullis.roles[r].grants
	grant_permits(grant, t)
	a := [concat(".", ["user.role", r]), sprintf("user %s may call %s as %s", [user_name, t, r])]
} | {a |
	tier(t).requires_approval == true
	a := ["risk.approval", sprintf("tool %s is %s risk: approval is required before it runs", [t, catalog[t].risk])]
} | {a |
	tier(t).requires_break_glass == true
	break_glass
	a := ["risk.break_glass", sprintf("break-glass: user %s declared %s", [user_name, input.user.claims[data.portcullis.break_glass.claim]])]
}

# Everything above depends on the caller alone (workload, verified user, data), never on the
# call (method, tool, arguments) or the time: the caller's roles and, for every catalog tool,
# the caller-level denials and allows. The gateway evaluates caller_facts once per caller, with
# an input of only workload, user and user_error, keeps it while this bundle is loaded, and
# passes it back on each call as input.caller_facts; every rule below reads the caller through
# `facts`. Without input.caller_facts (OPA, the unit tests) facts is computed right here, to the
# same value, so the decisions are the same; only slower. A caller-level rule must not read
# input.method, input.tool, input.arguments or input.time: the gateway does not show them.
caller_facts := {
	"workload_roles": caller_workload_roles,
	"user_roles": caller_user_roles,
	"non_operators": caller_non_operators,
	"tools": {t: tool_facts(t) | some t, _ in catalog},
}

tool_facts(t) := object.union(checks, {"call": allowed_call(checks, t)}) if {
	checks := {"workload": workload_denials(t), "user": user_denials(t), "tier": break_glass_denials(t), "allows": caller_allows(t)}
}

# The whole decision on a tools/call of t when nothing but an argument rule could still deny
# it: the caller-level checks find nothing and no change window covers t. Else null. The
# decision's first branch answers such a call from here, after the argument rules alone.
allowed_call(checks, t) := object.union(allow_document(checks.allows, true), placement_member(t)) if {
	count((checks.workload | checks.user) | checks.tier) == 0
	not windowed(t)
} else := null

facts := input.caller_facts if is_object(input.caller_facts)
else := caller_facts

workload_roles := facts.workload_roles

user_roles := facts.user_roles

# --- per call: change windows, and every caller-level check of one tool ---------------------

window_denials(t) := {d |
	windowed(t)
	count(open_windows(t)) == 0
	d := ["window.closed", sprintf("tool %s may only be called inside its change window (%s); %s", [t, window_text(t), now_text])]
}

window_allows(t) := {a |
	some id in open_windows(t)
	a := ["window.open", sprintf("inside change window %s; %s", [id, now_text])]
}

tier_denials(t) := facts.tools[t].tier | window_denials(t)

tool_denials(t) := ((facts.tools[t].workload | facts.tools[t].user) | facts.tools[t].tier) | window_denials(t)

tool_allows(t) := facts.tools[t].allows | window_allows(t)

# --- argument rules (tools/call only) -------------------------------------------------------

call_tool := input.tool if {
	input.method == "tools/call"
	is_string(input.tool)
	catalog[input.tool]
}

args := input.arguments if is_object(input.arguments)

# The arguments this policy reads: every argument rule below reads args[name] for a name from
# data.portcullis.arguments, and nothing else reads input.arguments or input.plan_hash. Naming
# them lets the gateway show policy just these arguments (and no plan_hash) and reuse one
# decision for calls that agree on them: a word_count with a new text is not a new decision.
# A rule that read another argument would see it absent, so a new argument rule must read its
# names from here too. (Evaluated once, without input, when the bundle is compiled.)
argument_names := {n |
	some names in [
		data.portcullis.arguments.resource_names,
		data.portcullis.arguments.namespaces,
		[data.portcullis.arguments.production.environment_argument],
	]
	some n in names
}

protected_namespace(ns) if ns in data.portcullis.arguments.protected_namespaces.names

protected_namespace(ns) if {
	some prefix in data.portcullis.arguments.protected_namespaces.prefixes
	startswith(ns, prefix)
}

production_targets contains sprintf("%s %s", [name, v]) if {
	name := data.portcullis.arguments.production.environment_argument
	v := args[name]
	v in data.portcullis.arguments.production.environments
}

production_targets contains sprintf("%s %s", [name, ns]) if {
	some name in data.portcullis.arguments.namespaces
	ns := args[name]
	is_string(ns)
	some prefix in data.portcullis.arguments.production.namespace_prefixes
	startswith(ns, prefix)
}

argument_denials contains ["arguments.wildcard", reason] if {
	some name in data.portcullis.arguments.resource_names
	v := args[name]
	is_string(v)
	some w in data.portcullis.arguments.wildcards
	contains(v, w)
	reason := sprintf("argument %s of tool %s names resources by wildcard (%s): name exactly one", [name, call_tool, v])
}

argument_denials contains ["arguments.protected_namespace", reason] if {
	catalog[call_tool].kind in data.portcullis.arguments.protected_namespaces.kinds
	some name in data.portcullis.arguments.namespaces
	ns := args[name]
	is_string(ns)
	protected_namespace(ns)
	reason := sprintf("tool %s may not touch protected namespace %s", [call_tool, ns])
}

argument_denials contains ["arguments.production", reason] if {
	some target in production_targets
	some who in facts.non_operators
	reason := sprintf("tool %s targets production (%s): only operators may do that, and %s is not one", [call_tool, target, who])
}

# --- plans: plan_decision, which the runner evaluates (it alone knows the cited plan) ---------

# input is the apply's tools/call input plus input.plan: {"artifact", "tool", "requester":
# {"workload", "user", "user_iss"}, "created_at", "expires_at"} of the plan it cites. The runner
# itself refuses a plan of another requester, another tool or target, expired or altered; these
# rules are the team's own, from data.portcullis.plans.
has_plan if is_object(input.plan)

plan_denials contains ["plan.missing", "the runner gave no plan to decide on"] if not has_plan

plan_denials contains ["plan.owner", reason] if {
	data.portcullis.plans.same_owner == true
	catalog[input.plan.tool].owner != catalog[call_tool].owner
	reason := sprintf("plan %s was made by %s of %s; %s of %s applies only its own team's plans", [input.plan.artifact, input.plan.tool, catalog[input.plan.tool].owner, call_tool, catalog[call_tool].owner])
}

plan_denials contains ["plan.age", reason] if {
	max_age := data.portcullis.plans.max_age_seconds
	age := input.time.unix - input.plan.created_at
	age > max_age
	reason := sprintf("plan %s was made %s s ago; plans are applied within %s s", [input.plan.artifact, format_int(age, 10), format_int(max_age, 10)])
}

plan_decision := {
	"allow": true,
	"require_approval": false,
	"reasons": [sprintf("plan %s made by %s for %s may be applied", [input.plan.artifact, input.plan.tool, describe(input.plan.requester.workload)])],
	"rule_ids": ["plan.allowed"],
	"cacheable": false,
} if count(plan_denials) == 0

plan_decision := {
	"allow": false,
	"require_approval": false,
	"reasons": [d[1] | some d in sort(plan_denials)],
	"rule_ids": sort({d[0] | some d in plan_denials}),
	"cacheable": false,
} if count(plan_denials) > 0

# --- the decision ---------------------------------------------------------------------------

describe(x) := x if is_string(x)
else := sprintf("(%s)", [type_name(x)])

request_denials contains ["identity.no_role", sprintf("workload %s holds no role", [workload_name])] if {
	count(workload_roles) == 0
}

request_denials contains ["method.unknown", sprintf("method %s is not allowed through this gateway", [describe(input.method)])] if {
	input.method != "tools/call"
	not input.method in protocol_methods
	not grant_methods[input.method]
}

request_denials contains ["tools.unknown", sprintf("tool %s is not in the catalog", [describe(input.tool)])] if {
	input.method == "tools/call"
	not call_tool
}

# Reported: the first layer that denies (request, then workload, then everything else).
reported := request_denials if count(request_denials) > 0
else := facts.tools[call_tool].workload if count(facts.tools[call_tool].workload) > 0
else := facts.tools[call_tool].user | tier_denials(call_tool) | argument_denials if call_tool
else := grant_denials if count(grant_denials) > 0
else := set()

# One chain, tools/call first: an allowed call stops there, without the other methods' rules.
allowed := true if {
	count(request_denials) == 0
	count(tool_denials(call_tool)) == 0
	count(argument_denials) == 0
} else := true if {
	input.method in protocol_methods
	count(workload_roles) > 0
	count(request_denials) == 0
} else := true if {
	grant_methods[input.method]
	count(request_denials) == 0
	grants_request(workload_roles)
	user_grants_request
} else := true if {
	declined_answer
	count(request_denials) == 0
}

allow_facts := tool_allows(call_tool) if call_tool
else := {["responses.error", sprintf("workload %s declines or fails the server's %s request", [workload_name, answered_text])]} if declined_answer
else := grant_allows if grant_methods[input.method]
else := {["protocol.member", sprintf("workload %s holds roles: %s", [workload_name, role_list(workload_roles)])]}

deny_facts := reported if count(reported) > 0
else := {["default.deny", "no rule allows this request"]}

# The gateway may reuse a decision for an identical input (everything but time) only when it
# could not depend on input.time: no change window covers the called tool, and a tools/list
# (whose visible_tools would cover every windowed tool) only when there are no windows at all.
reads_time if {
	input.method == "tools/call"
	windowed(call_tool)
}

reads_time if {
	input.method == "tools/list"
	count(data.portcullis.change_windows) > 0
}

cacheable := false if reads_time
else := true

# The document of an allowed decision for its allows ([rule id, reason]).
allow_document(allows, cacheable) := {
	"allow": true,
	"require_approval": count([a | some a in allows; a[0] == "risk.approval"]) > 0,
	"reasons": [a[1] | some a in sort(allows)],
	"rule_ids": sort({a[0] | some a in allows}),
	"cacheable": cacheable,
}

verdict := allow_document(allow_facts, cacheable) if allowed

verdict := {
	"allow": false,
	"require_approval": false,
	"reasons": [d[1] | some d in sort(deny_facts)],
	"rule_ids": sort({d[0] | some d in deny_facts}),
	"cacheable": cacheable,
} if not allowed

# Exactly the catalog tools this caller (workload, user, time) may call with some arguments.
visible_tools := sort({t |
	some t, _ in catalog
	count(tool_denials(t)) == 0
})

# Where an allowed call's job runs: data.portcullis.placements names it by tool, else by the
# tool's catalog risk. Named nowhere: no placement, and the tool's catalog default
# (execution.placement) applies. The gateway signs it into the ticket; the runner runs the job
# there or refuses the call. A malformed placement denies the call (portcullis.placement).
tool_placement(t) := p if {
	p := data.portcullis.placements.tools[t]
} else := p if {
	p := data.portcullis.placements.risks[catalog[t].risk]
}

placement_member(t) := {"placement": p} if {
	p := tool_placement(t)
} else := {}

# The common case first: a tools/call the caller facts already decided (allowed_call), unless
# an argument rule denies it. The branches after it decide that same call alike, only slower
# (core/tests/policies.rs decides every case with and without this branch).
decision := call if {
	call := facts.tools[call_tool].call
	is_object(call)
	count(argument_denials) == 0
}
else := object.union(verdict, {"visible_tools": visible_tools}) if input.method == "tools/list"
else := object.union(verdict, {"visible_resources": visible_resources}) if input.method in {"resources/list", "resources/templates/list"}
else := object.union(verdict, {"visible_prompts": visible_prompts}) if input.method == "prompts/list"
else := object.union(verdict, placement_member(call_tool)) if {
	allowed
	call_tool
}
else := verdict
