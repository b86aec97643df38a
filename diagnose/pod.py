"""A pod as input: what `kubectl get pod NAME -o yaml` (or `-o json`) prints, read for what
decides its pulls.

Every image of its containers and init containers becomes a target of the run; its
imagePullSecrets (the kubelet's credential, which this tool only sees when it is passed with
`--pull-secret`), each container's imagePullPolicy, the node it is bound to, and the waiting
reason and message the kubelet left in its status become one more result in the report, the
message explained with the knowledge base.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from diagnose.codes import Code
from diagnose.models import CheckResult, Finding, Report, Status, passed, problem

MAX_POD_BYTES = 4 * 1024 * 1024
POD_CHECK_ID = "pod"
POD_CHECK_TITLE = "Pod status (kubectl)"
# waiting reasons that are the kubelet failing to pull (pkg/kubelet/images/types.go)
PULL_REASONS = (
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "ErrImageInspect",
    "RegistryUnavailable",
    "SignatureValidationFailed",
)


class PodError(ValueError):
    """The file is not a pod manifest; one line, safe to print."""


@dataclass(frozen=True)
class PodImage:
    container: str
    init: bool
    image: str
    pull_policy: str | None


@dataclass(frozen=True)
class Waiting:
    container: str
    reason: str
    message: str


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    node: str | None
    images: tuple[PodImage, ...]
    pull_secrets: tuple[str, ...]
    waiting: tuple[Waiting, ...]

    @property
    def references(self) -> list[str]:
        """Each distinct image once, init containers first (the order the kubelet pulls)."""
        return list(dict.fromkeys(i.image for i in self.images))


def read_pod(path: Path) -> Pod:
    """The pod in a file written by `kubectl get pod -o yaml|json`."""
    from diagnose.yamlish import YamlError, load_file

    try:
        doc = load_file(path, "pod file", MAX_POD_BYTES)
    except YamlError as exc:
        raise PodError(str(exc)) from None
    return parse_pod(doc, str(path))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def parse_pod(doc: Any, where: str = "pod") -> Pod:
    """A Pod object (or a List holding exactly one) as a `Pod`."""
    if isinstance(doc, dict) and doc.get("kind") == "List":
        items = _dicts(doc.get("items"))
        if len(items) != 1:
            raise PodError(f"{where}: a List of {len(items)} objects; give one pod")
        doc = items[0]
    if not isinstance(doc, dict) or doc.get("kind") != "Pod":
        kind = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
        raise PodError(f"{where}: kind is {str(kind)[:40]!r}, not 'Pod' (kubectl get pod -o yaml)")
    meta, spec, status = (_dict(doc.get(k)) for k in ("metadata", "spec", "status"))
    images = [
        PodImage(
            _text(c.get("name")),
            init,
            _text(c.get("image")),
            _text(c.get("imagePullPolicy")) or None,
        )
        for key, init in (("initContainers", True), ("containers", False))
        for c in _dicts(spec.get(key))
    ]
    missing = [i.container or "?" for i in images if not i.image.strip()]
    if missing:
        raise PodError(f"{where}: container {missing[0][:60]!r} names no image")
    if not images:
        raise PodError(f"{where}: the pod has no containers")
    secrets = tuple(
        s for s in (_text(d.get("name")) for d in _dicts(spec.get("imagePullSecrets"))) if s
    )
    waiting = []
    for key in ("initContainerStatuses", "containerStatuses"):
        for cs in _dicts(status.get(key)):
            w = _dict(cs.get("state")).get("waiting")
            if isinstance(w, dict) and _text(w.get("reason")):
                waiting.append(
                    Waiting(_text(cs.get("name")), _text(w.get("reason")), _text(w.get("message")))
                )
    return Pod(
        name=_text(meta.get("name")) or "?",
        namespace=_text(meta.get("namespace")) or "default",
        node=_text(spec.get("nodeName")) or None,
        images=tuple(images),
        pull_secrets=secrets,
        waiting=tuple(waiting),
    )


def pod_finding(pod: Pod, *, pull_secret_given: bool) -> Finding:
    """What the pod's own status says, explained, with the steps it asks for."""
    from diagnose import faq

    evidence: dict[str, Any] = {
        "pod": f"{pod.namespace}/{pod.name}",
        "node": pod.node,
        "images": [
            {
                "container": i.container,
                "init": i.init,
                "image": i.image,
                "pull_policy": i.pull_policy,
            }
            for i in pod.images
        ],
        "image_pull_secrets": list(pod.pull_secrets),
        "waiting": [{"container": w.container, "reason": w.reason} for w in pod.waiting],
    }
    steps: list[str] = []
    if pod.pull_secrets and not pull_secret_given:
        first = pod.pull_secrets[0]
        steps.append(
            f"The kubelet pulls with the pod's imagePullSecrets ({', '.join(pod.pull_secrets)}), "
            "which this run did not use: `kubectl get secret "
            f"{first} -n {pod.namespace} -o yaml > {first}.yaml`, then run again with "
            f"`--pull-secret {first}.yaml`."
        )
    if pod.node:
        steps.append(
            f"The pod is bound to node {pod.node}: run the same check there (the Job of "
            "deploy/kubernetes/job-node.yaml with `nodeName: " + pod.node + "`)."
        )
    pulls = [w for w in pod.waiting if w.reason in PULL_REASONS]
    if not pulls:
        others = ", ".join(f"{w.container}: {w.reason}" for w in pod.waiting)
        summary = f"pod {pod.namespace}/{pod.name}: no container waits on its image pull"
        return passed(summary + (f" (waiting: {others})" if others else ""), **evidence)
    keys: dict[str, None] = {}
    for w in pulls:
        for m in faq.match_line(w.message)[:3]:
            keys.setdefault(m.key, None)
        if w.reason == "ErrImageNeverPull":
            steps.append(
                f"{w.container}: imagePullPolicy is Never and the image is not on the node: "
                "set IfNotPresent, or put the image there first."
            )
        if w.reason == "InvalidImageName":
            steps.append(f"{w.container}: the image reference in the pod spec is not valid.")
    keys.setdefault("kubernetes-image-pull", None)
    said = "; ".join(
        f"{w.container}: {w.reason}" + (f": {w.message[:400]}" if w.message else "") for w in pulls
    )
    evidence["messages"] = {w.container: w.message[:2000] for w in pulls}
    evidence["explained_by"] = [k for k in keys if k != "kubernetes-image-pull"]
    return problem(
        Status.WARN,
        f"the kubelet cannot pull for pod {pod.namespace}/{pod.name}"
        + (f" on node {pod.node}" if pod.node else "")
        + f": {said}",
        code=Code.POD_IMAGE_PULL_ERROR,
        faq=list(keys),
        remediation=steps,
        evidence=evidence,
    )


