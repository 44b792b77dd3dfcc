# The demo trainer of the compose stack: `mlobs demo` with every sink's extra installed.
#
# Built by compose with the repository root as the context (the context must hold
# pyproject.toml, README.md and mlobs/; trainer.Dockerfile.dockerignore keeps it to those):
#   docker build -f compose/trainer.Dockerfile -t mlobs-trainer .

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mlobs ./mlobs
# a virtual environment, copied whole into the runtime stage: no sources or pip cache in the image
RUN python -m venv /opt/mlobs \
    && /opt/mlobs/bin/pip install --no-cache-dir ".[demo,prometheus,influxdb,otlp,fluentd]"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="mlobs demo trainer" \
      org.opencontainers.image.description="Trains a small model with mlobs sending to every sink" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin mlobs \
    && mkdir -p /var/lib/mlobs \
    && chown mlobs:mlobs /var/lib/mlobs
COPY --from=build /opt/mlobs /opt/mlobs
# MLOBS_DIR: the spool, on a named volume in compose, so that `mlobs runs` and `mlobs replay`
# in a later container see the runs of earlier ones
ENV PATH=/opt/mlobs/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MLOBS_DIR=/var/lib/mlobs
WORKDIR /var/lib/mlobs
USER 10001:10001
ENTRYPOINT ["mlobs"]
CMD ["demo"]
