# Storage: S3 buckets are encrypted and never public.
package upm.preflight

import rego.v1

deny contains {
	"rule": "bucket-encrypted",
	"message": sprintf("S3 bucket %s is created without encryption; add 'with encryption' (or encryption: AES256 in the spec)", [r.name]),
	"resource": r.key,
} if {
	some i in object.get(input.by_type, "aws_s3_bucket", [])
	r := input.resources[i]
	r.action == "create"
	not r.fields.encryption
}

deny contains {
	"rule": "bucket-not-public",
	"message": sprintf("S3 bucket %s would be public; keep its public access block on (public_access_block: true)", [r.name]),
	"resource": r.key,
} if {
	some i in object.get(input.by_type, "aws_s3_bucket", [])
	r := input.resources[i]
	public(r)
}

# A new bucket without the block is public; a changed one only if the change turns it off.
public(r) if {
	r.action == "create"
	not r.fields.public_access_block
}

public(r) if {
	r.action == "update"
	r.fields.public_access_block == false
}
