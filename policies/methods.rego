# Portcullis default policy, part two: the MCP methods beyond tools (resources, prompts,
# completion, logging/setLevel, subscriptions/listen, and clients' answers to server requests).
# Same package as authz.rego, whose `decision` combines these rules with the tools rules; see
# policies/README.md for the grants in data.json that these rules read.
package portcullis.authz

import rego.v1

# --- other MCP methods: grants for resources, prompts, completion, logging, answers ----------

# Methods decided by a grant, and the area their rule ids name (resources.not_granted, ...).
grant_methods := {
	"resources/read": "resources",
	"resources/subscribe": "resources",
	"resources/unsubscribe": "resources",
	"prompts/get": "prompts",
	"completion/complete": "completion",
	"logging/setLevel": "logging",
	"subscriptions/listen": "subscriptions",
	"response": "responses",
}

role_grants(roles) := [g | some r in roles; some g in data.portcullis.roles[r].grants; is_object(g)]

# A grant's list member, or nothing when it is absent or not a list.
grant_list(g, key) := g[key] if is_array(g[key])
else := []

# Every value is checked with is_string before a string builtin sees it: the engines treat a
# builtin given the wrong type differently (an error, or an undefined expression).
prefixed(prefixes, s) if {
	is_string(s)
	some p in prefixes
	is_string(p)
	startswith(s, p)
}

readable_prefixes(roles) := {p | some g in role_grants(roles); some p in grant_list(g, "resources"); is_string(p)}

subscribable_prefixes(roles) := {p |
	some g in role_grants(roles)
	g.subscribe == true
	some p in grant_list(g, "resources")
	is_string(p)
}

granted_prompts(roles) := {n | some g in role_grants(roles); some n in grant_list(g, "prompts"); is_string(n)}

prompt_granted(roles, name) if "*" in granted_prompts(roles)

prompt_granted(roles, name) if {
	is_string(name)
	name in granted_prompts(roles)
}

holds_completion(roles) if {
	some g in role_grants(roles)
	g.completion == true
}

granted_log_levels(roles) := {l | some g in role_grants(roles); some l in grant_list(g, "log_levels"); is_string(l)}

granted_answers(roles) := {m | some g in role_grants(roles); some m in grant_list(g, "responses"); is_string(m)}

holds_listen(roles) if {
	some g in role_grants(roles)
	g.listen == true
}

resource_uri := input.resource.uri if is_string(input.resource.uri)

prompt_name := input.prompt.name if is_string(input.prompt.name)

completion_ref := input.completion.ref if is_object(input.completion.ref)

# completion/complete offers values for an argument of a prompt or of a resource template: it
# needs the completion grant AND the prompt (or the template's URI) granted, since the values
# it suggests are that prompt's or resource's.
completion_ref_granted(roles) if {
	completion_ref.type == "ref/prompt"
	prompt_granted(roles, completion_ref.name)
}

completion_ref_granted(roles) if {
	completion_ref.type == "ref/resource"
	prefixed(readable_prefixes(roles), completion_ref.uri)
}

# A client's JSON-RPC response to a server request (input.method "response").
answered := input.response.to if is_string(input.response.to)

# Texts for reasons, defined whatever the input holds (a reason that is undefined would drop
# its denial).
answered_text := answered if answered
else := "(unknown)"

uri_text := resource_uri if resource_uri
else := "(no uri)"

prompt_text := prompt_name if prompt_name
else := "(no name)"

level_text := input.log_level if is_string(input.log_level)
else := "(no level)"

ref_text := sprintf("prompt %s", [completion_ref.name]) if {
	completion_ref.type == "ref/prompt"
	is_string(completion_ref.name)
} else := sprintf("resource %s", [completion_ref.uri]) if {
	completion_ref.type == "ref/resource"
	is_string(completion_ref.uri)
} else := "an unknown reference"

# Declining or failing a server request carries no result, and refusing it would only leave
# the server waiting: any role holder may answer with an error.
declined_answer if {
	input.method == "response"
	input.response.error == true
}

# Whether roles grant this request (the method of input, with its uri, prompt, ...).
grants_request(roles) if {
	input.method == "resources/read"
	prefixed(readable_prefixes(roles), resource_uri)
}

grants_request(roles) if {
	input.method in {"resources/subscribe", "resources/unsubscribe"}
	prefixed(subscribable_prefixes(roles), resource_uri)
}

