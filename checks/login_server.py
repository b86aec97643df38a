"""The name the user gave: what docker needs it to look like."""

from __future__ import annotations

import re

from diagnose.check import Check
from diagnose.codes import Code
from diagnose.context import CheckContext
from diagnose.models import Finding, Status, passed, problem
from diagnose.target import ACR_SUFFIXES, acr_suffix

# An ACR registry name: 5-50 letters and digits. A "domain name label" login server appends a
# dash and a hash to it (name-hash.azurecr.io).
_ACR_NAME = re.compile(r"^[a-z0-9]{5,50}$")
_ACR_DNL = re.compile(r"^([a-z0-9]{5,50})-([a-z0-9]{1,32})$")


class LoginServerCheck(Check):
    id = "login-server"
    title = "Login server name"
    order = 10
    timeout_s = 2.0
    faq_keys = ("lowercase-login-server", "registry-api-v2")
    codes = (Code.LOGIN_SERVER_ERROR,)

    def run(self, ctx: CheckContext) -> Finding:
        reg = ctx.registry
        assert reg is not None
        evidence = {
            "given": reg.given,
            "login_server": reg.login_server,
            "normalised": list(reg.notes),
            "is_acr": reg.is_acr,
            "cloud": reg.cloud,
        }
        given_host = reg.host_given or reg.host
        if given_host != given_host.lower():
            right = reg.login_server
            return problem(
                Status.FAIL,
                f"login server {given_host!r} has upper-case letters: docker needs {right!r}",
                code=Code.LOGIN_SERVER_ERROR,
                faq=["lowercase-login-server"],
                remediation=[
                    f"Use the lower-case name everywhere: `docker login {right}`, then tag and "
                    f"pull as `{right}/<repository>:<tag>`.",
                    f"If you logged in with the mixed-case name, `docker logout {given_host}` "
                    "first.",
                ],
                evidence=evidence,
            )
        if reg.is_acr:
            finding = self._acr(reg.host, evidence)
            if finding is not None:
                return finding
        note = f" (normalised: {'; '.join(reg.notes)})" if reg.notes else ""
        return passed(f"{reg.login_server} is a valid login server{note}", **evidence)

    def _acr(self, host: str, evidence: dict[str, object]) -> Finding | None:
        suffix = acr_suffix(host)
        assert suffix is not None
        prefix = host[: -len(suffix) - 1] if host != suffix else ""
        cloud = ACR_SUFFIXES[suffix]
        evidence["registry_name"] = prefix
        if ".data." in f".{prefix}." or prefix.endswith(".data"):
            name = prefix.split(".", 1)[0]
            return problem(
                Status.FAIL,
                f"{host} is a data endpoint of registry {name}, not its login server",
                code=Code.LOGIN_SERVER_ERROR,
                faq=["registry-api-v2", "lowercase-login-server"],
                remediation=[
                    f"Log in, tag and pull with the login server {name}.{suffix}; the registry "
                    "sends clients to its data endpoints by itself."
                ],
                evidence=evidence,
            )
        if "." in prefix or not prefix:
            return problem(
                Status.FAIL,
                f"{host} is not an ACR login server: expected <registry name>.{suffix}",
                code=Code.LOGIN_SERVER_ERROR,
                faq=["lowercase-login-server", "registry-api-v2"],
                remediation=[
                    f"Use the login server shown by `az acr show -n <name> --query "
                    f"loginServer` (it has the form <name>.{suffix})."
                ],
                evidence=evidence,
            )
        dnl = _ACR_DNL.match(prefix)
        if dnl:
            evidence["registry_name"] = dnl.group(1)
            evidence["domain_name_label_hash"] = dnl.group(2)
            return None
        if not _ACR_NAME.match(prefix):
            why = (
                f"is {len(prefix)} characters long"
                if not 5 <= len(prefix) <= 50
                else "has characters other than letters and digits"
            )
            return problem(
                Status.FAIL,
                f"ACR registry name {prefix!r} {why}: ACR names are 5-50 letters and digits",
                code=Code.LOGIN_SERVER_ERROR,
                faq=["lowercase-login-server"],
                remediation=[
                    "Check the registry name with `az acr list --query [].loginServer -o tsv` and "
                    f"use its login server ({cloud}: <name>.{suffix})."
                ],
                evidence=evidence,
            )
        return None
