"""Every config file the compose stack mounts, validated where it lands.

Prometheus and Alertmanager configs are checked by promtool and amtool in a temporary folder laid
out like the container (each bind mount of compose/compose.yaml at its container path), so the
paths the configs name (rule files, templates) are resolved as in the container. The
OpenTelemetry Collector config is parsed and cross-checked: every component a pipeline names is
defined and supports that pipeline's signal, every defined component is used, and every address
names a compose service and a port it declares. No Fluentd can be installed here: its config is
parsed minimally and cross-checked the same way. Dashboards and their provisioning are checked
for what Grafana needs to load them.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.servers.base import REPO, assert_ok, run_tool
from tests.test_compose import (
    assert_reaches,
    bind_mounts,
    declared_ports,
    env_example,
    environment,
    host_path,
    services,
)

COLLECTOR_CONFIG = "/etc/otelcol-contrib/config.yaml"
PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"
ALERTMANAGER_CONFIG = "/etc/alertmanager/alertmanager.yml"
FLUENTD_CONFIG = "/fluentd/etc/fluent.conf"

ALL_SIGNALS = frozenset({"metrics", "logs", "traces"})
# The signals each collector component type supports (its README's status table). A component
# missing here fails the test: add it with its signals.
COMPONENT_SIGNALS: dict[str, frozenset[str]] = {
    "otlp": ALL_SIGNALS,
    "fluentforward": frozenset({"logs"}),
    "memory_limiter": ALL_SIGNALS,
    "batch": ALL_SIGNALS,
    "prometheusremotewrite": frozenset({"metrics"}),
    "influxdb": ALL_SIGNALS,
    "debug": ALL_SIGNALS,
}


def _mounted_file(service: str, container_path: str) -> Path:
    path = host_path(service, container_path)
    assert path is not None, f"{service}: nothing is mounted at {container_path}"
    assert path.is_file(), f"{service}: {container_path} comes from {path}, not a file"
    return path


def _container_root(service: str, tmp_path: Path) -> Path:
    """A folder laid out like ``service``'s container: each bind mount at its container path
    (folders as symbolic links, files as copies)."""
    root = tmp_path / service
    for source, target, _ in sorted(bind_mounts(service), key=lambda m: m[1]):
        dest = root / target.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            dest.symlink_to(source, target_is_directory=True)
        else:
            shutil.copyfile(source, dest)
    return root


def _command_flags(service: str) -> list[str]:
    return [str(arg) for arg in services()[service].get("command") or []]


# --- Prometheus -----------------------------------------------------------------------------------


def _prometheus() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(
        _mounted_file("prometheus", PROMETHEUS_CONFIG).read_text()
    )
    return loaded


def _rule_files() -> list[Path]:
    """The rule files Prometheus loads in the container, on the host."""
    files: list[Path] = []
    for pattern in _prometheus()["rule_files"]:
        assert pattern.startswith("/"), f"rule_files: {pattern} (use the container's path)"
        folder, _, name = pattern.rpartition("/")
        source = host_path("prometheus", folder)
        assert source is not None, f"rule_files: nothing is mounted at {folder}"
        matched = sorted(source.glob(name))
        assert matched, f"rule_files: {pattern} matches nothing in {source}"
        files += matched
    return files


def test_prometheus_loads_every_alerting_rule_file() -> None:
    assert set(_rule_files()) == set((REPO / "alerting").glob("*.rules.yml"))
    assert f"--config.file={PROMETHEUS_CONFIG}" in _command_flags("prometheus")


@pytest.mark.slow
def test_promtool_accepts_the_config_as_the_container_sees_it(tmp_path: Path) -> None:
    root = _container_root("prometheus", tmp_path)
    config = _prometheus()
    config["rule_files"] = [str(root / p.lstrip("/")) for p in config["rule_files"]]
    path = root / PROMETHEUS_CONFIG.lstrip("/")
    path.write_text(yaml.safe_dump(config))
    result = run_tool("promtool", "check", "config", str(path))
    assert_ok(result)
    output = result.stdout + result.stderr
    assert f"SUCCESS: {len(_rule_files())} rule files found" in output, output


@pytest.mark.slow
def test_promtool_accepts_every_mounted_rule_file() -> None:
    files = _rule_files()
    assert_ok(run_tool("promtool", "check", "rules", *map(str, files)))


def test_prometheus_targets_are_services_of_the_stack() -> None:
    config = _prometheus()
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name, job in jobs.items():
        for static in job.get("static_configs") or []:
            for target in static["targets"]:
                if target == "localhost:9090":  # Prometheus itself
                    assert name == "prometheus"
                    continue
                assert_reaches(target, what=f"scrape job {name}")
        for dns in job.get("dns_sd_configs") or []:
            for host in dns["names"]:
                assert_reaches(f"{host}:{dns['port']}", what=f"scrape job {name}")
    for alerting in config["alerting"]["alertmanagers"]:
        for static in alerting["static_configs"]:
            for target in static["targets"]:
                assert_reaches(target, what="alertmanagers")
    # the Pushgateway keeps the job, run_id and rank labels the runs pushed
    assert jobs["mlobs-pushgateway"]["honor_labels"] is True
    # every service with a /metrics endpoint of its own is scraped
    scraped = {
        urlsplit(f"//{t}").hostname
        for job in jobs.values()
        for static in job.get("static_configs") or []
        for t in static["targets"]
    } | {
        host
        for job in jobs.values()
        for d in job.get("dns_sd_configs") or []
        for host in d["names"]
    }
    expected = {"pushgateway", "gpu-exporter", "otel-collector", "alertmanager", "influxdb"}
    assert expected | {"grafana"} <= scraped, (expected | {"grafana"}) - scraped


def test_the_gpu_exporter_is_found_by_dns_only_while_it_runs() -> None:
    """In the gpu profile only: a static target would be down (and alert) without it."""
    (job,) = [j for j in _prometheus()["scrape_configs"] if j["job_name"] == "mlobs-gpu-exporter"]
    assert "static_configs" not in job
    (dns,) = job["dns_sd_configs"]
    assert dns["names"] == ["gpu-exporter"] and dns["port"] == 9835
    assert "gpu-exporter" in services() and services()["gpu-exporter"]["profiles"] == ["gpu"]


def test_grafana_is_told_the_scrape_interval_prometheus_uses() -> None:
    interval = _prometheus()["global"]["scrape_interval"]
    assert env_example()["PROMETHEUS_SCRAPE_INTERVAL"] == interval
    assert environment("grafana")["PROMETHEUS_SCRAPE_INTERVAL"] == interval


# --- Alertmanager ---------------------------------------------------------------------------------


def _alertmanager() -> dict[str, Any]:
    path = _mounted_file("alertmanager", ALERTMANAGER_CONFIG)
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


@pytest.mark.slow
def test_amtool_accepts_the_config_as_the_container_sees_it(tmp_path: Path) -> None:
    root = _container_root("alertmanager", tmp_path)
    result = run_tool("amtool", "check-config", str(root / ALERTMANAGER_CONFIG.lstrip("/")))
    assert_ok(result)
    assert "SUCCESS" in result.stdout


def test_alertmanager_templates_resolve_in_the_container() -> None:
    assert f"--config.file={ALERTMANAGER_CONFIG}" in _command_flags("alertmanager")
    config_dir = ALERTMANAGER_CONFIG.rpartition("/")[0]
    for pattern in _alertmanager()["templates"]:
        folder, _, name = f"{config_dir}/{pattern}".rpartition("/")
        source = host_path("alertmanager", folder)
        assert source is not None and sorted(source.glob(name)), f"templates: {pattern}"


def _secret_files(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {str(v) for k, v in node.items() if str(k).endswith("_file")}
        return found.union(*(_secret_files(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_secret_files(v) for v in node))
    return set()


def test_alertmanager_secret_files_come_from_the_secrets_folder() -> None:
    """Every *_file the config names lies in the mounted compose/secrets/ folder, which
    documents it and keeps it out of git."""
    files = _secret_files(_alertmanager())
    assert files, "alertmanager.yml names no secret file"
    secrets = REPO / "compose" / "secrets"
    readme = (secrets / "README.md").read_text()
    for path in files:
        source = host_path("alertmanager", path)
        assert source is not None and source.parent == secrets, f"{path} is not in {secrets}"
        assert f"`{source.name}`" in readme, (
            f"compose/secrets/README.md does not name {source.name}"
        )
    ignore = (secrets / ".gitignore").read_text().split()
    assert "*" in ignore and "!README.md" in ignore


# --- OpenTelemetry Collector ----------------------------------------------------------------------


def _collector() -> dict[str, Any]:
    path = _mounted_file("otel-collector", COLLECTOR_CONFIG)
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def _component_type(component_id: str) -> str:
    return component_id.split("/", 1)[0]


def test_the_collector_config_is_its_image_default_path() -> None:
    image = str(services()["otel-collector"]["image"])
    assert image.startswith("otel/opentelemetry-collector-contrib:")
    assert "command" not in services()["otel-collector"]  # the image reads COLLECTOR_CONFIG


def test_collector_pipelines_name_defined_components_that_support_their_signal() -> None:
    config = _collector()
    pipelines: dict[str, dict[str, list[str]]] = config["service"]["pipelines"]
    assert {_component_type(p) for p in pipelines} == ALL_SIGNALS
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for pipeline, spec in pipelines.items():
        signal = _component_type(pipeline)
        assert spec["receivers"] and spec["exporters"], pipeline
        for kind in used:
            for component in spec.get(kind) or []:
                assert component in (config.get(kind) or {}), f"{pipeline}: {component} undefined"
                supported = COMPONENT_SIGNALS.get(_component_type(component))
                assert supported is not None, f"add {component}'s signals to COMPONENT_SIGNALS"
                assert signal in supported, f"{pipeline}: {component} has no {signal} support"
                used[kind].add(component)
        # memory_limiter first, so that it refuses data before anything else holds it
        assert spec["processors"][0].startswith("memory_limiter"), pipeline
    for kind, names in used.items():
        assert set(config[kind]) == names, (
            f"{kind} defined but not used: {set(config[kind]) - names}"
        )
    extensions = set(config.get("extensions") or {})
    assert extensions == set(config["service"].get("extensions") or [])


def test_collector_receivers_listen_on_ports_the_service_declares() -> None:
    receivers = _collector()["receivers"]
    endpoints = [receivers["fluentforward"]["endpoint"]]
    endpoints += [p["endpoint"] for p in receivers["otlp"]["protocols"].values()]
    for endpoint in endpoints:
        host, _, port = endpoint.rpartition(":")
        assert host == "0.0.0.0", f"{endpoint}: other containers cannot reach localhost"
        assert int(port) in declared_ports("otel-collector"), endpoint
    http = receivers["otlp"]["protocols"]["http"]["endpoint"]
    trainer = urlsplit(environment("trainer")["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert environment("trainer")["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert trainer.port == int(http.rpartition(":")[2])


def test_collector_exporters_reach_services_of_the_stack() -> None:
    config = _collector()
    exporters = config["exporters"]
    prw = exporters["prometheusremotewrite"]["endpoint"]
    host, _ = assert_reaches(prw, what="prometheusremotewrite")
    assert host == "prometheus" and urlsplit(prw).path == "/api/v1/write"
    assert "--web.enable-remote-write-receiver" in _command_flags("prometheus")
    influx = exporters["influxdb"]
    host, _ = assert_reaches(influx["endpoint"], what="influxdb exporter")
    assert host == "influxdb"
    # its own metrics: the port Prometheus scrapes
    (reader,) = config["service"]["telemetry"]["metrics"]["readers"]
    own = reader["pull"]["exporter"]["prometheus"]
    assert own["host"] == "0.0.0.0"
    jobs = {j["job_name"]: j for j in _prometheus()["scrape_configs"]}
    assert jobs["otel-collector"]["static_configs"][0]["targets"] == [
        f"otel-collector:{own['port']}"
    ]


def test_collector_environment_references_are_set_from_env_example() -> None:
    values = json.dumps(_collector())  # values only: comments may mention ${env:NAME}
    names = set(re.findall(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}", values))
    assert {"INFLUXDB_ORG", "INFLUXDB_BUCKET", "INFLUXDB_TOKEN"} <= names
    env = environment("otel-collector")
    for name in names:
        assert name in env, f"the collector reads ${{env:{name}}}, which compose does not set"
        assert env[name] == env_example()[name], name
    influx = _collector()["exporters"]["influxdb"]
    assert influx["org"] == "${env:INFLUXDB_ORG}" and influx["bucket"] == "${env:INFLUXDB_BUCKET}"


# --- Fluentd --------------------------------------------------------------------------------------


@dataclass
class Directive:
    """One ``<name arg>`` section of a Fluentd config."""

    name: str
    arg: str = ""
    params: dict[str, str] = field(default_factory=dict)
    children: list[Directive] = field(default_factory=list)

    def find(self, name: str) -> list[Directive]:
        return [child for child in self.children if child.name == name]


def parse_fluentd(text: str) -> Directive:
    """The directive tree of a Fluentd config: sections, their argument and parameters.

    Minimal: whole-line comments, ``<section arg>`` / ``</section>``, ``key value`` (a double
    quoted value loses its quotes). No @include, no multi-line values."""
    root = Directive("ROOT")
    stack = [root]
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        closing = re.fullmatch(r"</(\w+)>", line)
        opening = re.fullmatch(r"<(\w+)(?:\s+(.+?))?\s*>", line)
        if closing:
            assert stack[-1].name == closing[1], f"line {number}: </{closing[1]}> closes nothing"
            stack.pop()
        elif opening:
            child = Directive(opening[1], opening[2] or "")
            stack[-1].children.append(child)
            stack.append(child)
        else:
            key, _, value = line.partition(" ")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            assert key not in stack[-1].params, f"line {number}: {key} given twice"
            stack[-1].params[key] = value
    assert len(stack) == 1, f"<{stack[-1].name}> is not closed"
    return root


def _fluentd() -> Directive:
    return parse_fluentd(_mounted_file("fluentd", FLUENTD_CONFIG).read_text())


def _tag_matches(pattern: str, tag: str) -> bool:
    """Fluentd's match patterns: ``*`` one tag part, ``**`` zero or more parts."""
    regex = re.escape(pattern).replace(r"\.\*\*", r"(?:\..+)?").replace(r"\*\*", ".*")
    regex = regex.replace(r"\*", r"[^.]+")
    return re.fullmatch(regex, tag) is not None


