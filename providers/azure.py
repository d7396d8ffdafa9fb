"""The ``azure`` provider: resource groups, AKS clusters and their node pools, with the ``az`` CLI.

An AKS cluster implies its resource group: unless the request names one, the group is
``rg-<cluster name without an "aks-" prefix>`` (``aks-demo`` → ``rg-demo``) in the cluster's
location, and the planner adds an ``az group create`` step for it, guarded by ``az group show``
and never deleted by the rollback plan (the group may have existed before, or hold more).
The SSH public key comes from ``PlannerConfig.ssh_public_key``. Deletes carry no ``--yes``
(as in the spec): the executor runs ``az`` with ``AZURE_CORE_DISABLE_CONFIRM_PROMPT=true``.

A failed read-back proves absence only by ARM's ``(ResourceNotFound)`` / ``(ResourceGroupNotFound)``
error codes (a cluster whose group is gone is gone too); a login, network or certificate failure
leaves the resource unknown.
"""

from __future__ import annotations

from typing import Any

from providers.base import CliPin, FieldSpec, Requirement, ResourceType, Vars, json_fields
from providers.readback import Absence

PROVIDER = "azure"
PIN = CliPin(
    name="az",
    binaries=("az",),
    version="2.67.0",
    version_argv=("az", "version", "--output", "json"),
    version_pattern=r'"azure-cli": "([^"]+)"',
)


def implied_group(v: Vars) -> Any:
    """The documented resource-group rule: ``rg-`` + the cluster name minus an ``aks-`` prefix."""
    name = str(v.get("name", ""))
    return "rg-" + name.removeprefix("aks-")


_LOCATION = FieldSpec(
    name="location",
    required=True,
    pattern=r"[a-z][a-z0-9]{2,30}",
    rule="an Azure region name like eastus or westeurope",
    nl_keys=("location",),
    doc="the Azure region",
)
_NOT_FOUND = Absence((r"\((?:ResourceNotFound|ResourceGroupNotFound)\)", r"Code: (?:ResourceNotFound|ResourceGroupNotFound)\b"))
_GROUP_RULE = "1 to 90 letters, digits, - _ . ( ), not ending in '.'"

GROUP = ResourceType(
    name="az_resource_group",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{name}",
    nouns=("resource group", "rg"),
    nl_in="location",
    fields=(
        FieldSpec(name="name", required=True, pattern=r"[-\w.()]{0,89}[-\w()]", rule=_GROUP_RULE),
        _LOCATION,
    ),
    summary=("location",),
    state=("location",),
    create=("az", "group", "create", "--name", "{name}", "--location", "{location}"),
    delete=("az", "group", "delete", "--name", "{name}"),
    readback=("az", "group", "show", "--name", "{name}", "--output", "json"),
    parse=json_fields({"location": ("location",)}),
    absent=_NOT_FOUND,
    doc="a resource group",
)

