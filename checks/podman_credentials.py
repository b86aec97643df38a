"""Which credentials podman and CRI-O would present, found in the order containers/image looks
(REGISTRY_AUTH_FILE, XDG_RUNTIME_DIR, ~/.config, the docker config, .dockercfg; CRI-O's
global_auth_file first): the file, key and user named, never the secret."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from diagnose.check import Check
from diagnose.codes import Code
from diagnose.containersref import NOT_HERE, RUNTIMES, names_of, user_home_of
from diagnose.context import CheckContext
from diagnose.dockerhost import read_text
from diagnose.models import Finding, Issue, Status, combine, passed, skipped


class PodmanCredentialsCheck(Check):
    id = "podman-credentials"
    title = "Credentials podman and CRI-O use"
    order = 257
    runtimes = RUNTIMES
    depends_on = ("container-runtimes",)
    timeout_s = 5.0
    faq_keys = ("runtime-credentials",)
    codes = (Code.CREDENTIALS_ERROR, Code.CREDENTIALS_DISAGREE)

    def run(self, ctx: CheckContext) -> Finding:
        if not ctx.in_play(*RUNTIMES):
            return skipped(NOT_HERE)
        from diagnose.containers import auth_keys_for, load_crio_conf, podman_auth_files

        _full, name, _image = names_of(ctx)
        root = ctx.options.host_root
        files = podman_auth_files(user_home_of(ctx), dict(ctx.environ), root, ctx.live_host)
        if ctx.in_play("crio"):
            crio_auth = load_crio_conf(root).global_auth_file
            if crio_auth:
                # CRI-O reads its global_auth_file before anything else
                files.insert(0, root / crio_auth.lstrip("/"))
        keys = auth_keys_for(name)
        evidence: dict[str, Any] = {"files": [str(f) for f in files], "keys": keys}
        used: dict[str, Any] | None = None
        seen: list[dict[str, Any]] = []
        issues: list[Issue] = []
        for path in files:
            text = read_text(path)
            if text is None:
                continue
            try:
                doc = json.loads(text)
            except (json.JSONDecodeError, RecursionError) as exc:
                where = f"line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
                issues.append(
                    Issue(
                        Status.FAIL,
                        Code.CREDENTIALS_ERROR,
                        ["runtime-credentials"],
                        f"{path} does not parse ({where}): podman stops at it",
                        [f"Fix or remove {path}; `podman login` rewrites it."],
                    )
                )
                break
            hit = _auth_entry(doc if isinstance(doc, dict) else {}, keys, path)
            if hit is not None:
                seen.append(hit)
                if used is None:
                    used = hit
        evidence["found"] = seen
        if issues:
            return combine(issues, evidence)
        if used is None:
            return passed(
                "no stored credentials for it: podman and CRI-O pull anonymously", **evidence
            )
        others = [s for s in seen[1:] if s.get("username") != used.get("username")]
        summary = (
            f"podman uses {used['source']} from {used['file']} (key {used['key']}"
            + (f", user {used['username']}" if used.get("username") else "")
            + ")"
        )
        if others:
            o = others[0]
            return combine(
                [
                    Issue(
                        Status.WARN,
                        Code.CREDENTIALS_DISAGREE,
                        ["runtime-credentials"],
                        summary
                        + f"; {o['file']} holds another login for it"
                        + (f" (user {o['username']})" if o.get("username") else "")
                        + ", which docker or another tool would use",
                        [
                            "Log in once more with the identity you mean "
                            f"(`podman login {name.split('/')[0]}`), "
                            "or remove the stale entry, so every client uses the same one.",
                        ],
                    )
                ],
                evidence,
            )
        return passed(summary, **evidence)


def _auth_entry(doc: dict[str, Any], keys: list[str], path: Path) -> dict[str, Any] | None:
    """The entry of one auth file that applies, most specific key first; never the secret."""
    from diagnose.containers import normalize_auth_key

    helpers = doc.get("credHelpers") if isinstance(doc.get("credHelpers"), dict) else {}
    auths = doc.get("auths") if isinstance(doc.get("auths"), dict) else {}
    assert isinstance(helpers, dict) and isinstance(auths, dict)
    by_key = {normalize_auth_key(str(k)): v for k, v in auths.items()}
    for key in keys:
        if key in helpers and isinstance(helpers[key], str):
            return {"file": str(path), "key": key, "source": f"credential helper {helpers[key]}"}
        entry = by_key.get(key)
        if isinstance(entry, dict) and (entry.get("auth") or entry.get("identitytoken")):
            user = None
            if isinstance(entry.get("auth"), str):
                try:
                    user = base64.b64decode(entry["auth"], validate=False).decode().split(":", 1)[0]
                except (ValueError, UnicodeDecodeError):
                    user = None
            kind = "an identity token" if entry.get("identitytoken") else "a stored login"
            return {"file": str(path), "key": key, "source": kind, "username": user}
    store = doc.get("credsStore")
    if isinstance(store, str) and store and path.name == "config.json":
        return {"file": str(path), "key": keys[-1], "source": f"credential store {store}"}
    return None
