#!/usr/bin/env python3
"""Writes every variant of the API Management policy,
infra/policies/sas-token-api.<kind>[.consumption].xml, from its one source,
infra/policies/source/sas-token-api.xml.

The variants are the kind of caller fact the gateway forwards to the handler (`none`,
`subscription`, `certificate`, `entra`: the Bicep parameter apimCallerKind, `none` whenever
DEVICE_SCOPES is empty) times the tier's rate limit (`dedicated`: rate-limit-by-key, the classic and
v2 tiers; `consumption`: rate-limit). infra/modules/apim-api.bicep loads all eight and picks one.

The source is a well-formed policy document in which whole lines between comment markers are kept
or dropped:

    <!--#if kind == subscription-->      kept for that kind (`==` takes a|b|c, `!=` one value)
    <!--#if tier == consumption-->
    <!--#else-->
    <!--#endif-->

Markers nest; each sits alone on its line and is removed. `VARIANT`, alone on a line of the
header comment, becomes the variant's description. Nothing else changes, byte for byte: the
generated files are the source's own lines, so a reviewer reads the source once.

infra/tests/test_policy.py checks that every committed variant is exactly what this script writes
(`make infra-check` fails while one is stale) and what each variant must hold.

Run: `python3 infra/apim_policies.py` (standard library only).
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POLICIES = REPO / "infra" / "policies"
SOURCE = POLICIES / "source" / "sas-token-api.xml"

KINDS = ("none", "subscription", "certificate", "entra")
TIERS = ("dedicated", "consumption")

DESCRIPTIONS = {
    "none": "forwarding no caller fact (no DEVICE_SCOPES: the function sees one caller, API Management)",
    "subscription": "forwarding each caller's subscription id (X-Caller-Subscription)",
    "certificate": "forwarding the SHA-256 thumbprint of each caller's validated client certificate (X-Caller-Certificate-Thumbprint)",
    "entra": "forwarding each caller's own validated Entra ID token (X-Caller-Authorization)",
}
TIER_DESCRIPTIONS = {
    "dedicated": "for the tiers with rate-limit-by-key (classic Developer/Basic/Standard/Premium, Basic v2, Standard v2)",
    "consumption": "for the Consumption tier (rate-limit: it has no rate-limit-by-key)",
}

MARKER = re.compile(r"^\s*<!--#(if|else|endif)(?:\s+(kind|tier)\s*(==|!=)\s*([a-z|]+))?\s*-->\s*$")


def path_of(kind: str, tier: str) -> Path:
    """Where a variant lives: sas-token-api.<kind>.xml, or .<kind>.consumption.xml."""
    return POLICIES / (f"sas-token-api.{kind}.xml" if tier == "dedicated" else f"sas-token-api.{kind}.consumption.xml")


def holds(variable: str, operator: str, values: str, variant: dict[str, str]) -> bool:
    choices = values.split("|")
    known = KINDS if variable == "kind" else TIERS
    unknown = [value for value in choices if value not in known]
    if unknown:
        raise ValueError(f"unknown {variable} {unknown} in a marker (known: {', '.join(known)})")
    if operator == "!=" and len(choices) != 1:
        raise ValueError("!= takes one value")
    return (variant[variable] in choices) == (operator == "==")


def render(source: str, kind: str, tier: str) -> str:
    """The source with the lines of other variants and every marker removed."""
    variant = {"kind": kind, "tier": tier}
    kept: list[str] = []
    # One entry per open #if: [this branch is kept, the enclosing branch is kept, #else seen].
    stack: list[list[bool]] = []
    for number, line in enumerate(source.splitlines(keepends=True), 1):
        match = MARKER.match(line)
        if "<!--#" in line and not match:
            raise ValueError(f"line {number}: malformed marker: {line.strip()}")
        if match:
            word, variable, operator, values = match.groups()
            outer = all(entry[0] for entry in stack)
            if word == "if":
                if variable is None:
                    raise ValueError(f"line {number}: #if needs a condition")
                stack.append([outer and holds(variable, operator, values, variant), outer, False])
            elif not stack or variable is not None:
                raise ValueError(f"line {number}: #{word} without its #if (or with a condition)")
            elif word == "else":
                if stack[-1][2]:
                    raise ValueError(f"line {number}: a second #else")
                stack[-1] = [stack[-1][1] and not stack[-1][0], stack[-1][1], True]
            else:
                stack.pop()
            continue
        if all(entry[0] for entry in stack):
            kept.append(line)
    if stack:
        raise ValueError("an #if is never closed")
    text = "".join(kept)
    placeholder = re.findall(r"^([ \t]*)VARIANT\n", text, re.M)
    if len(placeholder) != 1 or text.count("VARIANT") != 1:
        raise ValueError("the header comment must hold VARIANT once, alone on its line")
    indent = placeholder[0]
    description = f"API-scope policy of the IoT Hub SAS-token API, {DESCRIPTIONS[kind]}, {TIER_DESCRIPTIONS[tier]}."
    wrapped = textwrap.fill(description, width=100, initial_indent=indent, subsequent_indent=indent,
                            expand_tabs=False, break_long_words=False, break_on_hyphens=False)
    return text.replace(f"{indent}VARIANT\n", wrapped + "\n")


def variants() -> dict[Path, str]:
    source = SOURCE.read_text(encoding="utf-8")
    return {path_of(kind, tier): render(source, kind, tier) for kind in KINDS for tier in TIERS}


def main() -> int:
    for path, text in variants().items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
