"""Shared helpers for the infra/ checks: paths, the Bicep files parsed with pycep-parser (the
parser checkov itself uses) once per session, and a small evaluator for the Bicep expressions
that decide what a deployment contains (conditions on parameters, concat of setting arrays)."""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
MAIN = INFRA / "main.bicep"
# infra/names.py and infra/verify.py are imported by the tests that check them.
sys.path.insert(0, str(INFRA))


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


@functools.lru_cache(maxsize=None)
def parse(path: Path) -> dict[str, Any]:
    return BicepParser().parse(file_path=path)


def handler_settings_from_source() -> list[str]:
    """`SETTINGS` from src/config.rs: the names in the `pub const SETTINGS: &[&str] = &[...]` list
    (a cross-check; tests/infra_settings.rs uses the constant itself)."""
    text = (REPO / "src" / "config.rs").read_text()
    match = re.search(r"pub const SETTINGS: &\[&str\] = &\[(.*?)\];", text, re.S)
    assert match, "src/config.rs no longer has `pub const SETTINGS: &[&str] = &[...]`"
    return re.findall(r'"([^"]+)"', match.group(1))


@pytest.fixture(scope="session")
def parsed() -> dict[Path, dict[str, Any]]:
    return {path: parse(path) for path in bicep_files()}


class LoadedText(str):
    """What `loadTextContent(path)` evaluates to here: the path as written (relative to the file)."""


def evaluate(node: Any, tree: dict[str, Any], bindings: dict[str, Any]) -> Any:
    """The value of an expression built from parameters (each one used must be in `bindings`),
    variables, literals, ==, !=, !, &&, ||, `c ? a : b`, empty(), contains(), concat(), `o.name`, `o[key]` and
    loadTextContent() (a LoadedText naming the file). Arrays and objects are returned as they are
    written (their elements unevaluated)."""
    if node is None or isinstance(node, (bool, int, list)):
        return node
    if isinstance(node, str):
        if node in bindings:
            return bindings[node]
        if node in (tree.get("parameters") or {}):
            raise AssertionError(f"parameter {node} is used but not bound: bind it to evaluate")
        if node in (tree.get("variables") or {}):
            return evaluate(tree["variables"][node]["value"], tree, bindings)
        return node  # a string literal
    if "function" in node:
        function = node["function"]
        arguments = function["parameters"]
        if function["type"] == "empty":
            return len(evaluate(arguments["item_to_test"], tree, bindings)) == 0
        if function["type"] == "contains":
            return evaluate(arguments["item_to_find"], tree, bindings) in evaluate(arguments["container"], tree, bindings)
        if function["type"] == "load_text_content":
            return LoadedText(arguments["file_path"])
        if function["type"] == "concat":
            ordered = sorted(arguments.items(), key=lambda item: int(item[0].rsplit("_", 1)[1]))
            return [element for _, argument in ordered for element in evaluate(argument, tree, bindings)]
        raise AssertionError(f"cannot evaluate function {function['type']}")
    if "operator" not in node:
        return node  # an object literal
    operator = node["operator"]
    operands = operator["operands"]
    kind = operator["type"]
    if kind in ("property_accessor", "index_accessor"):
        container = evaluate(operands["operand_1"], tree, bindings)
        key = operands["operand_2"] if kind == "property_accessor" else evaluate(operands["operand_2"], tree, bindings)
        assert isinstance(container, dict) and key in container, f"cannot evaluate {node}"
        return evaluate(container[key], tree, bindings)
    if kind == "equals":
        return evaluate(operands["operand_1"], tree, bindings) == evaluate(operands["operand_2"], tree, bindings)
    if kind == "not_equals":
        return evaluate(operands["operand_1"], tree, bindings) != evaluate(operands["operand_2"], tree, bindings)
    if kind == "logical_not":
        return not evaluate(operands["bool_value"], tree, bindings)
    if kind in ("logical_and", "logical_or", "and", "or"):
        values = [evaluate(value, tree, bindings) for value in operands.values()]
        return all(values) if kind in ("logical_and", "and") else any(values)
    if kind == "conditional":
        chosen = "true_value" if evaluate(operands["condition"], tree, bindings) else "false_value"
        return evaluate(operands[chosen], tree, bindings)
    raise AssertionError(f"cannot evaluate {node}")