AKS = ResourceType(
    name="az_aks",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{name}",
    nouns=("aks cluster", "aks", "kubernetes cluster", "cluster"),
    nl_in="location",
    fields=(
        FieldSpec(
            name="name",
            required=True,
            pattern=r"[A-Za-z0-9][A-Za-z0-9_-]{0,61}[A-Za-z0-9]",
            rule="AKS cluster names are 2 to 63 letters, digits, - and _, starting and ending alphanumeric",
        ),
        _LOCATION,
        FieldSpec(
            name="resource_group",
            default_from=implied_group,
            pattern=GROUP.spec("name").pattern,
            rule=_GROUP_RULE,
            nl_keys=("in resource group", "resource group"),
            doc="defaults to rg-<name minus aks->",
        ),
        FieldSpec(
            name="node_count",
            kind="int",
            default=2,
            minimum=1,
            nl_keys=("node count",),
            nl_suffix=("nodes", "node"),
        ),
    ),
    summary=("resource_group",),
    state=("node_count",),
    create=(
        "az",
        "aks",
        "create",
        "--name",
        "{name}",
        "--resource-group",
        "{resource_group}",
        "--node-count",
        "{node_count}",
        "--ssh-key-value",
        "{ssh_public_key}",
    ),
    update=(
        "az",
        "aks",
        "scale",
        "--name",
        "{name}",
        "--resource-group",
        "{resource_group}",
        "--node-count",
        "{node_count}",
    ),
    undo=(
        "az",
        "aks",
        "scale",
        "--name",
        "{name}",
        "--resource-group",
        "{resource_group}",
        "--node-count",
        "{previous_node_count}",
    ),
    delete=("az", "aks", "delete", "--name", "{name}", "--resource-group", "{resource_group}"),
    readback=(
        "az",
        "aks",
        "show",
        "--name",
        "{name}",
        "--resource-group",
        "{resource_group}",
        "--output",
        "json",
    ),
    parse=json_fields({"node_count": ("agentPoolProfiles", 0, "count"), "state": ("provisioningState",)}),
    absent=_NOT_FOUND,
    health=(
        "az",
        "aks",
        "show",
        "--name",
        "{name}",
        "--resource-group",
        "{resource_group}",
        "--query",
        "provisioningState",
        "--output",
        "tsv",
    ),
    requires=(
        Requirement(
            type="az_resource_group",
            match={"name": "resource_group"},
            implied=True,
            implied_fields={"location": "location"},
        ),
    ),
    monthly_cost=70.08,
    cost_unit="node_count",
    timeout_s=1800.0,
    doc="an AKS cluster (node count scales in place)",
)

def _pool_group(v: Vars) -> Any:
    """A node pool's resource group: its cluster's, by the same rule (``rg-`` + cluster minus ``aks-``)."""
    return implied_group({"name": v.get("cluster", "")})


def _pool(*verb: str, count: str = "") -> tuple[str, ...]:
    where = ("--cluster-name", "{cluster}", "--name", "{name}", "--resource-group", "{resource_group}")
    return ("az", "aks", "nodepool", *verb, *where, *(("--node-count", count) if count else ()))


NODE_POOL = ResourceType(
    name="az_aks_nodepool",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{cluster}/{name}",
    nouns=("node pool", "nodepool", "aks node pool", "agent pool"),
    fields=(
        FieldSpec(
            name="name",
            required=True,
            pattern=r"[a-z][a-z0-9]{0,11}",
            rule="node pool names are 1 to 12 lowercase letters and digits, starting with a letter",
        ),
        FieldSpec(
            name="cluster",
            required=True,
            pattern=AKS.spec("name").pattern,
            rule=AKS.spec("name").rule,
            nl_keys=("for cluster", "for aks cluster", "on aks cluster"),
            doc="the AKS cluster",
        ),
        FieldSpec(
            name="resource_group",
            default_from=_pool_group,
            pattern=GROUP.spec("name").pattern,
            rule=_GROUP_RULE,
            nl_keys=("in resource group", "resource group"),
            doc="the cluster's resource group (default rg-<cluster minus aks->)",
        ),
        FieldSpec(
            name="node_count",
            kind="int",
            default=1,
            minimum=0,
            nl_keys=("node count",),
            nl_suffix=("nodes", "node"),
        ),
        FieldSpec(
            name="mode",
            kind="choice",
            default="User",
            choices=("User", "System"),
            nl_flags={"user": "User", "system": "System"},
            doc="User (default: workloads) or System (cluster services)",
        ),
    ),
    summary=("cluster", "node_count", "mode"),
    state=("node_count", "mode"),
    create=(*_pool("add", count="{node_count}"), "--mode", "{mode}"),
    update=_pool("scale", count="{node_count}"),
    undo=_pool("scale", count="{previous_node_count}"),
    delete=_pool("delete"),
    readback=(*_pool("show"), "--output", "json"),
    parse=json_fields({"node_count": ("count",), "mode": ("mode",), "state": ("provisioningState",)}),
    absent=_NOT_FOUND,
    requires=(Requirement(type="az_aks", match={"name": "cluster", "resource_group": "resource_group"}),),
    fixed_target="default",
    monthly_cost=70.08,
    cost_unit="node_count",
    timeout_s=1800.0,
    doc="a node pool of an AKS cluster (node count scales in place)",
)

TYPES = (GROUP, AKS, NODE_POOL)
