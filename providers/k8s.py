"""The ``k8s`` provider: namespaces, deployments (image, scale), configmaps and service accounts,
with kubectl 1.29.

The binary is the versioned name ``kubectl-1.29``. The target is a cluster context: ``default``
(the executor's endpoint for the change, e.g. the cluster the same plan creates) adds no flag,
any other target adds ``--context TARGET``. A deployment's image and replica count are facets
(``kubectl-1.29 set image`` / ``scale``); an image change is undone with ``rollout undo``.
``k8s_service_selector`` is the switch step of a blue-green rollout.

A failed read-back proves absence only by the API server's ``Error from server (NotFound)`` (the
object, or its namespace, is not there); an unreachable cluster, a refused certificate or token,
or a ``Forbidden`` leave the resource unknown.
"""

from __future__ import annotations

from typing import Any

from providers.base import CliPin, FieldSpec, Requirement, ResourceType, Template, Vars, json_fields
from providers.readback import Absence

PROVIDER = "k8s"
KUBECTL = "kubectl-1.29"
PIN = CliPin(
    name=KUBECTL,
    binaries=(KUBECTL,),
    version="1.29",
    version_argv=(KUBECTL, "version", "--client"),
    version_pattern=r"Client Version: v(\d+\.\d+)",
)
_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_LABEL_RULE = "a DNS label: lowercase letters, digits and '-', at most 63, starting and ending alphanumeric"
_CTX = ("--context", "{context}")
_NS = ("-n", "{namespace}")
_ALWAYS_THERE = frozenset({"default", "kube-system", "kube-public"})
_NOT_FOUND = Absence((r"Error from server \(NotFound\)",))


def _vars(v: Vars) -> dict[str, Any]:
    data = v.get("data") or {}
    out: dict[str, Any] = {
        "context": "" if v["at"] == "default" else v["at"],
        "literals": [f"--from-literal={k}={data[k]}" for k in sorted(data)],
        "patch": {"data": data},
        "selector_patch": {"spec": {"selector": {"app": v.get("app")}}},
    }
    if v.get("previous_app"):
        out["previous_patch"] = {"spec": {"selector": {"app": v["previous_app"]}}}
    return out


def kubectl(*words: str | tuple[str, ...]) -> Template:
    """``kubectl-1.29 [--context CTX] WORDS…``."""
    return (KUBECTL, _CTX, *words)


def _name(doc: str) -> FieldSpec:
    return FieldSpec(name="name", required=True, pattern=_LABEL, rule=_LABEL_RULE, doc=doc)


_NAMESPACE = FieldSpec(
    name="namespace",
    default="default",
    pattern=_LABEL,
    rule=_LABEL_RULE,
    nl_keys=("in namespace", "namespace"),
    doc="the namespace (default: default)",
)
_IN_NAMESPACE = Requirement(
    type="k8s_namespace", match={"name": "namespace"}, skip=lambda v: v.get("namespace") in _ALWAYS_THERE
)

NAMESPACE = ResourceType(
    name="k8s_namespace",
    provider=PROVIDER,
    cli=KUBECTL,
    ident="{name}",
    nouns=("kubernetes namespace", "k8s namespace", "namespace", "ns"),
    fields=(_name("the namespace"),),
    create=kubectl("create", "namespace", "{name}"),
    delete=kubectl("delete", "ns", "{name}"),
    readback=kubectl("get", "namespace", "{name}", "-o", "json"),
    parse=json_fields({"phase": ("status", "phase")}),
    absent=_NOT_FOUND,
    derive=_vars,
    cluster_bound=True,
    doc="a namespace",
)

_DEPLOY_READ = kubectl("get", "deployment", "{name}", _NS, "-o", "json")
_DEPLOY_PARSE = json_fields(
    {"image": ("spec", "template", "spec", "containers", 0, "image"), "replicas": ("spec", "replicas")}
)
_ROLLOUT = kubectl("rollout", "status", "deployment/{name}", _NS, "--timeout=120s")

DEPLOYMENT = ResourceType(
    name="k8s_deployment",
    provider=PROVIDER,
    cli=KUBECTL,
    ident="{namespace}/{name}",
    nouns=("kubernetes deployment", "k8s deployment", "deployment", "deploy"),
    fields=(
        _name("the deployment"),
        _NAMESPACE,
        FieldSpec(
            name="image",
            required=True,
            pattern=r"[\w][\w.:/@-]{0,254}",
            rule="a container image reference like nginx:1.27",
            nl_keys=("with image", "image", "running"),
            doc="the container image",
        ),
        FieldSpec(
            name="replicas",
            kind="int",
            default=1,
            minimum=0,
            nl_keys=("replicas",),
            nl_suffix=("replicas", "replica"),
        ),
        FieldSpec(
            name="live",
            kind="choice",
            default="blue",
            choices=("blue", "green"),
            nl_keys=("live",),
            doc="the live colour, for blue-green rollouts",
        ),
    ),
    summary=("namespace", "image", "replicas"),
    state=("image", "replicas"),
    create=kubectl("create", "deployment", "{name}", "--image={image}", "--replicas={replicas}", _NS),
    delete=kubectl("delete", "deployment", "{name}", _NS),
    readback=_DEPLOY_READ,
    parse=_DEPLOY_PARSE,
    absent=_NOT_FOUND,
    health=_ROLLOUT,
    derive=_vars,
    requires=(_IN_NAMESPACE,),
    cluster_bound=True,
    timeout_s=300.0,
    doc="a deployment of one container image",
)


