# registry-diagnose as a container image: for Kubernetes nodes (deploy/kubernetes/), CI runners
# and any machine without Python.
#
#   docker build -t registry-diagnose .
#   docker run --rm --network host --read-only -v /:/host:ro registry-diagnose \
#       check-health myregistry.azurecr.io --host-root /host
#
# BASE is any image with python3 (3.11 or later) and its venv module; both stages must use the
# same one, since the virtual environment built in the first is copied into the last.
ARG BASE=python:3.12-slim-bookworm

# ---------------------------------------------------------------- stage 1: wheel and venv
FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY diagnose ./diagnose
COPY checks ./checks
COPY reports ./reports
# The wheel is built here; the venv gets the wheel and its dependencies, then loses what a run
# never loads: pip and setuptools, and pygments (rich's syntax highlighter, 8 MB; the reports
# draw no code). Only our own modules are byte-compiled ahead: compiling every dependency would
# add 8 MB, and the image stays under 150 MB on a slim base. (The root filesystem may be
# read-only, so the rest is compiled in memory at each start: a few tenths of a second.)
RUN python3 -m venv /opt/registry-diagnose \
 && /opt/registry-diagnose/bin/pip wheel --no-deps --wheel-dir /dist . \
 && /opt/registry-diagnose/bin/pip install --no-compile /dist/*.whl \
 && /opt/registry-diagnose/bin/pip uninstall --yes pip setuptools pygments \
 && rm -f /opt/registry-diagnose/bin/activate* /opt/registry-diagnose/bin/Activate.ps1 \
 && cd /opt/registry-diagnose/lib/python3*/site-packages \
 && python3 -m compileall -q diagnose checks reports

# ------------------------------------------------------------------------ stage 2: runtime
FROM ${BASE}
ARG VERSION=0.1.0
ARG SOURCE=https://github.com/registry-diagnose/registry-diagnose
LABEL org.opencontainers.image.title="registry-diagnose" \
      org.opencontainers.image.description="Tells you why this machine cannot pull from or push to a container registry, and what to do about it." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /opt/registry-diagnose /opt/registry-diagnose
ENV PATH=/opt/registry-diagnose/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# Non-root by default (65532: the conventional "nonroot" id; no passwd entry is needed). The
# DaemonSet runs it as root with every capability dropped, to read root-only node files.
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["diagnose"]
CMD ["--help"]
