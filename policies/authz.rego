# Portcullis default policy: least privilege by workload identity.
#
# Roles are bound to SPIFFE IDs in data.portcullis.roles; the tool catalog (kind, risk, owner)
# arrives as data.portcullis.catalog. Everything not allowed by a rule below is denied.
package portcullis.authz

import rego.v1

# MCP session plumbing: harmless, but only for workloads that hold a role.
protocol_methods := {"initialize", "notifications/initialized", "ping", "tools/list"}

risk_rank := {"low": 0, "medium": 1, "high": 2, "irreversible": 3}

# The roles the calling workload holds.
roles contains name if {
	some name, role in data.portcullis.roles
	input.workload.spiffe_id in role.spiffe_ids
}

tool := data.portcullis.catalog.tools[input.tool]

# Each allow rule contributes its id; a request is allowed when at least one fires and no
# deny rule does.
allows contains "protocol.member" if {
	input.method in protocol_methods
	count(roles) > 0
}

allows contains sprintf("tools.role.%s", [name]) if {
	input.method == "tools/call"
	some name in roles
	role_permits(data.portcullis.roles[name], tool)
}

role_permits(role, t) if {
	t.kind in role.tool_kinds
	risk_rank[t.risk] <= risk_rank[role.max_risk]
}

denies contains {"id": "identity.no_role", "reason": sprintf("workload %s holds no role", [input.workload.spiffe_id])} if {
	count(roles) == 0
}

denies contains {"id": "method.unknown", "reason": sprintf("method %s is not allowed through this gateway", [input.method])} if {
	not input.method in protocol_methods
	input.method != "tools/call"
}

denies contains {"id": "tools.unknown", "reason": sprintf("tool %s is not in the catalog", [input.tool])} if {
	input.method == "tools/call"
	not data.portcullis.catalog.tools[input.tool]
}

denies contains {"id": "tools.irreversible", "reason": sprintf("tool %s is irreversible and no break-glass rule applies", [input.tool])} if {
	input.method == "tools/call"
	tool.risk == "irreversible"
}

denies contains {"id": "tools.not_permitted", "reason": sprintf("roles %v may not call %s tool %s (risk %s)", [sort(roles), tool.kind, input.tool, tool.risk])} if {
	input.method == "tools/call"
	count(roles) > 0
	count({a | some a in allows; startswith(a, "tools.")}) == 0
	tool.risk != "irreversible"
}

# Tools of kind apply act for someone: they need a verified user (the filter verified the
# bearer token), and the denial says why there is none (input.user_error).
denies contains {"id": "user.required", "reason": sprintf("tool %s requires a verified user: %s", [input.tool, user_error])} if {
	input.method == "tools/call"
	tool.kind == "apply"
	not is_object(input.user)
}

user_error := input.user_error if is_string(input.user_error)
else := "no verified user"

allowed if {
	count(allows) > 0
	count(denies) == 0
}

decision := {
	"allow": true,
	"require_approval": false,
	"reasons": [sprintf("allowed by %s", [concat(", ", sort(allows))])],
	"rule_ids": sort(allows),
} if allowed

decision := {
	"allow": false,
	"require_approval": false,
	"reasons": deny_reasons,
	"rule_ids": deny_ids,
} if not allowed

deny_reasons := [d.reason | some d in sort_denies] if count(denies) > 0
else := ["no rule allows this request"]

deny_ids := [d.id | some d in sort_denies] if count(denies) > 0
else := ["default.deny"]

sort_denies := sort(denies)
