"""`check-health --pod FILE`: a pod as kubectl prints it (YAML, with the folded lines kubectl
writes for a long message, or JSON). Every container and init container image is checked
against the suite's registry (two images on one registry: two runs, one report), and the pod's
imagePullSecrets, pull policies, node and waiting reason are in the report, the message
explained with the knowledge base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diagnose.pod import PodError, parse_pod, pod_finding, read_pod
from diagnose.yamlish import loads
from tests import lab
from tests.conftest import validate_report

POD = """apiVersion: v1
kind: Pod
metadata:
  creationTimestamp: "2026-11-23T10:00:00Z"
  labels:
    app: web
  name: web-7d4b9c
  namespace: shop
spec:
  containers:
  - image: {server}/pod/app:9.9
    imagePullPolicy: Always
    name: app
  - image: {server}/pod/side:1.0
    imagePullPolicy: IfNotPresent
    name: side
  imagePullSecrets:
  - name: regcred
  initContainers:
  - image: {server}/pod/app:1.0
    imagePullPolicy: IfNotPresent
    name: init
  nodeName: aks-nodepool1-12345-vmss000002
status:
  containerStatuses:
  - image: {server}/pod/app:9.9
    imageID: ""
    name: app
    ready: false
    restartCount: 0
    started: false
    state:
      waiting:
        message: 'rpc error: code = NotFound desc = failed to pull and unpack image
          "{server}/pod/app:9.9": failed to resolve reference "{server}/pod/app:9.9":
          {server}/pod/app:9.9: not found'
        reason: ErrImagePull
  - image: {server}/pod/side:1.0
    name: side
    state:
      waiting:
        reason: ContainerCreating
  phase: Pending