def test_fluentd_receives_the_forward_protocol_on_the_declared_port() -> None:
    sources = _fluentd().find("source")
    (forward,) = [s for s in sources if s.params.get("@type") == "forward"]
    port = int(forward.params.get("port", "24224"))
    assert forward.params.get("bind") == "0.0.0.0"
    assert port in declared_ports("fluentd")
    assert int(environment("trainer")["MLOBS_FLUENTD_PORT"]) == port


def test_fluentd_sends_every_mlobs_tag_to_influxdb_and_stdout() -> None:
    (match,) = _fluentd().find("match")
    prefix = environment("trainer").get("MLOBS_FLUENTD_TAG", "mlobs")
    for kind in ("log", "event", "span", "metric"):
        assert _tag_matches(match.arg, f"{prefix}.{kind}"), (match.arg, kind)
    assert match.params["@type"] == "copy"
    stores = {store.params["@type"]: store for store in match.find("store")}
    assert set(stores) == {"influxdb2", "stdout"}
    influx = stores["influxdb2"]
    json.loads(influx.params["tag_keys"])  # an array, as the plugin reads it
    buffer = influx.find("buffer")[0]
    assert buffer.params["@type"] == "file"
    # the file buffer lies on a named volume, not in the container's writable layer
    mounts = [str(v).split(":")[1] for v in services()["fluentd"]["volumes"]]
    assert any(buffer.params["path"].startswith(m + "/") for m in mounts), buffer.params["path"]


