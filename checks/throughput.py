"""Throughput: is it the network or the registry? Real blobs pulled from the registry (one stream
and several, as docker does), an opt-in push, and this host's internet speed for comparison."""

from __future__ import annotations

import os
import time
from functools import partial
from typing import Any

from diagnose.check import Check
from diagnose.codes import Code
from diagnose.context import CheckContext, Options
from diagnose.facts import INTERNET_MBPS
from diagnose.findings import ANSWER_CODES, ANSWER_FAQ, REQUEST_CODES
from diagnose.models import Finding, Status, passed, problem, skipped

BYTE_BUDGET = 2 * 1024 * 1024 * 1024


def _mbs(bytes_per_s: float) -> float:
    from diagnose.transfer import MB

    return round(bytes_per_s / MB, 3)


class InternetSpeedCheck(Check):
    id = "internet-speed"
    suggest = False
    title = "Internet speed (speedtest)"
    order = 300
    scope = "host"
    timeout_s = 60.0
    faq_keys = ("slow-pull", "slow-push")

    def skip_reason(self, ctx: CheckContext) -> str | None:
        o = ctx.options
        if not (o.throughput or o.speedtest_mini):
            return "measured with --throughput (or --speedtest-mini URL)"
        return None

    def run(self, ctx: CheckContext) -> Finding:
        from diagnose.speed import SpeedtestUnavailable, measure

        try:
            result = measure(
                ctx.options.speedtest_mini, ctx.options.speedtest_server, timeout=ctx.budget(10.0)
            )
        except SpeedtestUnavailable as exc:
            return skipped(f"no speedtest server reachable: {exc}")
        down = result["download_mbps"]
        up = result["upload_mbps"]
        ctx.put(INTERNET_MBPS, float(down))
        return passed(
            f"download {down:.1f} Mbit/s, upload {up:.1f} Mbit/s, latency "
            f"{result['latency_ms']:.0f} ms ({result['server']})",
            throughput_mbps={
                "internet download": round(down / 8, 3),
                "internet upload": round(up / 8, 3),
            },
            **result,
        )


