# Maintenance windows: destructive prod changes run only inside the prod window.
package upm.preflight

import rego.v1

window contains {
	"rule": "destructive-prod-window",
	"message": "destructive prod changes run only inside the prod maintenance window",
	"outside": "wait",
} if {
	input.environment == "prod"
	input.plan.destructive
}
