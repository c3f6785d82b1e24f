# syntax=docker/dockerfile:1
#
# One image for the three process kinds. The entrypoint is empty, so a platform's process
# command replaces CMD as a whole: Fly runs `baro-bot web|worker|runner` from [processes] in
# fly.toml; elsewhere: `docker run IMAGE baro-bot runner`. CMD defaults to the web process.
#
# The runner's sandbox (bubblewrap) needs unprivileged user namespaces:
# - Fly Machines: the image becomes the root file system of a Firecracker VM with its own
#   kernel; no container seccomp or AppArmor profile stands in the way, so bwrap works and the
#   runner's start-up self-check passes as it does on a plain host.
# - Docker/Podman: the default seccomp and AppArmor profiles forbid the namespaces bwrap
#   creates. Run runners with `--security-opt seccomp=unconfined --security-opt
#   apparmor=unconfined` (on Ubuntu 23.10+ hosts also `sysctl
#   kernel.apparmor_restrict_unprivileged_userns=0` on the host), and `--init` so orphaned
#   processes are reaped. Kubernetes: the same, as seccompProfile/appArmorProfile Unconfined.
# - Where none of that is possible, BARO_SANDBOX=none turns the sandbox off: only for
#   trusted local use, never for public repositories. Without it the runner refuses to
#   start (exit 3) and says why.
#
# Python lives under /usr/local (the official image), not under /root: the sandbox shows
# commands /usr read-only and hides /root and /opt, and story commands need a python.
#
# The runtime image is also the default environment of repositories that name no image
# (`image:` in .github/baro.yml, or a devcontainer image): Python 3 with uv, Node LTS with
# npm and corepack (pnpm and yarn fetched at build time: sandboxed commands have no network),
# git, make, gcc/g++ and pkg-config. skopeo and umoci pull and unpack the images that
# repositories do name. All of it under /usr, which the sandbox shows read-only.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm
ARG UV_VERSION=0.13.9
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# Node's official build (Debian's nodejs is older than any LTS); only its /usr/local is taken.
FROM ${NODE_IMAGE} AS node

# ---- build: the locked environment with the project installed (not editable) ----
FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/opt/baro-bot
WORKDIR /src
# Dependencies first: this layer is reused until uv.lock or pyproject.toml change.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --locked --no-dev --no-install-project
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable

# ---- runtime: the same Python, the environment, the sandbox, the default environment ----
FROM ${PYTHON_IMAGE} AS runtime
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        bubblewrap ca-certificates git skopeo umoci \
        make gcc g++ libc6-dev pkg-config xz-utils unzip \
    && rm -rf /var/lib/apt/lists/*
COPY --from=uv /uv /uvx /usr/local/bin/
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules /usr/local/lib/node_modules
# corepack's cache under /usr (HOME is a fresh tmpfs in the sandbox); never a prompt, never
# a packageManager line written into a repository's package.json.
ENV COREPACK_HOME=/usr/local/share/corepack \
    COREPACK_ENABLE_DOWNLOAD_PROMPT=0 \
    COREPACK_ENABLE_AUTO_PIN=0
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
    && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
    && ln -s ../lib/node_modules/corepack/dist/corepack.js /usr/local/bin/corepack \
    && corepack enable --install-directory /usr/local/bin pnpm yarn \
    && corepack install --global pnpm@latest yarn@stable \
    && chmod -R a+rX "$COREPACK_HOME" \
    && node --version && npm --version && pnpm --version && yarn --version && uv --version
# A fixed non-root uid. /data is where Fly mounts the runners' volume (fly.toml [[mounts]]);
# Fly mounts a volume owned by the image's user, and Docker copies this directory's owner
# into a new named volume, so the runner can create BARO_RUNNER_DATA_DIR there either way.
RUN groupadd --system --gid 10001 baro \
    && useradd --system --uid 10001 --gid baro --home-dir /home/baro --create-home \
        --shell /usr/sbin/nologin baro \
    && mkdir -p /data/runner \
    && chown -R baro:baro /data
COPY --from=build /opt/baro-bot /opt/baro-bot
# The pinned agent CLIs (Claude Code, Codex: runner/engines.py) for stories and plans on an
# engine; the sandbox shows only this directory of /opt, read-only (README: Engines).
RUN /opt/baro-bot/bin/python -m runner.engines install --dir /opt/baro-engines \
    && chmod -R a+rX /opt/baro-engines
ENV PATH=/opt/baro-bot/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    BARO_HOST=0.0.0.0 \
    BARO_PORT=8080 \
    BARO_RUNNER_DATA_DIR=/data/runner \
    BARO_ENGINES_DIR=/opt/baro-engines
USER 10001:10001
WORKDIR /home/baro
EXPOSE 8080
ENTRYPOINT []
CMD ["baro-bot", "web"]
