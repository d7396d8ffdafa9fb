"""The spec's own example request compiles to the spec's own plan, command for command."""

from __future__ import annotations

import shlex

from events.plan import plan_digest
from services.planner import CompileInput, PlannerConfig, compile_intent
from tests.planner.keyed import KEYED

REQUEST = "Create AKS cluster aks-demo in eastus and namespace team-alpha"
# The spec's plan shows the SSH public key "ssh-rsa AAAA..." that its request does not name: the key
# comes from the planner configuration (there is no default key), as it does in a deployment.
SPEC_CONFIG = KEYED


def test_spec_example_commands_resources_and_rollback() -> None:
    plan = compile_intent(CompileInput(request=REQUEST, initiator="user-123", tenant="acme"), SPEC_CONFIG)
    assert [s.command.display for s in plan.steps] == [
        "az group create --name rg-demo --location eastus",
        'az aks create --name aks-demo --resource-group rg-demo --node-count 2 --ssh-key-value "ssh-rsa AAAA..."',
        "kubectl-1.29 create namespace team-alpha",
    ]
    assert list(plan.resources) == [
        {"type": "az_resource_group", "name": "rg-demo", "location": "eastus"},
        {"type": "az_aks", "name": "aks-demo", "resource_group": "rg-demo"},
        {"type": "k8s_namespace", "name": "team-alpha"},
    ]
    assert plan.resources_needed == ()
    assert [c.display for c in plan.rollback] == [
        "kubectl-1.29 delete ns team-alpha",
        "az aks delete --name aks-demo --resource-group rg-demo",
    ]
    assert plan.steps[1].command.argv[-2:] == ("--ssh-key-value", "ssh-rsa AAAA...")
    assert plan.steps[0].implied and plan.steps[0].rollback is None
    assert plan.steps[2].depends_on == ("az_aks:default:aks-demo",)
    assert plan.steps[1].depends_on == ("az_resource_group:default:rg-demo",)
    assert plan.annotations.initiator == "user-123"
    assert plan.hash == plan_digest(plan)
    for step in plan.steps:
        assert shlex.split(step.command.display) == list(step.command.argv)


def test_ssh_key_comes_from_configuration() -> None:
    config = PlannerConfig(ssh_public_key="ssh-ed25519 AAAAC3Nz team@example")
    plan = compile_intent(CompileInput(request=REQUEST), config)
    assert plan.steps[1].command.display.endswith('--ssh-key-value "ssh-ed25519 AAAAC3Nz team@example"')


def test_named_resource_group_overrides_the_rule() -> None:
    plan = compile_intent(
        CompileInput(request="Create AKS cluster prod in westeurope in resource group rg-shared"), SPEC_CONFIG
    )
    assert (
        next(s.command.display for s in plan.steps)
        == "az group create --name rg-shared --location westeurope"
    )
    assert "--resource-group rg-shared" in plan.steps[1].command.display


def test_cluster_name_without_prefix_gets_rg_prefix() -> None:
    plan = compile_intent(CompileInput(request="Create AKS cluster edge in eastus"), SPEC_CONFIG)
    assert plan.resources[0] == {"type": "az_resource_group", "name": "rg-edge", "location": "eastus"}
