# Approval lanes: low-risk non-prod changes are auto-approved; prod needs two approvers;
# other changes need one.
package upm.preflight

import rego.v1

auto_approve contains {
	"rule": "low-risk-auto",
	"message": sprintf("low-risk change (score %v) in %s", [input.risk.score, input.environment]),
} if {
	input.risk.level == "low"
	input.environment != "prod"
}

approval contains {
	"rule": "prod-two-approvers",
	"groups": ["platform-owners"],
	"count": 2,
	"message": "prod changes need two approvers from platform-owners",
} if {
	input.environment == "prod"
}

approval contains {
	"rule": "risk-review",
	"groups": ["platform-owners"],
	"count": 1,
	"message": sprintf("%s-risk change (score %v) needs one approver from platform-owners", [input.risk.level, input.risk.score]),
} if {
	input.environment != "prod"
	input.risk.level != "low"
}
