"""The compose stack, compose/compose.yaml, checked offline (no Docker engine runs the tests).

docker compose v2 (``config -q``) and the compose-spec JSON schema accept it; every path it
mounts or builds from exists; it mounts the repository's configs read-only rather than copying
them; every ``${VAR}`` it reads has a key in compose/.env.example and secrets cannot fall back to
a default; every image and base image is pinned to an exact version; every address one service
gives another names a service and a port that service declares. tests/test_collectors.py
validates the config files the stack mounts, with the helpers defined here.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.servers.base import INSTALL_HINT, REPO, fail_or_skip, find_binary

COMPOSE_DIR = REPO / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
# an exact version: 1.2.3 or v1.2.3, optionally followed by a variant (-slim-bookworm, -debian-1.0)
_PINNED_TAG = re.compile(r"^v?\d+\.\d+\.\d+(?:[-.][A-Za-z0-9.-]+)?$")


# --- helpers (shared with tests/test_collectors.py) ---------------------------------------------


@functools.cache
def compose() -> dict[str, Any]:
    """compose.yaml as PyYAML reads it (variables not interpolated)."""
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


@functools.cache
def env_example() -> dict[str, str]:
    """KEY=VALUE lines of compose/.env.example."""
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f".env.example: not KEY=VALUE: {line!r}"
        values[key.strip()] = value.strip()
    return values


def interpolate(text: str) -> str:
    """``text`` with compose's variables resolved from .env.example, as compose would."""

    def resolve(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        value = env_example().get(name)
        if op in (":-", ":?") and not value:
            value = None
        if value is not None:
            return value
        if op in (":-", "-"):
            return str(arg)
        raise AssertionError(f"${{{name}}} is not set by .env.example ({arg or 'no default'})")

    return _VARIABLE.sub(resolve, text)


def environment(service: str) -> dict[str, str]:
    """A service's environment, interpolated."""
    raw = services()[service].get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {str(k): interpolate(str(v)) for k, v in raw.items()}


def bind_mounts(service: str) -> list[tuple[Path, str, bool]]:
    """(host path, container path, read-only) of each bind mount of ``service``."""
    mounts: list[tuple[Path, str, bool]] = []
    for volume in services()[service].get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") != "bind":
                continue
            source, target = str(volume["source"]), str(volume["target"])
            read_only = bool(volume.get("read_only"))
        else:
            source, target, *options = str(volume).split(":")
            if not source.startswith((".", "/", "~")):
                continue  # a named volume
            read_only = "ro" in ",".join(options).split(",")
        mounts.append(((COMPOSE_DIR / source).resolve(), target, read_only))
    return mounts


def host_path(service: str, container_path: str) -> Path | None:
    """Where ``container_path`` of ``service`` comes from on the host, through its bind mounts
    (the longest mount point that holds it); None when no bind mount holds it."""
    best: tuple[int, Path] | None = None
    for source, target, _ in bind_mounts(service):
        target = target.rstrip("/")
        if container_path == target or container_path.startswith(target + "/"):
            rest = container_path[len(target) :].lstrip("/")
            if best is None or len(target) > best[0]:
                best = (len(target), source / rest if rest else source)
    return None if best is None else best[1]


def declared_ports(service: str) -> set[int]:
    """Container ports ``service`` declares: ``expose`` and the container side of ``ports``."""
    spec = services()[service]
    ports = {int(str(port).split("/")[0]) for port in spec.get("expose") or []}
    for entry in spec.get("ports") or []:
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            ports.add(int(interpolate(str(entry)).rsplit(":", 1)[-1].split("/")[0]))
    return ports


def assert_reaches(address: str, *, what: str) -> tuple[str, int]:
    """``address`` (a URL or host:port) names a compose service and a port it declares."""
    parts = urlsplit(address if "//" in address else f"//{address}")
    host, port = parts.hostname, parts.port
    assert host in services(), f"{what}: {address} names no compose service"
    assert port in declared_ports(host), (
        f"{what}: {address}: service {host} declares no port {port} "
        f"(it declares {sorted(declared_ports(host))})"
    )
    return host, port


def run_compose(*args: str) -> subprocess.CompletedProcess[str]:
    """docker compose v2 on compose.yaml with .env.example, in a clean environment (a developer's
    own INFLUXDB_TOKEN must not change what is checked)."""
    binary = find_binary("docker-compose")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tempfile.gettempdir()}
    command = [binary, "-f", str(COMPOSE_FILE), "--env-file", str(ENV_EXAMPLE), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


def dockerfile_images(dockerfile: Path) -> list[str]:
    """Base images of a Dockerfile, ARG defaults substituted; stage names left out."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    images: list[str] = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if len(words) >= 2 and words[0].upper() == "ARG" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            args[name] = value
        elif len(words) >= 2 and words[0].upper() == "FROM":
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], words[1])
            if len(words) >= 4 and words[2].upper() == "AS":
                stages.add(words[3])
            if image not in stages:
                images.append(image)
    return images


def build_dockerfile(service: str) -> Path:
    build = services()[service]["build"]
    context = COMPOSE_DIR / (build if isinstance(build, str) else build["context"])
    name = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    return (context / name).resolve()


def assert_pinned(image: str, *, what: str) -> None:
    assert "@" not in image or image.split("@", 1)[1].startswith("sha256:"), f"{what}: {image}"
    _, sep, tag = image.rpartition(":")
    assert sep and "/" not in tag, f"{what}: {image} has no tag"
    assert _PINNED_TAG.match(tag), f"{what}: {image} is not pinned to an exact version"


# --- docker compose and the compose-spec schema -------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("profile", [None, "gpu"])
def test_docker_compose_accepts_the_stack(profile: str | None) -> None:
    result = run_compose(*(["--profile", profile] if profile else []), "config", "-q")
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_gpu_exporter_starts_only_with_the_gpu_profile() -> None:
    plain = run_compose("config", "--services")
    gpu = run_compose("--profile", "gpu", "config", "--services")
    assert plain.returncode == 0 and gpu.returncode == 0, plain.stderr + gpu.stderr
    assert set(gpu.stdout.split()) - set(plain.stdout.split()) == {"gpu-exporter"}
    expected = {"otel-collector", "fluentd", "prometheus", "alertmanager", "pushgateway"}
    expected |= {"influxdb", "grafana", "trainer"}
    assert set(plain.stdout.split()) == expected


@pytest.mark.slow
def test_compose_resolves_the_trainer_environment() -> None:
    """compose's own interpolation agrees with this module's (the other checks rely on it)."""
    result = run_compose("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)["services"]["trainer"]["environment"]
    assert resolved == environment("trainer")


@pytest.mark.slow
def test_compose_spec_schema_accepts_the_stack() -> None:
    if importlib.util.find_spec("check_jsonschema") is None:
        fail_or_skip(f"check-jsonschema missing; pip install -e '.[dev]' ({INSTALL_HINT})")
    command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
    result = subprocess.run(
        [*command, str(COMPOSE_FILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- paths: one source of truth -------------------------------------------------------------------


def test_every_bind_mount_and_build_context_exists() -> None:
    for name, spec in services().items():
        for source, target, _ in bind_mounts(name):
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
            assert source.is_relative_to(REPO), f"{name}: {source} is outside the repository"
        if "build" in spec:
            dockerfile = build_dockerfile(name)
            assert dockerfile.is_file(), f"{name}: no {dockerfile}"


def test_the_repository_configs_are_mounted_read_only_not_copied() -> None:
    mounted = {(name, source) for name in services() for source, _, _ in bind_mounts(name)}
    for name in services():
        for source, target, read_only in bind_mounts(name):
            assert read_only, f"{name}: {source} -> {target} must be mounted :ro"
    expected = {
        ("otel-collector", REPO / "collectors/otel-collector/config.yaml"),
        ("fluentd", REPO / "collectors/fluentd/fluent.conf"),
        ("prometheus", REPO / "collectors/prometheus/prometheus.yml"),
        ("prometheus", REPO / "alerting"),
        ("alertmanager", REPO / "alerting/alertmanager.yml"),
        ("alertmanager", REPO / "alerting/templates"),
        ("grafana", REPO / "dashboards"),
        ("grafana", REPO / "dashboards/provisioning/datasources.yml"),
        ("grafana", REPO / "dashboards/provisioning/dashboards.yml"),
    }
    assert expected <= mounted, sorted(str(s) for _, s in expected - mounted)
    # the images built here hold no copy of a config that compose mounts into them
    for name, spec in services().items():
        if "build" in spec:
            text = build_dockerfile(name).read_text()
            copied = {
                Path(w).name
                for line in re.findall(r"^COPY\s+(.*)$", text, re.M)
                for w in line.split()[:-1]
            }
            for source, _, _ in bind_mounts(name):
                assert source.name not in copied, f"{name}: the image copies {source.name}"


# --- variables and secrets -----------------------------------------------------------------------


def _variables() -> dict[str, set[str]]:
    """Each variable compose.yaml reads, with the operators it is read with."""
    found: dict[str, set[str]] = {}
    for match in _VARIABLE.finditer(COMPOSE_FILE.read_text()):
        found.setdefault(match["name"], set()).add(match["op"] or "")
    return found


def test_every_variable_has_a_key_in_env_example_and_every_key_is_used() -> None:
    used, keys = set(_variables()), set(env_example())
    assert used - keys == set(), f"read by compose.yaml, missing from .env.example: {used - keys}"
    assert keys - used == set(), f"in .env.example, read by nothing: {keys - used}"


def test_secrets_are_required_and_have_placeholder_values() -> None:
    secret_names = [name for name in _variables() if re.search(r"TOKEN|PASSWORD", name)]
    assert len(secret_names) >= 4
    for name in secret_names:
        assert _variables()[name] == {":?"}, f"${{{name}}} must be ${{{name}:?...}}: no default"
        assert env_example()[name].startswith("change-me"), f".env.example {name}: a placeholder"
    ignored = (COMPOSE_DIR / ".gitignore").read_text().split()
    assert ".env" in ignored


def test_published_ports_bind_the_configured_address() -> None:
    """Nothing is published on every interface unless MLOBS_BIND_ADDRESS says so."""
    assert env_example()["MLOBS_BIND_ADDRESS"] == "127.0.0.1"
    for name, spec in services().items():
        for entry in spec.get("ports") or []:
            assert str(entry).startswith("${MLOBS_BIND_ADDRESS:-127.0.0.1}:"), (name, entry)


# --- images ---------------------------------------------------------------------------------------


def test_every_image_and_base_image_is_pinned() -> None:
    for name, spec in services().items():
        assert "image" in spec or "build" in spec, name
        if "image" in spec:
            assert_pinned(str(spec["image"]), what=name)
        if "build" in spec:
            images = dockerfile_images(build_dockerfile(name))
            assert images, f"{name}: no FROM in {build_dockerfile(name)}"
            for image in images:
                assert_pinned(image, what=f"{name} ({build_dockerfile(name).name})")


def test_the_trainer_image_installs_every_sink() -> None:
    text = build_dockerfile("trainer").read_text()
    extras = re.search(r'pip install [^\n]*"\.\[([a-z,]+)\]"', text)
    assert extras is not None
    assert {"demo", "prometheus", "influxdb", "otlp", "fluentd"} <= set(extras[1].split(","))
    assert services()["trainer"]["build"]["context"] == ".."


# --- wiring between services ----------------------------------------------------------------------


def test_the_trainer_sends_to_every_sink_of_the_stack() -> None:
    env = environment("trainer")
    assert_reaches(env["MLOBS_PUSHGATEWAY_URL"], what="trainer Pushgateway")
    assert_reaches(env["MLOBS_INFLUXDB_URL"], what="trainer InfluxDB")
    host, _ = assert_reaches(env["OTEL_EXPORTER_OTLP_ENDPOINT"], what="trainer OTLP")
    assert host == "otel-collector"
    fluentd = f"{env['MLOBS_FLUENTD_HOST']}:{env.get('MLOBS_FLUENTD_PORT', '24224')}"
    assert_reaches(fluentd, what="trainer Fluentd")
    influx = environment("influxdb")
    assert env["MLOBS_INFLUXDB_TOKEN"] == influx["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    assert env["MLOBS_INFLUXDB_ORG"] == influx["DOCKER_INFLUXDB_INIT_ORG"]
    assert env["MLOBS_INFLUXDB_BUCKET"] == influx["DOCKER_INFLUXDB_INIT_BUCKET"]
    assert services()["trainer"]["restart"] == "no"  # a batch job: it runs once


def test_depends_on_waits_for_health_only_where_there_is_a_healthcheck() -> None:
    for name, spec in services().items():
        for target, condition in (spec.get("depends_on") or {}).items():
            assert target in services(), f"{name} depends on unknown {target}"
            assert "profiles" not in services()[target], f"{name} depends on optional {target}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services()[target], f"{name}: {target} has no healthcheck"


def test_the_gpu_exporter_reserves_nvidia_gpus_without_a_kubelet_socket() -> None:
    spec = services()["gpu-exporter"]
    assert spec["profiles"] == ["gpu"]
    assert build_dockerfile("gpu-exporter") == REPO / "collectors/gpu-exporter/Dockerfile"
    (device,) = spec["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert all("kubelet" not in target for _, target, _ in bind_mounts("gpu-exporter"))
    # the host label joins per-node and per-run GPU series
    assert environment("gpu-exporter")["NODE_NAME"] == environment("trainer")["NODE_NAME"]
