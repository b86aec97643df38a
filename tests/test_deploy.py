"""deploy/kubernetes/, action.yml and the GitLab CI template, checked without a cluster or a CI
service: every Kubernetes object (as written, and as the kustomizations render it) validated
with kubernetes-validate against a current Kubernetes version's schema; every container's
arguments parsed by our own CLI (so a manifest and the CLI cannot drift apart) and the
DaemonSet's run for real; the CI files validated with check-jsonschema's bundled schemas and
the action's step run as the runner would run it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import typer
import yaml

from diagnose.cli import app
from diagnose.yamlish import loads
from tests import kustomize, lab

DEPLOY = lab.ROOT / "deploy" / "kubernetes"
MANIFESTS = sorted(p for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml")
OBJECTS = [p for p in MANIFESTS if "kind" in (yaml.safe_load(p.read_text()) or {})]
KUSTOMIZATIONS = sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))
K8S = kubernetes_validate.latest_version()
VERSION = tomllib.loads((lab.ROOT / "pyproject.toml").read_text())["project"]["version"]


def objects_of(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_rendered() -> list[tuple[str, dict[str, Any]]]:
    out = [(p.name, o) for p in OBJECTS for o in objects_of(p)]
    for folder in KUSTOMIZATIONS:
        out += [(f"{folder.name}/{o['kind']}", o) for o in kustomize.render(folder)]
    return out


def test_there_is_a_daemonset_a_job_and_a_kustomization():
    kinds = {o["kind"] for _, o in all_rendered()}
    assert {"DaemonSet", "Job", "Namespace", "ConfigMap"} <= kinds
    assert DEPLOY in KUSTOMIZATIONS


@pytest.mark.parametrize(
    ("name", "obj"), all_rendered(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_object_validates_against_current_kubernetes(name, obj):
    kubernetes_validate.validate(obj, K8S, strict=True)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_our_yaml_reader_reads_the_manifests_as_pyyaml_does(path):
    """A pod or secret from these files (kubectl -o yaml) is read by diagnose.yamlish."""
    assert loads(path.read_text()) == yaml.safe_load(path.read_text())


def expand(args: list[str], env: dict[str, str]) -> list[str]:
    """$(VAR) as the kubelet expands it in a container's args."""
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env[m.group(1)], a) for a in args]


def container_env(obj: dict[str, Any], c: dict[str, Any], configmaps: dict[str, Any]) -> dict:
    out = {}
    for e in c.get("env", []):
        source = e.get("valueFrom", {})
        if "value" in e:
            out[e["name"]] = e["value"]
        elif "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "spec.nodeName"
            out[e["name"]] = "node-7"
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            assert ref["name"] in configmaps, f"{obj['kind']}: no ConfigMap {ref['name']}"
            out[e["name"]] = configmaps[ref["name"]][ref["key"]]
    return out


def parse(args: list[str]) -> Any:
    """The container's args as our own CLI parses them (click's make_context, as Typer
    carries it: every option and argument checked, nothing run)."""
    group: Any = typer.main.get_command(app)
    root = group.make_context("diagnose", args[:1])
    command = group.get_command(root, args[0])
    assert command is not None, f"no command {args[0]}"
    return command.make_context(args[0], list(args[1:]), parent=root)


def pod_containers() -> list[tuple[str, dict[str, Any], dict[str, Any], dict[str, str]]]:
    out = []
    listed = {
        (folder / r).resolve()
        for folder in KUSTOMIZATIONS
        for r in yaml.safe_load((folder / "kustomization.yaml").read_text())["resources"]
    }
    # files a kustomization renders are taken as rendered; the others (the Job) as written
    groups = [[o for p in OBJECTS if p.resolve() not in listed for o in objects_of(p)]]
    groups += [kustomize.render(folder) for folder in KUSTOMIZATIONS]
    for objs in groups:
        maps = {o["metadata"]["name"]: o.get("data", {}) for o in objs if o["kind"] == "ConfigMap"}
        for o in objs:
            for c in kustomize.containers(o):
                out.append((o["kind"], o, c, container_env(o, c, maps)))
    return out


