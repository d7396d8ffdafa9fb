# Naming conventions: cluster and cloud resource names are lowercase, without '_', at most
# 63 characters (DNS-label style, whatever the provider itself would accept).
package upm.preflight

import rego.v1

dns_label_types := {"k8s_namespace", "k8s_deployment", "k8s_configmap", "k8s_service_account", "az_resource_group", "az_aks", "aws_sqs_queue", "aws_s3_bucket"}

deny contains {
	"rule": "naming-dns-label",
	"message": sprintf("%s name \"%s\" must be lowercase, without '_', at most 63 characters", [r.type, r.name]),
	"resource": r.key,
} if {
	some t in dns_label_types
	some i in object.get(input.by_type, t, [])
	r := input.resources[i]
	r.action == "create"
	not dns_label(r.name)
}

dns_label(name) if {
	lower(name) == name
	not contains(name, "_")
	count(name) <= 63
}
