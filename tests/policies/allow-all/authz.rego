# Allow-all bundle: every method, for every workload, with every list shown in full.
#
# Only for running the MCP conformance suite through the gateway (`portcullis up --policies
# tests/policies/allow-all`): the suite checks the protocol, not our policy, so nothing here
# may refuse or trim what it sends. Identity is still required (the gateway admits only mesh
# certificates before policy is asked), and tickets are still signed per call. Never deploy it.
#
# The catalog arrives as data.portcullis.catalog as for any bundle; this one does not read it.
package portcullis.authz

import rego.v1

decision := {
	"allow": true,
	"require_approval": false,
	"reasons": ["allow-all test bundle: every request is allowed"],
	"rule_ids": ["allow_all"],
	# Nothing here reads input.time, so any decision may be reused.
	"cacheable": true,
	# "*" lists every tool and prompt; every URI starts with "".
	"visible_tools": ["*"],
	"visible_resources": [""],
	"visible_prompts": ["*"],
}

# The runner's rules on the plan an apply cites: none either.
plan_decision := {
	"allow": true,
	"require_approval": false,
	"reasons": ["allow-all test bundle: every plan may be applied"],
	"rule_ids": ["allow_all"],
	"cacheable": false,
}