def pod_result(pod: Pod, *, pull_secret_given: bool) -> CheckResult:
    return CheckResult.from_finding(
        POD_CHECK_ID,
        POD_CHECK_TITLE,
        pod_finding(pod, pull_secret_given=pull_secret_given),
        duration_s=0.0,
        registry=None,
        started_s=0.0,
    )


def rounds(references: list[str], registry_of: Any) -> list[list[str]]:
    """The images split into runs holding at most one image per registry (a run checks one
    image per registry); registry_of maps a reference to its registry's name."""
    out: list[list[str]] = []
    for ref in references:
        key = registry_of(ref)
        for batch in out:
            if all(registry_of(r) != key for r in batch):
                batch.append(ref)
                break
        else:
            out.append([ref])
    return out


def combine(reports: list[Report], pod: CheckResult) -> Report:
    """The runs of one pod as one report: the host's checks once (from the first run), every
    registry's checks, a registry checked again for another image labelled with that image,
    and the pod's own result first."""
    first = reports[0]
    results = [pod, *first.results]
    registries = list(first.registries)
    seen = {r.login_server for r in first.registries}
    for later in reports[1:]:
        labels: dict[str, str] = {}
        for reg in later.registries:
            if reg.login_server in seen and reg.image is not None:
                labels[reg.login_server] = f"{reg.login_server} ({reg.image.given})"
            seen.add(reg.login_server)
            registries.append(reg)
        for r in later.results:
            if r.registry is None:
                continue
            results.append(replace(r, registry=labels.get(r.registry, r.registry)))
    notes = list(dict.fromkeys(n for rep in reports for n in rep.notes))
    return replace(
        first,
        registries=tuple(registries),
        results=tuple(results),
        notes=tuple(notes),
        duration_s=sum(r.duration_s for r in reports),
    )
