# Limits: blast radius per change, and the tenant's monthly budget.
package upm.preflight

import rego.v1

deny contains {
	"rule": "blast-radius",
	"message": sprintf("the plan touches %d resources; the limit per change is %d (limits.max_resources): split the change", [count(input.resources), input.config.max_resources]),
	"resource": "",
} if {
	count(input.resources) > input.config.max_resources
}

deny contains {
	"rule": "budget",
	"message": sprintf("the plan's monthly cost %.2f %s exceeds the tenant's budget %.2f; reduce it or raise budgets.%s", [input.cost.monthly, input.cost.currency, input.budget.monthly, input.tenant]),
	"resource": "",
} if {
	is_number(input.budget.monthly)
	input.cost.monthly > input.budget.monthly
}
