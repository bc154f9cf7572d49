# aircall-sync live mode: `aircall-sync serve` receiving Aircall webhooks.
#
#   docker build -t aircall-sync .
#   docker run -d --stop-timeout 45 -p 127.0.0.1:8080:8080 \
#     -v "$PWD/config:/config:ro" -v "$PWD/data:/data" \
#     -e AIRCALL_API_TOKEN=... -e AIRCALL_WEBHOOK_TOKEN=... aircall-sync
#
# README.md, "Live mode" > "In a container", says what goes in /config and /data.

# The base is an argument so that it can be swapped (a mirror, a pinned digest, a
# local image on a machine without Docker Hub). Any Debian-like image with
# Python >= 3.11, its venv module, and useradd will do.
ARG BASE=python:3.11-slim

# ---------------------------------------------------------------- build
FROM ${BASE} AS build

# A virtual environment, not the system site-packages: it works the same on the
# official python image and on a Debian base whose system Python is "externally
# managed" (PEP 668), and the final stage copies one directory.
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the install reads: the metadata (pyproject.toml names README.md as
# the long description and LICENSE is the license file) and the package. Tests,
# benchmarks and cassettes stay out of the image.
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY aircall_sync ./aircall_sync
# A regular (not editable) install: the sources in /src do not reach the final
# stage. pip and setuptools are only needed to install (about 25 MB): removed
# from the venv the final stage copies. The last command proves the entry point runs.
RUN pip install . \
    && python -m pip uninstall --yes pip setuptools \
    && aircall-sync --version

# ---------------------------------------------------------------- runtime
FROM ${BASE}

# A fixed uid/gid, so that a host directory mounted at /data can be given to it
# (chown 10001:10001) before the first start. No home, no shell: it only runs serve.
RUN groupadd --gid 10001 aircall-sync \
    && useradd --uid 10001 --gid aircall-sync --no-log-init --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin aircall-sync \
    && mkdir -p /data /config \
    && chown aircall-sync:aircall-sync /data

# Owned by root and read-only to the service user: the running process cannot change its own code.
COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH
# Settings come from the mounted /config (read-only); --config still overrides.
ENV AIRCALL_SYNC_CONFIG=/config/settings.toml
# Where the HEALTHCHECK looks (read by it, not by aircall-sync): change it with
# -e if serve listens elsewhere (--port, live.port).
ENV AIRCALL_SYNC_HEALTHCHECK_URL=http://127.0.0.1:8080/healthz

# The state file (set sync.state_path = "/data/aircall-sync.sqlite3") must outlive
# the container: it holds the inbox of acknowledged events and what was written.
# Declared a volume so that it is never left in the container's writable layer.
VOLUME ["/data"]
WORKDIR /data

USER aircall-sync:aircall-sync

# live.port's default. Plain HTTP: put a TLS proxy in front (Aircall delivers only to HTTPS).
EXPOSE 8080

# /healthz answers 200 while the process runs. Only the standard library, so
# the image needs no curl or wget; urlopen raises (exit 1: unhealthy) on a
# refused connection, a timeout or a status that is not 2xx. The start period
# covers the sign-in to Salesforce/Front at start, before /healthz answers.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['AIRCALL_SYNC_HEALTHCHECK_URL'], timeout=4)"]

# serve stops receiving on SIGTERM, drains the worker for up to 30 s and exits 0;
# give it room with docker run --stop-timeout 45 (docker stop's default 10 s can
# cut a drain short; what is left then waits in the inbox for the next start).
STOPSIGNAL SIGTERM

# The exec form: aircall-sync is PID 1 and gets the SIGTERM itself. JSON logs,
# one object per line on stderr, for the container's log driver.
ENTRYPOINT ["aircall-sync", "--log-format", "json"]
# All interfaces inside the container (live.host defaults to loopback, which a
# published port cannot reach); publish the port on the host's loopback or
# behind your proxy.
CMD ["serve", "--host", "0.0.0.0"]
