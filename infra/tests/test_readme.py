"""README.md's deployment section gives commands that work with this template: no config-zip
(it needs an AzureWebJobsStorage connection string on Linux Consumption and never returns behind
access restrictions on Flex), no FUNCTIONS_WORKER_RUNTIME for Flex, identity-based uploads for
both plans, what really happens to repeated query keys, and it ends with `make verify`.
infra/README.md has both plans' walkthroughs, each ending with `make verify`."""

from __future__ import annotations

import re

from conftest import INFRA, REPO


def section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```(?:sh|bash)?\n(.*?)```", text, re.S)


def paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]


def test_code_only_deploy_works_for_each_plan_with_identity_based_storage() -> None:
    deploying = section((REPO / "README.md").read_text(), "Deploying")
    blocks = "\n".join(code_blocks(deploying))
    assert "config-zip" not in blocks, "no config-zip command"
    for paragraph in paragraphs(deploying):
        if "config-zip" in paragraph:
            assert paragraph.startswith("Not ") or " not " in paragraph, f"config-zip only as a warning: {paragraph}"
        if "FUNCTIONS_WORKER_RUNTIME" in paragraph:
            assert "No `FUNCTIONS_WORKER_RUNTIME`" in paragraph or "Linux Consumption only" in paragraph, (
                f"FUNCTIONS_WORKER_RUNTIME is a Linux Consumption setting, deprecated on Flex: {paragraph}"
            )
    assert "FUNCTIONS_WORKER_RUNTIME" not in blocks
    assert "/api/publish?RemoteBuild=false" in blocks, "Flex: the one-deploy API"
    assert "az storage blob upload --auth-mode login" in blocks, "Linux Consumption: Entra ID upload, no keys"
    assert "AzureWebJobsStorage=" not in blocks and "--account-key" not in blocks and "connection-string" not in blocks


def test_repeated_query_keys_are_described_as_they_behave() -> None:
    readme = (REPO / "README.md").read_text()
    deploying = " ".join(section(readme, "Deploying").split())
    assert "`?deviceid=a&deviceid=b`" in deploying and "`deviceid=a,b`" in deploying
    assert "400" in deploying and "API Management" in deploying
    api = " ".join(section(readme, "API").split())
    assert "deviceid=a,b" in api, "the API section's 400 row says where repeated keys are refused"


def test_the_deployment_sections_end_with_make_verify() -> None:
    deploying = section((REPO / "README.md").read_text(), "Deploying")
    subsections = re.findall(r"\n### (.*)\n", deploying)
    assert subsections and "make verify" in subsections[-1], f"the last part of Deploying is make verify: {subsections}"
    infra = (INFRA / "README.md").read_text()
    walkthroughs = re.findall(r"\n## (Walkthrough[^\n]*)\n", infra)
    plans = {w for w in walkthroughs if "Flex Consumption" in w or "Linux Consumption" in w}
    assert len(plans) == 2, f"infra/README.md: one walkthrough per plan, found {walkthroughs}"
    for heading in plans:
        body = section(infra, heading)
        steps = re.findall(r"\n### (.*)\n", body)
        assert steps and "make verify" in steps[-1], f"{heading}: ends with make verify, steps {steps}"
        assert "make verify" in code_blocks(body)[-1]


def test_the_signing_mode_and_storing_the_group_key_are_documented() -> None:
    """Deploying says how to choose the signing mode, store the DPS group key and scope callers;
    each walkthrough's key step covers both modes."""
    deploying = section((REPO / "README.md").read_text(), "Deploying")
    flat = " ".join(deploying.split())
    for needle in ("SIGNING_MODE", "enrollment-group", "DPS_ID_SCOPE", "DEVICE_SCOPES", "ENROLLMENT_GROUP_KEY_SECRET"):
        assert needle in flat, f"README Deploying: {needle}"
    blocks = "\n".join(code_blocks(deploying))
    assert "az keyvault secret set" in blocks and "--show-keys" in blocks, "the command that stores the group key"
    assert "attestation.symmetricKey.primaryKey" in blocks
    infra = (INFRA / "README.md").read_text()
    walkthrough = section(infra, "Walkthrough: Flex Consumption (the default)")
    step = walkthrough[walkthrough.index("### 2."):walkthrough.index("### 3.")]
    assert "signingKeySecretName" in step and "--show-keys" in step and "iot hub policy show" in step, (
        "infra/README.md step 2 stores the key of either mode"
    )


def test_code_only_commands_strip_the_quoted_id_open_the_scm_site_and_sync_triggers() -> None:
    """/api/publish answers the deployment id as a JSON string (deploy.sh strips the quotes); the
    template keeps the Flex SCM site closed; a Linux Consumption package needs a trigger sync
    after the restart."""
    deploying = section((REPO / "README.md").read_text(), "Deploying")
    code_only = deploying[deploying.index("### Deploying only the code"):]
    code_only = code_only[: code_only.index("\n### ", 5)]
    flex, consumption = code_blocks(code_only)[:2]
    publish = next(line for line in flex.splitlines() if "/api/publish" in line)
    assert "tr -d '\"'" in publish, "the id is a JSON string: quotes stripped"
    assert flex.index("scm_access Allow") < flex.index("/api/publish") < flex.index("scm_access Deny")
    assert "scmIpSecurityRestrictionsDefaultAction" in flex
    lines = consumption.splitlines()
    restart = next(i for i, line in enumerate(lines) if "az functionapp restart" in line)
    sync = next(i for i, line in enumerate(lines) if "/syncfunctiontriggers" in line)
    assert restart < sync, "restart, then sync triggers"


def test_not_verified_here_says_what_is_left_and_how_to_report_it() -> None:
    infra = (INFRA / "README.md").read_text()
    unverified = section(infra, "Not verified here (Azure cannot be reached from this project's machines)")
    flat = " ".join(unverified.split())
    for needed in ("make verify", "table", "az bicep build", "uniqueString", "syncfunctiontriggers", "language: custom"):
        assert needed in flat, f"infra/README.md, Not verified here: {needed}"