grants_request(roles) if {
	input.method == "prompts/get"
	prompt_granted(roles, prompt_name)
}

grants_request(roles) if {
	input.method == "completion/complete"
	holds_completion(roles)
	completion_ref_granted(roles)
}

grants_request(roles) if {
	input.method == "logging/setLevel"
	input.log_level in granted_log_levels(roles)
}

grants_request(roles) if {
	input.method == "subscriptions/listen"
	holds_listen(roles)
}

grants_request(roles) if {
	input.method == "response"
	answered in granted_answers(roles)
}

# What the request asks, for reasons: "... may not <request_text>".
request_text := sprintf("read resource %s", [uri_text]) if input.method == "resources/read"
else := sprintf("subscribe to resource %s", [uri_text]) if input.method == "resources/subscribe"
else := sprintf("unsubscribe from resource %s", [uri_text]) if input.method == "resources/unsubscribe"
else := sprintf("get prompt %s", [prompt_text]) if input.method == "prompts/get"
else := sprintf("complete arguments of %s", [ref_text]) if input.method == "completion/complete"
else := sprintf("set the server's log level to %s", [level_text]) if input.method == "logging/setLevel"
else := "listen for server notifications" if input.method == "subscriptions/listen"
else := sprintf("answer the server's %s request", [answered_text]) if input.method == "response"
else := sprintf("send %s", [describe(input.method)])

# Why roles that do not grant the request fall short. Completion needs two things; say which.
shortfall(roles) := " (no completion grant)" if {
	input.method == "completion/complete"
	not holds_completion(roles)
} else := " (the prompt or resource is not granted)" if {
	input.method == "completion/complete"
} else := ""

# The workload's grants first; the user's (when there is one) only when the workload's allow:
# a user can narrow what an agent may do, never widen it.
workload_grant_denials := {d |
	area := grant_methods[input.method]
	not grants_request(workload_roles)
	not declined_answer
	d := [concat(".", [area, "not_granted"]), sprintf("workload %s (roles: %s) may not %s%s", [workload_name, role_list(workload_roles), request_text, shortfall(workload_roles)])]
}

user_grant_denials := {d |
	grant_methods[input.method]
	has_user
	not grants_request(user_roles)
	not declined_answer
	d := ["user.not_permitted", sprintf("user %s (roles: %s) may not %s%s", [user_name, role_list(user_roles), request_text, shortfall(user_roles)])]
}

grant_denials := workload_grant_denials if count(workload_grant_denials) > 0
else := user_grant_denials

# Allowing takes grants that are there, never merely the absence of a denial.
user_grants_request if not has_user

user_grants_request if {
	has_user
	grants_request(user_roles)
}

# A role contributes when it grants the request alone or, for completion, one half of it.
contributes(r) if grants_request({r})

contributes(r) if {
	input.method == "completion/complete"
	holds_completion({r})
}

contributes(r) if {
	input.method == "completion/complete"
	completion_ref_granted({r})
}

grant_allows := {a |
	some r in workload_roles
	contributes(r)
	a := [concat(".", [grant_methods[input.method], "role", r]), sprintf("workload %s may %s as %s", [workload_name, request_text, r])]
} | {a |
	has_user
	some r in user_roles
	contributes(r)
	a := [concat(".", ["user.role", r]), sprintf("user %s may %s as %s", [user_name, request_text, r])]
}

# resources/list and resources/templates/list: the URI prefixes this caller may read. With a
# user, a URI must start with one of the workload's prefixes and one of the user's: the longer
# of each overlapping pair.
meet_prefixes(a, b) := {p | some p in a; prefixed(b, p)} | {p | some p in b; prefixed(a, p)}

caller_prefixes := meet_prefixes(readable_prefixes(workload_roles), readable_prefixes(user_roles)) if has_user
else := readable_prefixes(workload_roles)

visible_resources := sort(caller_prefixes)

# prompts/list: the prompt names this caller may get; "*" (granted) stands for all of them.
meet_names(a, b) := b if "*" in a
else := a if "*" in b
else := a & b

caller_prompts := meet_names(granted_prompts(workload_roles), granted_prompts(user_roles)) if has_user
else := granted_prompts(workload_roles)

visible_prompts := ["*"] if "*" in caller_prompts
else := sort(caller_prompts)
