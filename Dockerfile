# relay in a container: `relay watch` as its service, non-root, its state on a volume.
#
#   podman build -t relay .                      (or docker build)
#   podman run -d --name relay --env-file .env \
#     -v ./campagne:/config:ro \
#     -v relay-state:/data relay
#   podman run --rm -v ./campagne:/config:ro relay relay preview
#
# BASE is any image with Python 3.11 or later and its venv module (scripts/test builds on a
# Debian bookworm made with debootstrap, as this machine reaches no image registry).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
# set by scripts/test when the build reaches PyPI through a proxy with its own CA
ARG PIP_CERT=
COPY pyproject.toml README.md LICENSE /src/
COPY relay /src/relay
RUN python3 -m venv /opt/relay \
 && /opt/relay/bin/pip install --no-cache-dir --disable-pip-version-check /src \
 && find /opt/relay -name __pycache__ -prune -exec rm -rf {} +

FROM ${BASE}
COPY --from=build /opt/relay /opt/relay
RUN useradd --system --uid 10001 --home-dir /data --no-create-home relay \
 && mkdir -p /data /config \
 && chown relay /data
ENV PATH=/opt/relay/bin:$PATH \
    RELAY_CONFIG=/config/feeds.yaml \
    RELAY_STATE_DIR=/data/state \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
VOLUME /data
WORKDIR /data
USER relay
# SIGTERM (podman stop) ends the current delivery, then relay watch exits 0
STOPSIGNAL SIGTERM
CMD ["relay", "watch"]