def test_fluentd_influxdb_settings_come_from_env_example() -> None:
    (match,) = _fluentd().find("match")
    (influx,) = [s for s in match.find("store") if s.params["@type"] == "influxdb2"]
    env = environment("fluentd")
    resolved: dict[str, str] = {}
    for key in ("url", "token", "org", "bucket"):
        reference = re.fullmatch(r"#\{ENV\['(\w+)'\]\}", influx.params[key])
        assert reference, f"influxdb2 {key} must be read from the environment"
        assert reference[1] in env, f"fluentd's environment has no {reference[1]}"
        resolved[key] = env[reference[1]]
    assert resolved["org"] == env_example()["INFLUXDB_ORG"]
    assert resolved["bucket"] == env_example()["INFLUXDB_BUCKET"]
    assert resolved["token"] == env_example()["INFLUXDB_TOKEN"]
    assert_reaches(resolved["url"], what="fluentd influxdb2")
    assert influx.params["use_ssl"] == "false" and resolved["url"].startswith("http://")


def test_the_fluentd_image_pins_the_influxdb_plugin() -> None:
    dockerfile = (REPO / "collectors/fluentd/Dockerfile").read_text()
    gem = re.search(r"fluent-gem install .*?fluent-plugin-influxdb-v2 -v (\S+)", dockerfile)
    assert gem is not None and re.fullmatch(r"\d+\.\d+\.\d+", gem[1])


