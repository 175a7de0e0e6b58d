"""infra/names.py gives the Key Vault and API Management names infra/main.bicep gives, so that
`deploy.sh preflight` looks for exactly the soft-deleted names a deployment would collide with:

- its uniqueString is ARM's, on the values two independent re-implementations publish as ARM's
  output (a bash one checked "against Bicep uniqueString() output", and a C# one in an Aspire
  hosting package that must match ARM's names); the algorithm itself is Microsoft's
  MurmurHash64 from Microsoft.PowerPlatform.ResourceStack, not documented by Microsoft;
- its naming is main.bicep's: `suffix` and the two modules' names are evaluated from the parsed
  template (uniqueString, take, resourceGroup().id, interpolation) and compared, salted and not,
  so a change to the naming in main.bicep fails here."""

from __future__ import annotations

import re
from typing import Any

import pytest

import names
from conftest import MAIN, parse

# (arguments, uniqueString) as published with the two re-implementations.
PUBLISHED = [
    (("test",), "rbgf3xv4ufgzg"),
    (("hello", "world"), "a7wkljktk6wne"),
    (("abc",), "cgtzqvhu4i23s"),
    (("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/my-rg",), "bmg7c6xu4tw46"),
    (("foo", "bar", "baz"), "xzi4ioaxtmth4"),
]


@pytest.mark.parametrize(("arguments", "expected"), PUBLISHED)
def test_unique_string_is_arms(arguments: tuple[str, ...], expected: str) -> None:
    assert names.unique_string(*arguments) == expected


def test_every_tail_length_is_hashed() -> None:
    """Inputs of every length modulo 8 (the hash reads 8 bytes at a time) give 13 base32
    characters, the last from 4 bits (so one of 'a', 'c', ..., '6': an even index)."""
    for length in range(0, 17):
        value = names.unique_string("x" * length)
        assert re.fullmatch(r"[a-z2-7]{13}", value), value
        assert "abcdefghijklmnopqrstuvwxyz234567".index(value[-1]) % 2 == 0


def evaluate(node: Any, tree: dict[str, Any], bindings: dict[str, str]) -> Any:
    """main.bicep's naming expressions: parameters, variables, literals, take, uniqueString,
    resourceGroup().id, empty, `c ? a : b` and '${...}' interpolation."""
    if isinstance(node, int):
        return node
    if isinstance(node, str):
        if node in bindings:
            return bindings[node]
        if node in tree["variables"]:
            return evaluate(tree["variables"][node]["value"], tree, bindings)
        return re.sub(r"\$\{(\w+)\}", lambda m: str(evaluate(m.group(1), tree, bindings)), node)
    if "function" in node:
        function = node["function"]
        kind, arguments = function["type"], function["parameters"]
        if kind == "resource_group":
            assert function.get("property_name") == "id"
            return bindings["resourceGroup().id"]
        if kind == "unique_string":
            values = [evaluate(arguments["base_string"], tree, bindings)]
            values += [evaluate(arguments[key], tree, bindings) for key in sorted(k for k in arguments if k.startswith("extra_string"))]
            return names.unique_string(*values)
        if kind == "take":
            return evaluate(arguments["original_value"], tree, bindings)[: evaluate(arguments["number_to_take"], tree, bindings)]
        if kind == "empty":
            return len(evaluate(arguments["item_to_test"], tree, bindings)) == 0
        raise AssertionError(f"cannot evaluate {kind}")
    operator = node["operator"]
    assert operator["type"] == "conditional", operator["type"]
    operands = operator["operands"]
    chosen = "true_value" if evaluate(operands["condition"], tree, bindings) else "false_value"
    return evaluate(operands[chosen], tree, bindings)


@pytest.mark.parametrize("salt", ["", "2", "after-azd-down"])
@pytest.mark.parametrize("prefix", ["iothubsas", "fleet01"])
def test_names_are_main_bicep_names(salt: str, prefix: str) -> None:
    tree = parse(MAIN)
    group_id = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-IoT-SAS"
    bindings = {"resourceGroup().id": group_id, "namePrefix": prefix, "nameSalt": salt}
    from_bicep = {
        "keyVault": evaluate(tree["modules"]["keyVault"]["config"]["params"]["name"], tree, bindings),
        "apim": evaluate(tree["modules"]["apim"]["config"]["params"]["name"], tree, bindings),
    }
    assert names.soft_deletable_names(group_id, prefix, salt) == from_bicep
    assert len(from_bicep["keyVault"]) <= 24, "Key Vault names are at most 24 characters"


def test_the_salt_changes_both_names() -> None:
    group_id = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg"
    plain = names.soft_deletable_names(group_id, "iothubsas")
    salted = names.soft_deletable_names(group_id, "iothubsas", "2")
    assert plain["keyVault"] != salted["keyVault"] and plain["apim"] != salted["apim"]
