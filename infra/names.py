#!/usr/bin/env python3
"""The names infra/main.bicep gives the resources that stay soft-deleted under their names (Key
Vault, API Management), computed here, before anything is deployed, so that `infra/deploy.sh
preflight` can look for a soft-deleted vault or service that a deployment would collide with.

    python3 infra/names.py RESOURCE_GROUP_ID NAME_PREFIX [NAME_SALT]
    -> {"keyVault": "kv-<prefix>-<suffix>", "apim": "<prefix>-apim-<suffix>"}

`suffix` is main.bicep's: the first 8 characters of uniqueString(resourceGroup().id, namePrefix)
or, with a salt, uniqueString(resourceGroup().id, namePrefix, nameSalt). uniqueString is Azure
Resource Manager's template function: its arguments joined with '-', hashed with the 64-bit
Murmur variant of Microsoft.PowerPlatform.ResourceStack (two 32-bit lanes, seed 0), written as
13 characters of lower-case base32 (RFC 4648 alphabet, 5 bits at a time from the top). The
algorithm is not documented by Microsoft; two independent re-implementations that agree with each
other and with values ARM produced are the source (see infra/README.md, "Checked against
sources"), and infra/tests/test_names.py checks this one against their published values and
against main.bicep's own expressions, so a change to the naming there fails the check.
"""

from __future__ import annotations

import json
import sys

_MASK = 0xFFFFFFFF
_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"


def _rotl(value: int, bits: int) -> int:
    return ((value << bits) | (value >> (32 - bits))) & _MASK


def _word(data: bytes, at: int, length: int = 4) -> int:
    """Little-endian value of `length` (1..4) bytes from `at`."""
    return int.from_bytes(data[at:at + length], "little")


def _mix_a(word: int) -> int:
    return (_rotl((word * 0x239B961B) & _MASK, 15) * 0xAB0E9789) & _MASK


def _mix_b(word: int) -> int:
    return (_rotl((word * 0xAB0E9789) & _MASK, 17) * 0x239B961B) & _MASK


def _finish(h: int) -> int:
    h = ((h ^ (h >> 16)) * 0x85EBCA6B) & _MASK
    h = ((h ^ (h >> 13)) * 0xC2B2AE35) & _MASK
    return h ^ (h >> 16)


def murmur64(data: bytes) -> int:
    """ResourceStack's MurmurHash64 of `data`, seed 0."""
    h1 = h2 = 0
    full = len(data) - len(data) % 8
    for at in range(0, full, 8):
        h1 = _rotl(h1 ^ _mix_a(_word(data, at)), 19)
        h1 = (((h1 + h2) & _MASK) * 5 + 0x561CCD1B) & _MASK
        h2 = _rotl(h2 ^ _mix_b(_word(data, at + 4)), 13)
        h2 = (((h2 + h1) & _MASK) * 5 + 0x0BCAA747) & _MASK
    tail = len(data) - full
    if tail:
        h1 ^= _mix_a(_word(data, full, min(tail, 4)))
        if tail > 4:
            h2 ^= _mix_b(_word(data, full + 4, tail - 4))
    h1 ^= len(data)
    h2 ^= len(data)
    h1 = (h1 + h2) & _MASK
    h2 = (h2 + h1) & _MASK
    h1, h2 = _finish(h1), _finish(h2)
    h1 = (h1 + h2) & _MASK
    h2 = (h2 + h1) & _MASK
    return (h2 << 32) | h1


def unique_string(*values: str) -> str:
    """ARM's uniqueString(values...)."""
    digest = murmur64("-".join(values).encode("utf-8"))
    # The top 5 bits, 13 times, shifting left by 5 within 64 bits (the last character gets the
    # lowest 4 bits and a zero).
    return "".join(_BASE32[((digest << (5 * i)) & 0xFFFFFFFFFFFFFFFF) >> 59] for i in range(13))


def suffix(resource_group_id: str, name_prefix: str, name_salt: str = "") -> str:
    """main.bicep's `suffix`."""
    parts = [resource_group_id, name_prefix] + ([name_salt] if name_salt else [])
    return unique_string(*parts)[:8]


def soft_deletable_names(resource_group_id: str, name_prefix: str, name_salt: str = "") -> dict[str, str]:
    """The Key Vault and API Management names main.bicep gives for these inputs."""
    tail = suffix(resource_group_id, name_prefix, name_salt)
    return {"keyVault": f"kv-{name_prefix}-{tail}", "apim": f"{name_prefix}-apim-{tail}"}


def main(arguments: list[str]) -> int:
    if len(arguments) not in (2, 3):
        print("usage: names.py RESOURCE_GROUP_ID NAME_PREFIX [NAME_SALT]", file=sys.stderr)
        return 2
    print(json.dumps(soft_deletable_names(*arguments)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
