# The one image recipe for every Boutique Mesh service.
#
# One image PER SERVICE, all built from this file:
#   docker build --build-arg SERVICE=currencyservice -t <registry>/boutique-mesh/currencyservice:<tag> .
# Every layer except the last few metadata instructions is identical for all
# services, so the engine and the registry store the dependencies and the code
# once; each service still gets its own repository, tag and digest, so a service
# can be rolled out, canaried or rolled back on its own, and its image runs only
# that service by default. (The catalog, group_vars/all/catalog.yml, is the list
# of services; the images role builds one image per deployable entry.)
#
# Stages:
#   deps    venv at /opt/venv with the pinned runtime dependencies
#           (requirements-runtime.txt, a subset of requirements.txt), wheels only, every
#           file checked against its sha256 in the lock (--require-hashes).
#   app     the `boutique` package (services/boutique), byte-compiled, at /opt/app.
#           Copied rather than pip-installed so a code change never invalidates the
#           dependency layer and the build needs no (unpinned) setuptools download.
#   final   the base image + the two directories above; no pip, no compiler.
#           Runs as uid/gid 1000, writes nothing outside /tmp (Kubernetes mounts an
#           emptyDir there; the root filesystem can be read-only).
#
# Build arguments:
#   BASE_IMAGE   base for all stages (default the public python:3.11-slim-bookworm;
#                scripts/base-image.sh makes boutique/base:bookworm from Debian
#                packages where no registry can be pulled from). Needs python3 (3.11)
#                with venv on PATH: /usr/local/bin/python3 and /usr/bin/python3 both work.
#   PYTHON       the interpreter command in BASE_IMAGE (default python3).
#   SERVICE      catalog name of the service the image runs (required).
#   VCS_REF      git commit, recorded as a label.
# Builder-only (never reach the final image; for PyPI behind a proxy or mirror):
#   EXTRA_CA_CERTS   PEM text of extra CA certificates pip should trust
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST   pip's usual settings
# Example (this sandbox: intercepting proxy CA, build on the host network):
#   docker build --network host --build-arg BASE_IMAGE=boutique/base:bookworm \
#     --build-arg EXTRA_CA_CERTS="$(cat /usr/local/share/ca-certificates/*.crt)" \
#     --build-arg SERVICE=currencyservice -t boutique/currencyservice:dev .
# Written for the classic builder and BuildKit alike (no RUN --mount, no heredocs).

ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS deps
ARG PYTHON=python3
ARG EXTRA_CA_CERTS=""
ARG PIP_INDEX_URL=""
ARG PIP_EXTRA_INDEX_URL=""
ARG PIP_TRUSTED_HOST=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
COPY requirements-runtime.txt /tmp/requirements-runtime.txt
# The CA bundle for pip lives in /tmp of this stage only; the final stage copies
# /opt/venv and nothing else from here.
RUN set -eu; \
    if [ -n "$EXTRA_CA_CERTS" ]; then \
      if [ -f /etc/ssl/certs/ca-certificates.crt ]; then cat /etc/ssl/certs/ca-certificates.crt > /tmp/pip-ca.pem; fi; \
      printf '%s\n' "$EXTRA_CA_CERTS" >> /tmp/pip-ca.pem; \
      export PIP_CERT=/tmp/pip-ca.pem; \
    fi; \
    [ -n "$PIP_INDEX_URL" ] || unset PIP_INDEX_URL; \
    [ -n "$PIP_EXTRA_INDEX_URL" ] || unset PIP_EXTRA_INDEX_URL; \
    [ -n "$PIP_TRUSTED_HOST" ] || unset PIP_TRUSTED_HOST; \
    "$PYTHON" -m venv /opt/venv; \
    /opt/venv/bin/python -m pip install --quiet --only-binary=:all: --no-deps --require-hashes -r /tmp/requirements-runtime.txt; \
    /opt/venv/bin/python -m pip check; \
    /opt/venv/bin/python -m pip uninstall --quiet --yes pip setuptools; \
    site="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"; \
    echo /opt/app > "$site/boutique-app.pth"; \
    rm -f /tmp/pip-ca.pem /tmp/requirements-runtime.txt

FROM deps AS app
COPY services/boutique /opt/app/boutique
RUN /opt/venv/bin/python -m compileall -q -j 0 /opt/app

FROM ${BASE_IMAGE} AS final
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    BOUTIQUE_CATALOG=/etc/boutique/catalog.yml
# uid/gid 1000, no login shell, home in /tmp (the only writable place).
# The entrypoint serves the image's own service ($BOUTIQUE_SERVICE) when given
# no arguments; `docker run <image> catalog` or `... serve <name>` still work.
RUN set -eu; \
    groupadd --gid 1000 boutique; \
    useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin boutique; \
    printf '%s\n' '#!/bin/sh' \
      '# Boutique Mesh image entrypoint: no arguments = serve this image'"'"'s service.' \
      'if [ "$#" -eq 0 ]; then set -- serve "${BOUTIQUE_SERVICE:?BOUTIQUE_SERVICE is not set}"; fi' \
      'exec python3 -m boutique.cli "$@"' > /usr/local/bin/boutique; \
    chmod 0755 /usr/local/bin/boutique; \
    rm -rf /var/cache/apt/* /var/lib/apt/lists/* /root/.cache
COPY --from=deps /opt/venv /opt/venv
COPY group_vars/all/catalog.yml /etc/boutique/catalog.yml
COPY --from=app /opt/app /opt/app
USER 1000:1000
WORKDIR /tmp

# Everything above is shared by all services; only what follows differs.
ARG SERVICE=""
# Fail the build (not the pod) if SERVICE is not a catalog service with a module.
RUN test -n "$SERVICE" || { echo "build arg SERVICE is required (a catalog service name)" >&2; exit 1; }; \
    python3 -c 'import sys; from boutique import cli; cli.definition_module(sys.argv[1])' "$SERVICE"
ENV BOUTIQUE_SERVICE=${SERVICE}
ARG VCS_REF=""
LABEL org.opencontainers.image.title="boutique-${SERVICE}" \
      org.opencontainers.image.description="Boutique Mesh ${SERVICE} (Python, gRPC)" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.boutique.service="${SERVICE}"
STOPSIGNAL SIGTERM
ENTRYPOINT ["boutique"]
