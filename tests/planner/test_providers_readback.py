"""What a read-back proves, per provider, from real CLI output: present, absent, or unknown (why).

The outputs were captured from the pinned CLIs on this machine (GNU coreutils 9.1, awscli 1.46.3
against a moto server, over a self-signed certificate and against a closed port; psql 15 against an
embedded PostgreSQL and closed ports; kubectl against a closed port and a self-signed certificate).
kubectl's NotFound and az's not-found errors have no server here; those lines are the CLIs' own
formats as users reported them (Azure/azure-cli#20316, MicrosoftDocs/mslearn-aspnet-core#118).
The rule under test: only a type's declared proof makes a failure "absent"; anything else is unknown.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from events.plan import ResourceRef
from providers import CATALOG, Absent, Present, Unknown, observe
from providers.readback import unknown
from services.guard.steps import observe_many, read_back
from services.planner import CompileInput, compile_intent

SQS_TLS = ("\nSSL validation failed for https://127.0.0.1:45872/ [SSL: CERTIFICATE_VERIFY_FAILED] certificate "
           "verify failed: self-signed certificate (_ssl.c:1006)\n")
KUBECTL_REFUSED = (
    'E1207 02:55:13.907074   11715 memcache.go:265] "Unhandled Error" err="couldn\'t get current server API group '
    'list: Get \\"https://127.0.0.1:45999/api?timeout=32s\\": dial tcp 127.0.0.1:45999: connect: connection refused"\n'
    "The connection to the server 127.0.0.1:45999 was refused - did you specify the right host or port?\n"
)
KUBECTL_TLS = (
    'E1207 02:55:14.038908   11722 memcache.go:265] "Unhandled Error" err="couldn\'t get current server API group '
    'list: Get \\"https://127.0.0.1:45872/api?timeout=32s\\": tls: failed to verify certificate: x509: certificate '
    'signed by unknown authority"\n'
    "Unable to connect to the server: tls: failed to verify certificate: x509: certificate signed by unknown authority\n"
)
PSQL_REFUSED = ('psql: error: connection to server at "127.0.0.1", port 45999 failed: Connection refused\n'
                "\tIs the server running on that host and accepting TCP/IP connections?\n")

# (type, ident, rc, stdout, stderr) → "present" | "absent" | the unknown kind
CASES: list[tuple[str, str, int, str, str, str]] = [
    # local: stat, readlink -v (coreutils 9.1)
    ("local_directory", "/srv/a", 0, "directory:755:root\n", "", "present"),
    ("local_directory", "/nonexistent", 1, "", "stat: cannot statx '/nonexistent': No such file or directory\n",
     "absent"),
    ("local_file", "/tmp/tsx/file/x", 1, "", "stat: cannot statx '/tmp/tsx/file/x': Not a directory\n", "absent"),
    ("local_file", "/tmp/tsx/file", 1, "", "stat: cannot statx '/tmp/tsx/file': Permission denied\n", "auth"),
    ("local_mode", "/tmp/tsx/file", 1, "", "stat: cannot statx '/tmp/tsx/file': Permission denied\n", "auth"),
    ("local_symlink", "/nonexistent", 1, "", "readlink: /nonexistent: No such file or directory\n", "absent"),
    ("local_symlink", "/tmp", 1, "", "readlink: /tmp: Invalid argument\n", "absent"),  # not a symlink
    ("local_symlink", "/tmp/tsx/l", 1, "", "readlink: /tmp/tsx/l: Permission denied\n", "auth"),
    ("local_symlink", "/tmp/tsx/l", 1, "", "", "error"),  # plain readlink's silent failure proves nothing
    ("local_directory", "/srv/a", 126, "", "refused by the guard (unpinned): stat is not pinned", "guard"),
    ("local_directory", "/srv/a", 124, "", "", "timeout"),
    # aws (awscli 1.46.3 → moto)
    ("aws_s3_bucket", "nope", 255, "", "\nAn error occurred (404) when calling the HeadBucket operation: Not Found\n",
     "absent"),
    ("aws_s3_bucket", "xyz", 255, "", "\nAn error occurred (403) when calling the HeadBucket operation: Forbidden\n",
     "auth"),
    ("aws_s3_bucket", "nope", 255, "", SQS_TLS, "tls"),
    ("aws_s3_bucket", "nope", 255, "", '\nCould not connect to the endpoint URL: "http://127.0.0.1:45999/nope"\n',
     "unreachable"),
    ("aws_s3_bucket_versioning", "nope", 255, "", "\nAn error occurred (NoSuchBucket) when calling the "
     "GetBucketVersioning operation: The specified bucket does not exist\n", "absent"),
    ("aws_s3_bucket_encryption", "bucket-one", 255, "", "\nAn error occurred (ServerSideEncryptionConfiguration"
     "NotFoundError) when calling the GetBucketEncryption operation: The server side encryption configuration was "
     "not found\n", "absent"),
    ("aws_s3_bucket_tagging", "bucket-one", 255, "", "\nAn error occurred (NoSuchTagSet) when calling the "
     "GetBucketTagging operation: The TagSet does not exist\n", "absent"),
    ("aws_s3_public_access_block", "bucket-one", 255, "", "\nAn error occurred (NoSuchPublicAccessBlockConfiguration)"
     " when calling the GetPublicAccessBlock operation: The public access block configuration was not found\n",
     "absent"),
    ("aws_iam_role", "nope", 255, "", "\nAn error occurred (NoSuchEntity) when calling the GetRole operation: Role "
     "nope not found\n", "absent"),
    ("aws_iam_role_policy_attachment", "nope:arn:aws:iam::aws:policy/ReadOnlyAccess", 255, "", "\nAn error occurred "
     "(NoSuchEntity) when calling the ListAttachedRolePolicies operation: Role nope not found\n", "absent"),
    ("aws_sqs_queue", "nope", 255, "", "\nAn error occurred (AWS.SimpleQueueService.NonExistentQueue) when calling "
     "the GetQueueAttributes operation: The specified queue does not exist.\n", "absent"),
    ("aws_sqs_queue", "q1", 0, '{\n    "Attributes": {\n        "VisibilityTimeout": "30"\n    }\n}\n', "", "present"),
    ("aws_sqs_queue", "q", 255, "", SQS_TLS, "tls"),  # the measured failure: never "absent"
    ("aws_sqs_queue", "q", 255, "", "An error occurred (403) when calling the GetQueueAttributes operation: <?xml "
     'version="1.0" encoding="utf-8"?>\n<ErrorResponse><Errors><Error><Code>InvalidClientTokenId</Code><Message>The '
     "security token included in the request is invalid.</Message><Type>Sender</Type></Error></Errors>"
     "</ErrorResponse>\n", "auth"),
    ("aws_sqs_queue", "q", 255, "", 'You must specify a region. You can also configure your region by running "aws '
     'configure".\n', "error"),
    ("aws_sqs_queue", "q", 0, "<html>captive portal</html>", "", "error"),  # not JSON: unreadable, not absent
    ("aws_dynamodb_table", "nope", 255, "", "\nAn error occurred (ResourceNotFoundException) when calling the "
     "DescribeTable operation: Requested resource not found: Table: nope not found\n", "absent"),
    # the catalog's breadth (issue 24): each type's own not-found answer, anything else unknown
    ("aws_security_group", "web-sg", 255, "", "\nAn error occurred (InvalidGroup.NotFound) when calling the "
     "DescribeSecurityGroups operation: The security group 'web-sg' does not exist in default VPC\n", "absent"),
    ("aws_security_group", "web-sg", 0, '{"SecurityGroups": [{"GroupName": "web-sg", "Description": "d"}]}', "",
     "present"),
    ("aws_security_group", "web-sg", 255, "", SQS_TLS, "tls"),
    ("aws_security_group_ingress", "web-sg:tcp:443:0.0.0.0/0", 0, '{"SecurityGroups": [{"IpPermissions": [{"IpProtocol":'
     ' "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}]}', "", "present"),
    ("aws_security_group_ingress", "web-sg:tcp:22:0.0.0.0/0", 0, '{"SecurityGroups": [{"IpPermissions": [{"IpProtocol":'
     ' "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}]}', "", "absent"),
    ("aws_security_group_ingress", "sg-0123abcd:tcp:22:0.0.0.0/0", 255, "", "\nAn error occurred (InvalidGroup.NotFound"
     ") when calling the DescribeSecurityGroups operation: The security group 'sg-0123abcd' does not exist\n", "absent"),
    ("aws_security_group_ingress", "web-sg:tcp:22:0.0.0.0/0", 255, "", "\nAn error occurred (UnauthorizedOperation) "
     "when calling the DescribeSecurityGroups operation: You are not authorized to perform this operation.\n", "auth"),
    ("aws_sns_topic", "alerts", 255, "", "\nAn error occurred (NotFound) when calling the GetTopicAttributes "
     "operation: Topic does not exist\n", "absent"),
    ("aws_sns_topic", "alerts", 255, "", "\nAn error occurred (AuthorizationError) when calling the "
     "GetTopicAttributes operation: User is not authorized\n", "error"),
    ("aws_ssm_parameter", "/app/x", 0, '{"Parameters": []}', "", "absent"),  # the listing answered without it
    ("aws_ssm_parameter", "/app/x", 0, '{"Parameters": [{"Name": "/app/x", "Type": "SecureString"}]}', "", "present"),
    ("aws_ssm_parameter", "/app/x", 255, "", "\nAn error occurred (ParameterNotFound) when calling the "
     "DescribeParameters operation: x\n", "error"),  # an error is never absence for a listing
    ("aws_ssm_parameter", "/app/x", 0, "<html>captive portal</html>", "", "error"),
    ("aws_cloudwatch_log_group", "/app/web", 0, '{"logGroups": [{"logGroupName": "/app/web-old"}]}', "", "absent"),
    ("aws_cloudwatch_log_group_retention", "/app/web", 0, '{"logGroups": [{"logGroupName": "/app/web", '
     '"retentionInDays": 30}]}', "", "present"),
    ("aws_cloudwatch_log_group", "/app/web", 255, "", SQS_TLS, "tls"),
    ("aws_ecr_repository", "team/web", 255, "", "\nAn error occurred (RepositoryNotFoundException) when calling the "
     "DescribeRepositories operation: The repository with name 'team/web' does not exist\n", "absent"),
    ("aws_ecr_repository", "team/web", 255, "", '\nCould not connect to the endpoint URL: "http://127.0.0.1:45999/"\n',
     "unreachable"),
    ("aws_sqs_queue_redrive", "jobs", 255, "", "\nAn error occurred (AWS.SimpleQueueService.NonExistentQueue) when "
     "calling the GetQueueAttributes operation: The specified queue does not exist.\n", "absent"),
    ("aws_sqs_queue_redrive", "jobs", 0, '{"Attributes": {"RedrivePolicy": "{\\"deadLetterTargetArn\\": '
     '\\"arn:aws:sqs:us-east-1:123456789012:jobs-dlq\\", \\"maxReceiveCount\\": 3}"}}', "", "present"),
    ("pg_user", "nope", 0, "", "", "absent"),
    ("pg_user", "reporter", 2, "", PSQL_REFUSED, "refused"),
    ("pg_table_grant", "r@shop.public.items:read", 0, "f\n", "", "absent"),
    ("pg_table_grant", "r@nodb.public.items:read", 2, "", 'psql: error: connection to server at "127.0.0.1", port '
     '37529 failed: FATAL:  database "nodb" does not exist\n', "absent"),
    ("pg_schema_grant", "r@shop.sales:usage", 0, "t\n", "", "present"),
    ("pg_schema_grant", "r@shop.sales:usage", 2, "", PSQL_REFUSED, "refused"),
    ("k8s_service_account", "ns/deployer", 1, "", 'Error from server (NotFound): serviceaccounts "deployer" not found\n',
     "absent"),
    ("k8s_service_account", "ns/deployer", 1, "", KUBECTL_TLS, "tls"),
    ("az_aks_nodepool", "aks-demo/gpu", 3, "", "(ResourceNotFound) The Resource 'Microsoft.ContainerService/"
     "managedClusters/aks-demo/agentPools/gpu' was not found.\nCode: ResourceNotFound\n", "absent"),
    ("az_aks_nodepool", "aks-demo/gpu", 1, "", "ERROR: Please run 'az login' to setup account.\n", "auth"),
    # postgres (psql 15 → PostgreSQL 18)
    ("pg_role", "nope", 0, "", "", "absent"),  # the query ran: no row
    ("pg_role", "analyst", 0, "analyst|t\n", "", "present"),
    ("pg_role", "analyst", 2, "", PSQL_REFUSED, "refused"),
    ("pg_role", "analyst", 2, "", 'psql: error: connection to server on socket "/nonexistent/.s.PGSQL.5432" '
     "failed: No such file or directory\n\tIs the server running locally and accepting connections on that socket?\n",
     "unreachable"),  # "No such file or directory" names the socket, not the role
    ("pg_role", "analyst", 2, "", 'psql: error: could not translate host name "nonexistent.invalid" to address: '
     "Name or service not known\n", "unreachable"),
    ("pg_role", "analyst", 2, "", 'psql: error: connection to server at "127.0.0.1", port 37529 failed: FATAL:  '
     'password authentication failed for user "upm_observer"\n', "auth"),
    ("pg_database", "orders", 1, "", "ERROR:  permission denied for table pg_authid\n", "auth"),
    ("pg_database", "orders", 1, "", "ERROR:  division by zero\n", "absent"),  # the existence check: no row
    ("pg_schema", "nodb.x", 2, "", 'psql: error: connection to server at "127.0.0.1", port 37529 failed: FATAL:  '
     'database "nodb" does not exist\n', "absent"),
    ("pg_grant", "r@orders.public:read", 0, "f\n", "", "absent"),
    ("pg_grant", "r@orders.public:read", 2, "", PSQL_REFUSED, "refused"),
    # kubectl
    ("k8s_namespace", "x", 1, "", 'Error from server (NotFound): namespaces "x" not found\n', "absent"),
    ("k8s_deployment", "ns/web", 1, "", KUBECTL_REFUSED, "refused"),
    ("k8s_deployment", "ns/web", 1, "", KUBECTL_TLS, "tls"),
    ("k8s_configmap", "ns/cm", 1, "", "error: You must be logged in to the server (the server has asked for the "
     "client to provide credentials)\n", "auth"),
    # az
    ("az_resource_group", "defaultVault", 3, "", "(ResourceGroupNotFound) Resource group 'defaultVault' could not be "
     "found.\nCode: ResourceGroupNotFound\nMessage: Resource group 'defaultVault' could not be found.\n", "absent"),
    ("az_aks", "eshop-learn-aks", 3, "", "(ResourceNotFound) The Resource 'Microsoft.ContainerService/managedClusters/"
     "eshop-learn-aks' under resource group 'eshop-learn-rg' was not found. For more details please go to "
     "https://aka.ms/ARMResourceNotFoundFix\nCode: ResourceNotFound\n", "absent"),
    ("az_aks", "a", 1, "", "ERROR: Please run 'az login' to setup account.\n", "auth"),
]


@pytest.mark.parametrize(("type_name", "ident", "rc", "stdout", "stderr", "expected"), CASES)
def test_each_provider_proves_absence_only_by_its_own_answer(
    type_name: str, ident: str, rc: int, stdout: str, stderr: str, expected: str
) -> None:
    ref = ResourceRef(provider=CATALOG[type_name].provider, type=type_name, name=ident, target="t", key="k")
    seen = observe(ref, rc, stdout, stderr)
    got = {Present: "present", Absent: "absent"}.get(type(seen)) or (seen.kind if isinstance(seen, Unknown) else "")
    assert got == expected, seen
    if isinstance(seen, Unknown):  # the reason carries the exit status and the line that says why
        assert seen.reason.startswith(f"{expected} (exit {rc}): ") and "\n" not in seen.summary


def test_the_reason_is_the_line_that_says_why() -> None:
    assert unknown(2, PSQL_REFUSED).summary.endswith("failed: Connection refused")  # not psql's hint after it
    assert unknown(1, KUBECTL_TLS).summary.startswith("Unable to connect to the server: tls")  # its last word
    assert unknown(1, "").reason == "error (exit 1): exited 1 with nothing on stderr"
    assert unknown(-9, "", timed_out=True).kind == "timeout"


async def test_local_read_backs_run_for_real(tmp_path: Path) -> None:
    """stat and readlink -v on real paths: a missing path or a file where a directory should be is
    absent; a symlink reads back its target."""
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "file")
    plan = compile_intent(CompileInput(spec={"resources": [
        {"type": "local_directory", "path": str(tmp_path / "gone")},
        {"type": "local_directory", "path": str(tmp_path / "file" / "sub")},
        {"type": "local_symlink", "path": str(tmp_path / "link"), "target": str(tmp_path / "file")},
        {"type": "local_symlink", "path": str(tmp_path / "file"), "target": "/x"},
    ]}))
    by_path = {s.resource.name: s for s in plan.steps if s.resource.type in ("local_directory", "local_symlink")}
    seen = {path: await read_back(s.resource, s.readback) for path, s in by_path.items()}
    assert seen[str(tmp_path / "gone")] == Absent("No such file or directory")
    assert seen[str(tmp_path / "file" / "sub")] == Absent("Not a directory")
    assert seen[str(tmp_path / "link")] == Present({"exists": True, "target": str(tmp_path / "file")})
    assert seen[str(tmp_path / "file")] == Absent("Invalid argument")  # a regular file is no symlink


WRITE_ONLY = [Path("/sys/bus/pci/rescan"), *sorted(Path("/sys/devices").glob("pci*/*/rescan"))[:1]]


@pytest.mark.skipif(not all(p.exists() for p in WRITE_ONLY) or len(WRITE_ONLY) < 2,
                    reason="needs sysfs write-only files")
async def test_a_file_whose_content_cannot_be_read_is_unknown_not_drift() -> None:
    """sysfs ``rescan`` files are regular files that even root may only write: ``stat`` finds them,
    ``sha256sum`` is refused. Their content is unknown (the old read-back had no digest, so it showed
    drift); one by one and through the batched read-backs alike."""
    plan = compile_intent(CompileInput(spec={"resources": [
        {"type": "local_file", "path": str(p), "mode": "0200", "content": "1"} for p in WRITE_ONLY
    ]}))
    steps = [s for s in plan.steps if s.resource.type == "local_file"]
    single = await read_back(steps[0].resource, steps[0].readback)
    assert isinstance(single, Unknown) and single.kind == "auth", single
    assert single.summary.endswith(f"sha256sum: {steps[0].resource.name}: Permission denied")  # the binary's path
    many = await observe_many(steps)  # one stat and one sha256sum for both, then each on its own
    assert all(isinstance(o, Unknown) and o.kind == "auth" for o in many), many
    for seen, step in zip(many, steps, strict=True):  # each names its own path (quoted when it holds a ':')
        assert isinstance(seen, Unknown) and step.resource.name in seen.summary, seen
        assert seen.summary.endswith(": Permission denied")