def _deployment_facet(name: str, field: str, apply: Template, undo: Template) -> ResourceType:
    return ResourceType(
        name=name,
        provider=PROVIDER,
        cli=KUBECTL,
        ident="{namespace}/{name}",
        state=(field,),
        create=apply,
        undo=undo,
        readback=_DEPLOY_READ,
        parse=_DEPLOY_PARSE,
        absent=_NOT_FOUND,
        health=_ROLLOUT,
        derive=_vars,
        facet_of=("k8s_deployment",),
        facet_field=field,
        cluster_bound=True,
        timeout_s=300.0,
    )


DEPLOYMENT_FACETS = (
    _deployment_facet(
        "k8s_deployment_image",
        "image",
        kubectl("set", "image", "deployment/{name}", "*={image}", _NS),
        kubectl("rollout", "undo", "deployment/{name}", _NS),
    ),
    _deployment_facet(
        "k8s_deployment_replicas",
        "replicas",
        kubectl("scale", "deployment/{name}", "--replicas={replicas}", _NS),
        kubectl("scale", "deployment/{name}", "--replicas={previous_replicas}", _NS),
    ),
)

CONFIGMAP = ResourceType(
    name="k8s_configmap",
    provider=PROVIDER,
    cli=KUBECTL,
    ident="{namespace}/{name}",
    nouns=("configmap", "config map"),
    fields=(
        _name("the configmap"),
        _NAMESPACE,
        FieldSpec(name="data", kind="map", default={}, nl_keys=("with data", "data")),
    ),
    summary=("namespace",),
    state=("data",),
    create=kubectl("create", "configmap", "{name}", ("{*literals}",), _NS),
    update=kubectl("patch", "configmap", "{name}", _NS, "--type", "merge", "-p", "{patch}"),
    delete=kubectl("delete", "configmap", "{name}", _NS),
    readback=kubectl("get", "configmap", "{name}", _NS, "-o", "json"),
    parse=json_fields({"data": ("data",)}, {"data": lambda d: d or {}}),
    absent=_NOT_FOUND,
    derive=_vars,
    requires=(_IN_NAMESPACE,),
    cluster_bound=True,
    doc="a configmap of literal key=value pairs",
)

SERVICE_SELECTOR = ResourceType(
    name="k8s_service_selector",
    provider=PROVIDER,
    cli=KUBECTL,
    ident="{namespace}/{name}",
    fields=(
        _name("the service"),
        _NAMESPACE,
        FieldSpec(name="app", required=True, pattern=_LABEL, rule=_LABEL_RULE),
    ),
    state=("app",),
    update=kubectl("patch", "service", "{name}", _NS, "-p", "{selector_patch}"),
    undo=kubectl("patch", "service", "{name}", _NS, "-p", "{previous_patch}"),
    readback=kubectl("get", "service", "{name}", _NS, "-o", "json"),
    parse=json_fields({"app": ("spec", "selector", "app")}),
    absent=_NOT_FOUND,
    derive=_vars,
    cluster_bound=True,
    doc="the app selector of a service: the switch of a blue-green rollout",
)

SERVICE_ACCOUNT = ResourceType(
    name="k8s_service_account",
    provider=PROVIDER,
    cli=KUBECTL,
    ident="{namespace}/{name}",
    nouns=("service account", "serviceaccount", "sa"),
    fields=(_name("the service account"), _NAMESPACE),
    summary=("namespace",),
    create=kubectl("create", "serviceaccount", "{name}", _NS),
    delete=kubectl("delete", "serviceaccount", "{name}", _NS),
    readback=kubectl("get", "serviceaccount", "{name}", _NS, "-o", "json"),
    parse=json_fields({"name": ("metadata", "name")}),
    absent=_NOT_FOUND,
    derive=_vars,
    requires=(_IN_NAMESPACE,),
    cluster_bound=True,
    doc="a service account (the identity pods of a namespace run as)",
)

TYPES = (NAMESPACE, DEPLOYMENT, *DEPLOYMENT_FACETS, CONFIGMAP, SERVICE_ACCOUNT, SERVICE_SELECTOR)