def test_fluentd_parser_reads_sections_and_rejects_unbalanced_ones() -> None:
    tree = parse_fluentd(
        '<match a.**>\n  @type copy\n  <store>\n    key "v"\n  </store>\n</match>\n'
    )
    (match,) = tree.find("match")
    assert match.arg == "a.**" and match.find("store")[0].params == {"key": "v"}
    with pytest.raises(AssertionError):
        parse_fluentd("<match a>\n  @type stdout\n")
    assert _tag_matches("mlobs.**", "mlobs.log") and not _tag_matches("mlobs.**", "other.log")
    assert _tag_matches("mlobs.*", "mlobs.log") and not _tag_matches("mlobs.*", "mlobs.a.b")


# --- InfluxDB initialisation ----------------------------------------------------------------------


def test_influxdb_init_scripts_parse_and_read_only_what_compose_sets() -> None:
    folder = host_path("influxdb", "/docker-entrypoint-initdb.d")
    assert folder is not None and folder.is_dir()
    scripts = sorted(folder.glob("*.sh"))
    assert scripts
    env = environment("influxdb")
    for script in scripts:
        assert os.access(script, os.X_OK), f"{script}: the image runs executable scripts only"
        assert_ok(subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True))
        for name in set(re.findall(r"\$\{(\w+)", script.read_text())):
            # the image exports DOCKER_INFLUXDB_INIT_*_ID itself after its setup
            if not re.fullmatch(r"DOCKER_INFLUXDB_INIT_\w+_ID", name):
                assert name in env, f"{script.name} reads {name}, which compose does not set"