class PullThroughputCheck(Check):
    id = "pull-throughput"
    suggest = False
    title = "Pull throughput"
    order = 310
    depends_on = ("authorized-request", "internet-speed")
    starts_after = ("dns",)
    timeout_s = 30.0
    faq_keys = ("slow-pull", "redirect-auth-header", "blob-digest-mismatch", *ANSWER_FAQ)
    codes = (
        Code.SLOW_PULL,
        Code.BLOB_DIGEST_MISMATCH,
        Code.BLOB_SIZE_MISMATCH,
        *REQUEST_CODES,
        *ANSWER_CODES,
    )

    def time_limit(self, options: Options) -> float:
        return options.throughput_seconds + 15.0

    def skip_reason(self, ctx: CheckContext) -> str | None:
        if not ctx.options.throughput:
            return "measured with --throughput (downloads for --throughput-seconds)"
        reg = ctx.registry
        if reg is not None and not reg.repository:
            return "needs an image reference, --image or --repository: the blobs to download"
        return None

    def run(self, ctx: CheckContext) -> Finding:
        from diagnose.registryapi import NotReadable, auth_for, base_url, manifest_for
        from diagnose.transfer import (
            Transfer,
            TransferError,
            aggregate_rate,
            download,
            parallel,
            phases_ms,
        )

        reg = ctx.registry
        assert reg is not None
        ctx.result("authorized-request")
        repo, tag = reg.repository, None
        if reg.image is not None:
            tag = reg.image.reference
        headers, auth = auth_for(ctx)
        base = base_url(ctx, repo)
        try:
            doc = manifest_for(ctx, repo, tag)
        except NotReadable as exc:
            if exc.finding is not None:  # the registry's own answer: a finding, not a skip
                return exc.finding
            return skipped(f"no blob to download: {exc}")
        layers = sorted(
            (
                x
                for x in doc.get("layers") or []
                if isinstance(x, dict) and not x.get("urls") and isinstance(x.get("digest"), str)
            ),
            key=lambda x: -int(x.get("size") or 0),
        )
        if not layers:
            return skipped("the image has no layers to download")
        if auth is not None:
            import base64

            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers = {"Authorization": f"Basic {token}"}
        budget = ctx.options.throughput_seconds
        streams = max(1, ctx.options.streams)
        ssl_ctx = ctx.ssl_context(not ctx.options.insecure)

        def resolve(host: str, port: int) -> list[str]:
            return ctx.resolver.addresses(host, port, ctx.budget(3.0))

        def job(layer: dict[str, Any], deadline: float) -> Transfer:
            return download(
                f"{base}/blobs/{layer['digest']}",
                headers=headers,
                resolve=resolve,
                ctx=ssl_ctx,
                deadline=deadline,
                max_bytes=BYTE_BUDGET,
                digest=str(layer["digest"]),
                size=layer["size"] if isinstance(layer.get("size"), int) else None,
            )

        warm = min(1.0, budget * 0.1)
        t0 = time.monotonic()
        try:
            single = job(layers[0], t0 + budget / 2)
        except TransferError as exc:
            return self._failed(ctx, f"downloading layer {layers[0]['digest'][:19]}…", exc)
        single_rate = single.rate_after(single.first_byte_at + warm)
        t1 = time.monotonic()
        picks = [layers[i % len(layers)] for i in range(streams)]
        multi, errors = parallel([partial(job, layer, t1 + budget / 2) for layer in picks])
        multi_rate = aggregate_rate(multi, warm)
        elapsed = time.monotonic() - t0
        bad = [t for t in [single, *multi] if t.digest_ok is False]
        evidence: dict[str, Any] = {
            "repository": repo,
            "layers": [{"digest": x["digest"], "size": x.get("size")} for x in layers[:10]],
            "single_stream": {
                "bytes": single.bytes,
                "mb_per_s": _mbs(single_rate),
                "complete": single.complete,
                "phases_ms": phases_ms(single),
                "time_to_first_byte_ms": round((single.first_byte_at - t0) * 1000, 1),
                "redirected_to": single.redirected_to,
            },
            "streams": streams,
            "multi_stream": {
                "bytes": sum(t.bytes for t in multi),
                "mb_per_s": _mbs(multi_rate),
                "errors": errors,
            },
            "budget_s": budget,
            "elapsed_s": round(elapsed, 2),
            "throughput_mbps": {
                "pull, 1 stream": _mbs(single_rate),
                f"pull, {streams} streams": _mbs(multi_rate),
            },
        }
        if bad:
            from diagnose.findings import blob_mismatch

            t = bad[0]
            return blob_mismatch(
                f"layer {t.url.rsplit('/', 1)[-1][:19]}…",
                t.url.rsplit("/", 1)[-1],
                t.size,
                "sha256:" + t.hasher.hexdigest(),
                t.bytes,
                "the storage host" if t.redirected_to else "the registry",
                evidence,
            )
        # a multi-stream download that broke is a finding too (the error says how)
        if errors and not multi:
            return problem(
                Status.FAIL,
                f"every parallel download failed: {errors[0]}",
                code=Code.REGISTRY_REQUEST_ERROR,
                faq=["network-connectivity", "transfer-cut-short"],
                evidence=evidence,
            )
        best = max(single_rate, multi_rate)
        return self._verdict(ctx, best, evidence)

    def _failed(self, ctx: CheckContext, what: str, exc: Any) -> Finding:
        """A download that broke, or an answer that is not a success: said as every other
        check says it (diagnose.findings)."""
        from diagnose.findings import answer, transfer_broken
        from diagnose.registryapi import auth_for, is_anonymous

        if exc.brk is not None:
            return transfer_broken(what, exc.brk, {})
        if exc.status:
            headers, auth = auth_for(ctx)
            return answer(
                what,
                exc.status,
                exc.headers,
                exc.body,
                server=ctx.registry.login_server if ctx.registry else "",
                anonymous=is_anonymous(ctx, headers, auth),
                evidence={},
            )
        return problem(
            Status.FAIL,
            f"{what}: {exc}",
            code=Code.REGISTRY_REQUEST_ERROR,
            faq=["network-connectivity", "redirect-auth-header"],
            evidence={"error": exc.kind},
        )

    def _verdict(self, ctx: CheckContext, best: float, evidence: dict[str, Any]) -> Finding:
        from diagnose.transfer import MB

        mbs = best / MB
        ctx.result("internet-speed")
        down = ctx.fact(INTERNET_MBPS)
        summary = (
            f"{mbs:.2f} MB/s ({mbs * 8:.1f} Mbit/s) best; 1 stream "
            f"{evidence['single_stream']['mb_per_s']:.2f} MB/s, {evidence['streams']} "
            f"streams {evidence['multi_stream']['mb_per_s']:.2f} MB/s"
        )
        slow = mbs < ctx.options.slow_below_mbs
        if isinstance(down, int | float) and down > 0:
            evidence["internet_download_mbit"] = down
            share = (mbs * 8) / down
            evidence["share_of_internet"] = round(share, 3)
            if share < 0.3:
                return problem(
                    Status.WARN,
                    f"{summary}: far below this host's internet download "
                    f"({down:.0f} Mbit/s): the registry or its region is the bottleneck",
                    code=Code.SLOW_PULL,
                    faq=["slow-pull"],
                    remediation=[
                        "Pull from a registry replica in (or near) this host's region "
                        "(for ACR: geo-replication), or run the clients in the "
                        "registry's region."
                    ],
                    evidence=evidence,
                )
            if slow:
                return problem(
                    Status.WARN,
                    f"{summary}; this host's internet is slow too ({down:.0f} "
                    "Mbit/s): the local network is the bottleneck",
                    code=Code.SLOW_PULL,
                    faq=["slow-pull"],
                    remediation=[
                        "Improve this host's connection, or move the work to a machine "
                        "in the registry's region."
                    ],
                    evidence=evidence,
                )
        elif slow:
            return problem(
                Status.WARN,
                f"{summary}: below {ctx.options.slow_below_mbs:g} MB/s",
                code=Code.SLOW_PULL,
                faq=["slow-pull"],
                remediation=[
                    "Measure this host's internet too (--throughput runs a speedtest) "
                    "to see whether the network or the registry is slow."
                ],
                evidence=evidence,
            )
        return passed(summary, **evidence)


