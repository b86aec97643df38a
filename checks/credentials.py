"""Which credential the clients would present for the registry, found as docker finds it: the
source is named, never the secret."""

from __future__ import annotations

from datetime import UTC, datetime

from diagnose.check import Check
from diagnose.codes import Code
from diagnose.context import CheckContext
from diagnose.credentials import RELOGIN, Credential, CredentialError, jwt_claims
from diagnose.models import Finding, Status, passed, problem


def _source_words(cred: Credential) -> str:
    if cred.source in ("aad-token", "identity-token"):
        return f"{cred.kind.replace('aad-token', 'Entra access token')} given to this run"
    where = {
        "argument": "--username and the password given to this run",
        "credHelpers": f"credential helper docker-credential-{cred.helper}",
        "credsStore": f"credential store docker-credential-{cred.helper}",
        "auths": "the docker config (auths)",
    }.get(cred.source, cred.source)
    what = {
        "password": f"password of user {cred.username}",
        "identity-token": "identity token",
        "aad-token": "Entra access token",
    }.get(cred.kind, cred.kind)
    return f"{what} from {where}"


class CredentialsCheck(Check):
    id = "credentials"
    title = "Credentials"
    order = 70
    timeout_s = 15.0
    faq_keys = ("lowercase-login-server", "admin-credentials", "permission-propagation")
    codes = (
        Code.LOGIN_SERVER_ERROR,
        Code.CREDENTIALS_ERROR,
        Code.CREDENTIAL_HELPER_ERROR,
        Code.CREDENTIALS_EXPIRED,
    )

    def run(self, ctx: CheckContext) -> Finding:
        reg = ctx.registry
        assert reg is not None
        server = reg.login_server
        try:
            cred = ctx.credential()
        except CredentialError as exc:
            return self._broken(server, exc)
        evidence = cred.describe()
        if cred.anonymous:
            notes = f" ({'; '.join(cred.notes)})" if cred.notes else ""
            return passed(f"no credential for {server}: requests go anonymously{notes}", **evidence)
        assert cred.secret is not None
        claims = jwt_claims(cred.secret.reveal()) if cred.kind != "password" else None
        exp = claims.get("exp") if claims else None
        if isinstance(exp, int | float):
            expires = datetime.fromtimestamp(exp, UTC)
            evidence["token_expires"] = expires.isoformat()
            if expires < datetime.now(UTC):
                return problem(
                    Status.FAIL,
                    f"the {cred.kind} from {cred.source} expired at {expires:%Y-%m-%d %H:%M} UTC",
                    code=Code.CREDENTIALS_EXPIRED,
                    faq=["permission-propagation"],
                    remediation=[
                        RELOGIN.format(s=server),
                        f"For ACR: `az acr login -n {reg.host.split('.')[0]}`.",
                    ],
                    evidence=evidence,
                )
        notes = f"; {'; '.join(cred.notes)}" if cred.notes else ""
        return passed(f"using the {_source_words(cred)}{notes}", **evidence)

    def _broken(self, server: str, exc: CredentialError) -> Finding:
        evidence = {"error": exc.kind, **exc.evidence}
        if exc.kind == "case-mismatch":
            stored = str(exc.evidence.get("config_key", "?"))
            return problem(
                Status.FAIL,
                f"{exc}: docker will not use it, so requests go anonymously",
                code=Code.LOGIN_SERVER_ERROR,
                faq=["lowercase-login-server"],
                remediation=[
                    f"`docker logout {stored}`, then `docker login {server}` with the "
                    "lower-case name, and use that name in every image reference."
                ],
                evidence=evidence,
            )
        if exc.kind.startswith("helper"):
            helper = exc.evidence.get("helper", "?")
            steps = {
                "helper-missing": [
                    f"Install docker-credential-{helper}, or remove it from credsStore / "
                    "credHelpers in config.json and log in again.",
                ],
                "helper-timeout": [
                    f"docker-credential-{helper} hangs: it may be waiting for a keyring unlock "
                    "or a desktop prompt that a headless session cannot show.",
                ],
            }.get(
                exc.kind,
                [
                    f"Run `echo {server} | docker-credential-{helper} get` to see the "
                    "helper's own error."
                ],
            )
            return problem(
                Status.FAIL,
                str(exc),
                code=Code.CREDENTIAL_HELPER_ERROR,
                faq=["admin-credentials"],
                remediation=steps,
                evidence=evidence,
            )
        return problem(
            Status.FAIL,
            f"the docker config cannot be used: {exc}",
            code=Code.CREDENTIALS_ERROR,
            faq=["admin-credentials"],
            remediation=[
                "Fix or remove the broken entry in config.json, then "
                f"`docker login {server}` writes a correct one."
            ],
            evidence=evidence,
        )
