#!/bin/bash
# Runs once, when the influxdb container initialises an empty data volume (the image runs every
# script in /docker-entrypoint-initdb.d after its DOCKER_INFLUXDB_INIT_* setup, with the influx
# CLI already holding the admin token).
#
# Grafana's InfluxDB datasource (dashboards/provisioning/datasources.yml) speaks InfluxQL, that is
# InfluxDB 2's 1.x compatibility API. It needs:
#   - a database/retention-policy mapping: database $DOCKER_INFLUXDB_INIT_BUCKET -> that bucket;
#   - a 1.x user: $INFLUXDB_GRAFANA_USER / $INFLUXDB_GRAFANA_PASSWORD, allowed to read the bucket
#     and nothing else (the admin token stays with the writers).
set -euo pipefail

: "${INFLUXDB_GRAFANA_USER:?set INFLUXDB_GRAFANA_USER in compose/.env}"
: "${INFLUXDB_GRAFANA_PASSWORD:?set INFLUXDB_GRAFANA_PASSWORD in compose/.env}"

influx v1 dbrp create \
  --org "${DOCKER_INFLUXDB_INIT_ORG}" \
  --bucket-id "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" \
  --db "${DOCKER_INFLUXDB_INIT_BUCKET}" \
  --rp autogen \
  --default

influx v1 auth create \
  --org "${DOCKER_INFLUXDB_INIT_ORG}" \
  --username "${INFLUXDB_GRAFANA_USER}" \
  --password "${INFLUXDB_GRAFANA_PASSWORD}" \
  --read-bucket "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" \
  --description "Grafana (InfluxQL, read only)"