"""


@pytest.fixture(scope="module")
def pod_images(registry, pki) -> str:
    base = f"https://127.0.0.1:{registry.port}"
    lab.push_real_image(base, "pod/app", "1.0", ca_file=pki.ca_file)
    lab.push_real_image(base, "pod/side", "1.0", ca_file=pki.ca_file)
    return f"127.0.0.1:{registry.port}"


def test_kubectl_yaml_and_json_read_the_same(tmp_path):
    text = POD.format(server="r.test:5000")
    (tmp_path / "pod.yaml").write_text(text)
    (tmp_path / "pod.json").write_text(json.dumps(loads(text), indent=4))
    pod = read_pod(tmp_path / "pod.yaml")
    assert pod == read_pod(tmp_path / "pod.json")
    assert pod.references == [
        "r.test:5000/pod/app:1.0",
        "r.test:5000/pod/app:9.9",
        "r.test:5000/pod/side:1.0",
    ]
    assert [(i.container, i.init, i.pull_policy) for i in pod.images] == [
        ("init", True, "IfNotPresent"),
        ("app", False, "Always"),
        ("side", False, "IfNotPresent"),
    ]
    assert pod.pull_secrets == ("regcred",) and pod.node == "aks-nodepool1-12345-vmss000002"
    app = pod.waiting[0]
    assert app.reason == "ErrImagePull" and app.message.endswith(
        "r.test:5000/pod/app:9.9: not found"
    )
    finding = pod_finding(pod, pull_secret_given=False)
    assert finding.code == "POD_IMAGE_PULL_ERROR" and finding.status.value == "warn"
    assert "manifest-unknown" in finding.faq and "kubernetes-image-pull" in finding.faq
    steps = " ".join(finding.remediation)
    assert "--pull-secret regcred.yaml" in steps and "kubectl get secret regcred -n shop" in steps
    assert "aks-nodepool1-12345-vmss000002" in steps
    # with the secret passed, no reminder
    assert "--pull-secret" not in " ".join(pod_finding(pod, pull_secret_given=True).remediation)


def test_check_health_pod_checks_every_image(pod_images, pki, tmp_path, env, schema):
    pod = tmp_path / "pod.yaml"
    pod.write_text(POD.format(server=pod_images))
    r = lab.diagnose(
        "check-health", "--pod", str(pod), "--ca-bundle", str(pki.ca_file), "--runtime", "docker",
        "-f", "json", "-q", env=env,
    )  # fmt: skip
    assert r.rc == 1, r.err
    report = r.report
    validate_report(report, schema)
    first = report["checks"][0]
    assert first["id"] == "pod" and first["code"] == "POD_IMAGE_PULL_ERROR"
    assert first["evidence"]["image_pull_secrets"] == ["regcred"]
    assert first["evidence"]["node"] == "aks-nodepool1-12345-vmss000002"
    manifests = {c["registry"]: c for c in report["checks"] if c["id"] == "manifest"}
    # three images on one registry: three runs (a run checks one image per registry), the
    # later ones labelled with their image
    assert len(manifests) == 3, manifests.keys()
    assert manifests[pod_images]["status"] == "pass"  # the init container's, pulled first
    assert manifests[f"{pod_images} ({pod_images}/pod/app:9.9)"]["code"] == "IMAGE_TAG_NOT_FOUND"
    assert manifests[f"{pod_images} ({pod_images}/pod/side:1.0)"]["status"] == "pass"
    images = [reg["image"]["given"] for reg in report["target"]["registries"]]
    assert sorted(images) == sorted(
        f"{pod_images}/pod/{x}" for x in ("app:1.0", "side:1.0", "app:9.9")
    )
    # the host's checks once
    ids = [c["id"] for c in report["checks"] if c["registry"] is None]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("apiVersion: apps/v1\nkind: Deployment\n", "not 'Pod'"),
        ("kind: Pod\nspec: {}\n", "no containers"),
        ("kind: Pod\nspec:\n  containers:\n  - name: a\n", "names no image"),
        ("kind: Pod\n  bad: indentation\n", "line 2"),
        ('{"kind": "List", "items": []}', "List of 0"),
    ],
)
def test_bad_pod_files_exit_2_with_one_line(tmp_path, env, text, needle):
    pod = tmp_path / "pod.yaml"
    pod.write_text(text)
    r = lab.diagnose("check-health", "--pod", str(pod), env=env)
    assert r.rc == 2 and needle in r.err and r.err.count("\n") == 1, r.err
    r = lab.diagnose("check-health", "x.test", "--pod", str(pod), env=env)
    assert r.rc == 2


def test_invalid_image_name_in_a_pod_is_exit_2_naming_it(tmp_path, env):
    pod = tmp_path / "pod.yaml"
    pod.write_text("kind: Pod\nspec:\n  containers:\n  - name: a\n    image: x.io//bad\n")
    r = lab.diagnose("check-health", "--pod", str(pod), env=env)
    assert r.rc == 2 and "x.io//bad" in r.err, r.err


VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=10,
)
KEYS = st.sampled_from(
    ["kind", "spec", "status", "metadata", "containers", "initContainers", "image", "name",
     "imagePullSecrets", "containerStatuses", "state", "waiting", "reason", "message", "items"]
)  # fmt: skip
SHAPED = st.recursive(
    VALUES,
    lambda inner: st.one_of(
        st.dictionaries(KEYS, inner, max_size=5),
        st.lists(inner, max_size=3),
        st.builds(lambda d: {**d, "kind": "Pod"}, st.dictionaries(KEYS, inner, max_size=5)),
    ),
    max_leaves=25,
)


@settings(max_examples=500, deadline=None)
@given(SHAPED)
def test_any_document_is_a_pod_or_one_pod_error(doc):
    try:
        pod = parse_pod(doc)
    except PodError as exc:
        assert "\n" not in str(exc)
        return
    assert pod.images and all(i.image for i in pod.images)
    pod_finding(pod, pull_secret_given=False)


def test_unreadable_and_huge_files(tmp_path):
    with pytest.raises(PodError, match="does not exist"):
        read_pod(tmp_path / "nope.yaml")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (5 * 1024 * 1024))
    with pytest.raises(PodError, match="larger than"):
        read_pod(big)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(PodError, match="UTF-8"):
        read_pod(binary)
    assert isinstance(Path, type)
