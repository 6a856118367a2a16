# `portcullis policy test --policies tests/policies/allow-all`: the bundle allows whatever it
# is asked, including inputs the gateway never sends.
package portcullis.allow_all_test

import rego.v1

import data.portcullis.authz

unknown := {"spiffe_id": "spiffe://elsewhere.example/anything"}

test_every_method_is_allowed_for_any_workload if {
	every m in ["initialize", "server/discover", "tools/call", "resources/read", "prompts/get", "completion/complete", "logging/setLevel", "subscriptions/listen", "response", "no/such/method"] {
		d := authz.decision with input as {"method": m, "workload": unknown, "user": null}
		d.allow
		not d.require_approval
		d.cacheable
	}
	e := authz.decision with input as {}
	e.allow
}

test_lists_show_everything if {
	d := authz.decision with input as {"method": "resources/list"}
	d.visible_tools == ["*"]
	d.visible_resources == [""]
	d.visible_prompts == ["*"]
}

test_plans_are_allowed if {
	d := authz.plan_decision with input as {"method": "tools/call", "plan": null}
	d.allow
}