class PushThroughputCheck(Check):
    id = "push-throughput"
    suggest = False
    title = "Push throughput (opt-in)"
    order = 320
    depends_on = ("authorized-request",)
    starts_after = ("dns",)
    timeout_s = 60.0
    faq_keys = ("slow-push", "pull-push-roles")
    codes = (Code.PUSH_ERROR,)

    def time_limit(self, options: Options) -> float:
        return options.throughput_seconds * 2 + 20.0

    def skip_reason(self, ctx: CheckContext) -> str | None:
        if not ctx.options.push_test:
            return "writes to the registry: only with --push-test"
        if ctx.registry is not None and not ctx.registry.repository:
            return "needs --repository: where to upload the test blob"
        return None

    def run(self, ctx: CheckContext) -> Finding:
        import hashlib

        from diagnose.registryapi import auth_for, getter

        reg = ctx.registry
        assert reg is not None and reg.repository
        ctx.result("authorized-request")
        headers, auth = auth_for(ctx)
        session = ctx.http(verify=not ctx.options.insecure)
        get = getter(ctx)
        scheme = "http" if reg.scheme == "http" else "https"
        base = f"{scheme}://{reg.login_server}/v2/{reg.repository}"
        size = ctx.options.push_bytes
        data = os.urandom(size)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        results: dict[str, Any] = {}
        try:
            results["monolithic"] = self._upload(
                session, base, headers, auth, data, digest, chunk=None, ctx=ctx
            )
            results["chunked"] = self._upload(
                session, base, headers, auth, data, digest, chunk=max(1, size // 4), ctx=ctx
            )
        except _PushFailed as exc:
            return problem(
                Status.FAIL,
                str(exc),
                code=Code.PUSH_ERROR,
                faq=["pull-push-roles", "slow-push"],
                evidence={"digest": digest},
            )
        deleted = session.delete(
            f"{base}/blobs/{digest}", headers=headers, auth=auth, timeout=ctx.budget(10.0)
        )
        cleanup = (
            "deleted"
            if deleted.status_code in (200, 202)
            else f"the registry refused the delete (HTTP {deleted.status_code}): blob {digest} "
            "is left unreferenced and its garbage collection removes it"
        )
        del get
        best = max(r["mb_per_s"] for r in results.values())
        return passed(
            f"push {best:.2f} MB/s (monolithic {results['monolithic']['mb_per_s']:.2f}, "
            f"chunked {results['chunked']['mb_per_s']:.2f}); test blob {cleanup}",
            digest=digest,
            bytes=size,
            cleanup=cleanup,
            uploads=results,
            throughput_mbps={
                "push, monolithic": results["monolithic"]["mb_per_s"],
                "push, chunked": results["chunked"]["mb_per_s"],
            },
        )

    def _upload(
        self,
        session: Any,
        base: str,
        headers: dict[str, str],
        auth: tuple[str, str] | None,
        data: bytes,
        digest: str,
        chunk: int | None,
        ctx: CheckContext,
    ) -> dict[str, Any]:
        from urllib.parse import urljoin

        t0 = time.monotonic()
        start = session.post(
            f"{base}/blobs/uploads/",
            headers=headers,
            auth=auth,
            allow_redirects=False,
            timeout=ctx.budget(10.0),
        )
        if start.status_code != 202 or not start.headers.get("Location"):
            raise _PushFailed(f"starting an upload answered HTTP {start.status_code}")
        loc = urljoin(f"{base}/", start.headers["Location"])
        if chunk:
            offset = 0
            while offset < len(data):
                piece = data[offset : offset + chunk]
                r = session.patch(
                    loc,
                    data=piece,
                    auth=auth,
                    allow_redirects=False,
                    timeout=ctx.budget(30.0),
                    headers={
                        **headers,
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{offset + len(piece) - 1}",
                    },
                )
                if r.status_code != 202:
                    raise _PushFailed(f"a chunk answered HTTP {r.status_code}")
                loc = urljoin(f"{base}/", r.headers.get("Location", loc))
                offset += len(piece)
            body = b""
        else:
            body = data
        sep = "&" if "?" in loc else "?"
        done = session.put(
            f"{loc}{sep}digest={digest}",
            data=body,
            auth=auth,
            allow_redirects=False,
            timeout=ctx.budget(30.0),
            headers={**headers, "Content-Type": "application/octet-stream"},
        )
        if done.status_code != 201:
            raise _PushFailed(f"finishing the upload answered HTTP {done.status_code}")
        seconds = time.monotonic() - t0
        return {"seconds": round(seconds, 3), "mb_per_s": _mbs(len(data) / seconds)}


class _PushFailed(Exception):
    pass