@pytest.mark.parametrize(
    ("kind", "obj", "container", "env"),
    pod_containers(),
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_container_args_parse_with_our_cli(kind, obj, container, env):
    args = expand(container["args"], env)
    ctx = parse(args)
    p = ctx.params
    assert ctx.command.name == "check-health"
    assert p["fmt"] == "jsonl", "a pod prints its report as one JSON line"
    assert str(p["host_root"]) == "/host"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    spec = obj["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert mounts["host"]["mountPath"] == "/host" and mounts["host"]["readOnly"] is True
    assert volumes["host"]["hostPath"]["path"] == "/"
    assert spec["hostNetwork"] is True
    assert spec["tolerations"] == [{"operator": "Exists"}], "tolerates every taint"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert set(container["resources"]) == {"requests", "limits"}
    assert env["NODE_NAME"] == "node-7"
    assert container["image"].split(":")[-1] == VERSION or "/" in container["image"]
    if kind == "Job":
        assert spec["nodeName"] and spec["restartPolicy"] == "Never"
        secret = p["pull_secret"]
        mount = next(m for m in container["volumeMounts"] if str(secret).startswith(m["mountPath"]))
        items = volumes[mount["name"]]["secret"]["items"]
        assert any(str(secret).endswith("/" + i["path"]) for i in items), secret
    else:
        assert p["hold"] is True, "a DaemonSet pod logs one report, then waits"


def test_the_overlay_patches_apply():
    objs = {o["kind"]: o for o in kustomize.render(DEPLOY / "overlays" / "example")}
    c = objs["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == f"myregistry.azurecr.io/tools/registry-diagnose:{VERSION}"
    assert c["args"][-1] == "--runtime=containerd"
    assert objs["ConfigMap"]["data"]["TARGET"] == "myregistry.azurecr.io/team/app:1.5"
    assert objs["DaemonSet"]["metadata"]["namespace"] == "registry-diagnose"


def test_the_daemonset_pod_prints_one_json_line_with_its_node_then_holds(tmp_path, schema):
    """The DaemonSet's own arguments, run: one line on stdout, the node's name in it, and the
    process waits until it is told to stop (as the kubelet stops a pod)."""
    (_, _, c, env) = next(x for x in pod_containers() if x[0] == "DaemonSet")
    env = {**env, "TARGET": "127.0.0.1:1"}  # nothing listens: a failing run
    args = expand(c["args"], env)
    args[args.index("--host-root") + 1] = str(lab.empty_root())
    proc = subprocess.Popen(
        [sys.executable, "-m", "diagnose", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**lab.clean_env(tmp_path), **env},
        cwd=lab.ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        report = json.loads(line)
        assert report["node"] == {"name": "node-7", "source": "env"}
        assert report["summary"]["status"] == "fail"
        assert proc.poll() is None, "it holds"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert proc.stdout.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    from tests.conftest import validate_report

    validate_report(report, schema)


# ---------------------------------------------------------------------------- CI templates
def check_jsonschema(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ("vendor.github-actions", lab.ROOT / "action.yml"),
        ("vendor.gitlab-ci", lab.ROOT / "ci" / "registry-diagnose.gitlab-ci.yml"),
    ],
)
def test_ci_files_validate_with_the_bundled_schemas(schema, path):
    p = check_jsonschema(schema, path)
    assert p.returncode == 0, p.stdout + p.stderr


def test_the_actions_step_runs_as_a_runner_runs_it(tmp_path, pki, registry, schema):
    """The preflight step of action.yml run by bash with the environment a runner gives it:
    the job summary gets the Markdown, the SARIF file is written and named in the outputs,
    and the step's exit code is the run's."""
    action = yaml.safe_load((lab.ROOT / "action.yml").read_text())
    step = next(s for s in action["runs"]["steps"] if s.get("id") == "preflight")
    inputs = {k: v.get("default", "") for k, v in action["inputs"].items()}
    inputs.update(
        registry=f"127.0.0.1:{registry.port}",
        image="nothing/here:1",
        args=f"--ca-bundle {pki.ca_file} --runtime docker --host-root {lab.empty_root()}",
    )
    env = {
        name: re.sub(r"\$\{\{\s*inputs\.([\w-]+)\s*\}\}", lambda m: inputs[m.group(1)], value)
        for name, value in step["env"].items()
    }
    files = {k: tmp_path / k for k in ("summary.md", "output.txt")}
    for f in files.values():
        f.write_text("")
    env.update(
        lab.clean_env(tmp_path),
        RUNNER_TEMP=str(tmp_path),
        GITHUB_STEP_SUMMARY=str(files["summary.md"]),
        GITHUB_OUTPUT=str(files["output.txt"]),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    p = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    outputs = dict(line.split("=", 1) for line in files["output.txt"].read_text().splitlines())
    assert p.returncode == 1 and outputs.get("exit-code") == "1", p.stdout + p.stderr
    assert "::error" in p.stdout and ("IMAGE_" in p.stdout or "REPOSITORY_" in p.stdout)
    assert "# registry-diagnose: FAIL" in files["summary.md"].read_text()
    sarif = json.loads(Path(outputs["sarif-file"]).read_text())
    assert sarif["version"] == "2.1.0" and sarif["runs"][0]["results"]
