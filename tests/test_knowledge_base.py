"""The FAQ knowledge base: complete, cited, in our own words, and every key a check can emit."""

from __future__ import annotations

import ast
import re
import unicodedata
from pathlib import Path

import pytest

from diagnose import faq, plugins

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT.parent / "shared" / "seeds"
REQUIRED = {
    "client-timeout",
    "signature-verification",
    "lowercase-login-server",
    "tls12",
    "nondistributable-artifacts",
    "permission-propagation",
    "docker-debug-logs",
    "slow-pull",
    "slow-push",
    "redirect-auth-header",
    "repository-format",
    "operation-not-allowed",
    "firewall-propagation",
    "network-connectivity",
    "registry-api-v2",
    "content-trust",
    "pull-push-roles",
    "admin-credentials",
    "cli-in-container",
}


def test_required_keys_present_and_complete():
    kb = faq.load()
    assert set(kb) >= REQUIRED
    for key, entry in kb.items():
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", key)
        assert entry.title and entry.question and entry.document
        assert entry.remediation and all(s.strip() for s in entry.remediation)
        assert entry.links and all(link.startswith("https://") for link in entry.links)
        for p in entry.patterns:
            re.compile(p)


def _faq_literals(tree: ast.AST) -> set[str]:
    """String keys in `faq=` arguments, `faq`/`faq_keys` assignments and the constants they use."""
    consts: dict[str, ast.AST] = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            consts[node.targets[0].id] = node.value

    def keys(v: ast.AST, depth: int = 0) -> set[str]:
        if depth > 5:
            return set()
        if isinstance(v, ast.Constant) and isinstance(v.value, str):
            return {v.value}
        if isinstance(v, ast.List | ast.Tuple | ast.Set):
            return set().union(*(keys(e, depth + 1) for e in v.elts)) if v.elts else set()
        if isinstance(v, ast.IfExp):
            return keys(v.body, depth + 1) | keys(v.orelse, depth + 1)
        if isinstance(v, ast.Name) and v.id in consts:
            return keys(consts[v.id], depth + 1)
        return set()

    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for k in node.keywords:
                if k.arg == "faq":
                    found |= keys(k.value)
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id in ("faq_keys", "faq", "FAQ") for t in node.targets
        ):
            found |= keys(node.value)
    return found


def test_every_faq_key_in_code_exists():
    kb = faq.load()
    used: set[str] = set()
    for folder in ("checks", "diagnose", "reports"):
        for path in (ROOT / folder).glob("*.py"):
            used |= _faq_literals(ast.parse(path.read_text()))
    used = {u for u in used if re.fullmatch(r"[a-z0-9][a-z0-9-]*", u)}
    assert used, "no FAQ keys found in the code"
    assert used <= set(kb), sorted(used - set(kb))


def test_declared_keys_of_registered_checks_exist():
    kb = faq.load()
    checks, broken = plugins.load_checks()
    assert not broken
    for c in checks:
        assert set(c.faq_keys) <= set(kb), (c.id, set(c.faq_keys) - set(kb))
        assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", code) for code in c.codes)


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("`", "")
    return re.sub(r"\s+", " ", text).strip().lower()


@pytest.mark.may_skip("the FAQ seed documents are outside the repository")
@pytest.mark.skipif(not SEEDS.is_dir(), reason="the FAQ seed documents are not beside the repo")
def test_each_entry_cites_a_real_faq_question():
    corpus = _norm(" ".join(p.read_text(errors="replace") for p in SEEDS.glob("*.txt")))
    for key, entry in faq.load().items():
        if not entry.document.startswith("Azure Container Registry FAQ"):
            # an entry from beyond the FAQ names its source document and links to it
            assert entry.links and entry.document, key
            continue
        assert _norm(entry.question) in corpus, f"{key}: question not found in the FAQ"


@pytest.mark.may_skip("the FAQ seed documents are outside the repository")
@pytest.mark.skipif(not SEEDS.is_dir(), reason="the FAQ seed documents are not beside the repo")
def test_remediation_is_in_our_own_words():
    corpus = _norm(" ".join(p.read_text(errors="replace") for p in SEEDS.glob("*.txt")))
    for key, entry in faq.load().items():
        for step in entry.remediation:
            words = _norm(step).split()
            for i in range(len(words) - 7):
                run = " ".join(words[i : i + 8])
                assert run not in corpus, f"{key}: copied from the FAQ: {run!r}"


@pytest.mark.parametrize(
    ("line", "key"),
    [
        (
            "Error response from daemon: Get https://x.azurecr.io/v2/: net/http: request canceled "
            "while waiting for connection (Client.Timeout exceeded while awaiting headers)",
            "client-timeout",
        ),
        (
            "<Error><Code>InvalidAuthenticationInfo</Code><Message>Authentication information is "
            "not given in the correct format.",
            "redirect-auth-header",
        ),
        (
            "denied: client with IP '1.2.3.4' is not allowed access. Refer https://aka.ms/acr/firewall",
            "firewall-propagation",
        ),
        ("remote error: tls: protocol version not supported", "tls12"),
        ("invalid reference format: repository name must be lowercase", "repository-format"),
    ],
)
def test_error_lines_point_to_the_right_entry(line, key):
    hits = faq.match_line(line)
    assert hits and hits[0].key == key, hits