# --- Grafana and the dashboards -------------------------------------------------------------------


def test_grafana_datasource_variables_are_all_set() -> None:
    path = _mounted_file("grafana", "/etc/grafana/provisioning/datasources/mlobs.yml")
    names = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", json.dumps(yaml.safe_load(path.read_text()))))
    assert names, "datasources.yml reads no variable"
    env = environment("grafana")
    assert names <= set(env), f"grafana's environment lacks {names - set(env)}"
    assert_reaches(env["PROMETHEUS_URL"], what="grafana Prometheus datasource")
    assert_reaches(env["INFLUXDB_URL"], what="grafana InfluxDB datasource")
    assert env["INFLUXDB_DATABASE"] == env_example()["INFLUXDB_BUCKET"]


def test_grafana_provisions_every_dashboard_of_the_repository() -> None:
    path = _mounted_file("grafana", "/etc/grafana/provisioning/dashboards/mlobs.yml")
    providers = yaml.safe_load(path.read_text())["providers"]
    dashboards: list[Path] = []
    for provider in providers:
        folder = host_path("grafana", provider["options"]["path"])
        assert folder is not None and folder.is_dir(), provider["options"]["path"]
        dashboards += [Path(p) for p in glob.glob(str(folder / "**" / "*.json"), recursive=True)]
    assert sorted(dashboards) == sorted((REPO / "dashboards").glob("*.json"))
    uids = []
    for dashboard in dashboards:
        model = json.loads(dashboard.read_text())
        assert model.get("uid") and model.get("title"), f"{dashboard.name}: no uid or title"
        uids.append(model["uid"])
    assert len(uids) == len(set(uids)), "two dashboards share a uid"
