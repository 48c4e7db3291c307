# syntax=docker/dockerfile:1
# Sluicegate image: the `sluicegate` command on a slim CPython 3.11, run as a non-root user.
#
#   docker build -t sluicegate:0.1.0 .
#   docker run --rm -p 8080:8080 -v "$PWD/policy.yaml:/etc/sluicegate/policy.yaml:ro" sluicegate:0.1.0
#
# Dependencies are installed exactly as pinned in deploy/requirements.lock (regenerate it with
# deploy/freeze_runtime.py when pyproject.toml changes); `pip check` fails the build if a pin is
# missing. Every pinned package has a manylinux wheel, so no stage needs a compiler. Pin the base
# by digest in production: --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:…
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# a venv without pip: the base image's pip installs into it (pip --python), so pip is not copied on
RUN python -m venv --without-pip /opt/venv
COPY deploy/requirements.lock deploy/requirements.lock
RUN python -m pip --python /opt/venv/bin/python install --no-deps --only-binary=:all: -r deploy/requirements.lock
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN python -m pip --python /opt/venv/bin/python install --no-deps . \
 && python -m pip --python /opt/venv/bin/python check \
 && /opt/venv/bin/sluicegate --help > /dev/null \
 && /opt/venv/bin/python -c "import proxy.server, proxy.records, proxy.scoring"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="sluicegate" \
      org.opencontainers.image.description="OpenAI-compatible evaluation gateway" \
      org.opencontainers.image.licenses="Apache-2.0"
# tini as PID 1 forwards SIGTERM/SIGHUP to sluicegate and reaps children (Python as PID 1 would
# ignore a SIGTERM it installs no handler for, e.g. in `sluicegate worker`).
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 sluicegate \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
            --shell /usr/sbin/nologin sluicegate \
 && mkdir -p /data /etc/sluicegate \
 && chown 10001:10001 /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SLUICEGATE_STORE=sqlite:////data/sluicegate.db
# the working directory holds the recorder's spill file when the store is PostgreSQL
WORKDIR /data
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8080
# liveness of `serve`; other commands (worker, migrate, mock-upstream) override or disable it
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('SLUICEGATE_HEALTHCHECK_URL', 'http://127.0.0.1:8080/healthz'), timeout=4)"]
ENTRYPOINT ["/usr/bin/tini", "--", "sluicegate"]
CMD ["serve", "--policy", "/etc/sluicegate/policy.yaml", "--host", "0.0.0.0", "--port", "8080"]
