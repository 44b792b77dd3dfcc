"""The Helm chart (helm/mlobs) and the example training Job (examples/k8s/).

Helm itself does the work through helm-python-sdk (Helm v4 built as a shared library, shipped in
the wheel): strict lint, offline rendering with the default values and with everything turned on
(helm/mlobs/ci/everything-values.yaml), values.schema.json. kubernetes-validate checks every
rendered built-in object and the example Job against the Kubernetes 1.32 schemas in strict mode
(unknown fields rejected). It has no schemas for prometheus-operator's custom resources, so
ServiceMonitor, PodMonitor and PrometheusRule are checked here for their required fields and for
what they must select. promtool and amtool check the rules and the Alertmanager configuration as
rendered.

The chart reads alerting/ and dashboards/ through symbolic links (helm/mlobs/files/); the tests
check that the links are in place and that what is rendered equals those sources.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from .servers.base import assert_ok, fail_or_skip, run_tool

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "helm" / "mlobs"
ALERTING = REPO / "alerting"
DASHBOARDS = REPO / "dashboards"
EXAMPLE_JOB = REPO / "examples" / "k8s" / "training-job.yaml"
EVERYTHING_VALUES = CHART / "ci" / "everything-values.yaml"

KUBE_VERSION = "1.32.0"
RELEASE = "mlobs"
NAMESPACE = "monitoring"
CRD_GROUP = "monitoring.coreos.com/"
# the alert rules' scrape selector (mlobs/alerts/params.py: scrape_selector)
SCRAPE_JOB = re.compile(r"mlobs.*")


@pytest.fixture(scope="module")
def helm() -> ModuleType:
    """helm_python, with its shared library loaded (it ships in the wheel; nothing is fetched)."""
    try:
        import helm_python
    except ImportError as exc:
        fail_or_skip(f"helm-python-sdk is not installed ({exc}); pip install -e '.[dev]'")
    try:
        helm_python.helm_sdk_version()
    except (OSError, helm_python.HelmLibraryError) as exc:
        fail_or_skip(f"helm-python-sdk could not load its Helm library: {exc}")
    return helm_python


def _everything_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(EVERYTHING_VALUES.read_text())
    return values


def _render(
    helm: ModuleType, values: dict[str, Any] | None = None, *, release: str = RELEASE
) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        rendered: dict[str, str] = chart.render(values, name=release, namespace=NAMESPACE)
    return rendered


def _documents(rendered: dict[str, str]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


@pytest.fixture(scope="module")
def default_docs(helm: ModuleType) -> list[dict[str, Any]]:
    return _documents(_render(helm))


@pytest.fixture(scope="module")
def everything_rendered(helm: ModuleType) -> dict[str, str]:
    return _render(helm, _everything_values())


@pytest.fixture(scope="module")
def everything_docs(everything_rendered: dict[str, str]) -> list[dict[str, Any]]:
    return _documents(everything_rendered)


def _only(docs: list[dict[str, Any]], kind: str, name_part: str = "") -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name_part in d["metadata"]["name"]]
    assert len(found) == 1, f"{kind} *{name_part}*: {[d['metadata']['name'] for d in found]}"
    return found[0]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# --- one source of truth ----------------------------------------------------------------------


@pytest.mark.parametrize(("link", "target"), [("alerting", ALERTING), ("dashboards", DASHBOARDS)])
def test_chart_files_are_links_to_the_repository_sources(link: str, target: Path) -> None:
    """files/alerting and files/dashboards are symbolic links, not copies that could go stale."""
    path = CHART / "files" / link
    assert path.is_symlink(), f"{path} must be a symbolic link to {target}"
    assert path.resolve() == target.resolve()
    assert not Path(os.readlink(path)).is_absolute(), "a relative link works in every checkout"


def test_packaged_chart_holds_the_linked_files_and_renders_the_same(
    helm: ModuleType, tmp_path: Path
) -> None:
    """`helm package` follows the links: the archive is self-contained, without the tests."""
    with helm.Chart.load(CHART) as chart:
        archive = Path(chart.save(tmp_path))
        from_dir = chart.render(name=RELEASE, namespace=NAMESPACE)
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
    rule_files = sorted(p.name for p in ALERTING.glob("*.rules.yml"))
    for name in rule_files:
        member = members[f"mlobs/files/alerting/{name}"]
        assert member.isfile(), f"{name} is packaged as a regular file"
    for path in DASHBOARDS.glob("*.json"):
        assert members[f"mlobs/files/dashboards/{path.name}"].isfile()
    assert "mlobs/files/alerting/alertmanager.yml" in members
    assert "mlobs/files/alerting/templates/mlobs.tmpl" in members
    assert not [n for n in members if "/files/alerting/tests/" in n or n.endswith(".md")]
    assert not [n for n in members if "/ci/" in n or "/provisioning/" in n]
    with helm.Chart.load_archive(archive.read_bytes()) as packaged:
        assert packaged.render(name=RELEASE, namespace=NAMESPACE) == from_dir


# --- lint and schema ----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["default", "everything"])
def test_lint_strict_is_clean(helm: ModuleType, which: str) -> None:
    values = _everything_values() if which == "everything" else None
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


def test_lint_strict_reports_a_bad_value(helm: ModuleType) -> None:
    report = helm.lint(CHART, {"gpuExporter": {"port": "9835"}}, strict=True)
    assert report["errors"], report
    assert any("/gpuExporter/port" in m["error"] for m in report["messages"]), report


def test_schema_accepts_the_defaults_and_everything_values(helm: ModuleType) -> None:
    with helm.Chart.load(CHART) as chart:
        assert chart.schema is not None
        assert chart.schema["$schema"] == "http://json-schema.org/draft-07/schema#"
        chart.validate_schema(None)
        chart.validate_schema(_everything_values())


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"gpuExporter": {"port": "9835"}}, "/gpuExporter/port"),
        ({"collector": {"ports": {"otlpHttp": 70000}}}, "/collector/ports/otlpHttp"),
        ({"gpuExporter": {"interval": 0}}, "/gpuExporter/interval"),
        ({"gpuExporter": {"enable": False}}, "/gpuExporter"),
        ({"serviceMonitor": {"interval": "30"}}, "/serviceMonitor/interval"),
        ({"gpuExporter": {"image": {"pullPolicy": "Sometimes"}}}, "/gpuExporter/image/pullPolicy"),
        ({"alertmanagerConfig": {"enabled": True}}, "/alertmanagerConfig/existingSecret"),
        ({"prometheusRule": {"labels": {"release": 1}}}, "/prometheusRule/labels/release"),
    ],
)
def test_schema_rejects_bad_values(helm: ModuleType, values: dict[str, Any], where: str) -> None:
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmValuesError) as validated:
            chart.validate_schema(values)
        assert where in str(validated.value)
        with pytest.raises(helm.HelmValuesError):
            chart.render(values, name=RELEASE, namespace=NAMESPACE)


# --- Kubernetes schemas -------------------------------------------------------------------------


def _validate_strict(doc: dict[str, Any]) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("which", ["default", "everything"])
def test_rendered_objects_pass_kubernetes_validate_strict(
    which: str, default_docs: list[dict[str, Any]], everything_docs: list[dict[str, Any]]
) -> None:
    docs = everything_docs if which == "everything" else default_docs
    builtin = [d for d in docs if not d["apiVersion"].startswith(CRD_GROUP)]
    assert {d["kind"] for d in builtin} >= {"DaemonSet", "Deployment", "Service", "ConfigMap"}
    failures = []
    for doc in builtin:
        try:
            _validate_strict(doc)
        except Exception as exc:  # collect every failure, then report them all
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc}")
    assert not failures, "\n".join(failures)


def test_strict_validation_catches_an_unknown_field(default_docs: list[dict[str, Any]]) -> None:
    """The check above can fail: a misspelt field in the DaemonSet is refused."""
    import kubernetes_validate

    daemonset = json.loads(json.dumps(_only(default_docs, "DaemonSet")))
    daemonset["spec"]["template"]["spec"]["nodeSelectors"] = {"a": "b"}
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate_strict(daemonset)


def test_kubernetes_validate_command_on_rendered_output_and_example_job(
    everything_docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    rendered = tmp_path / "rendered.yaml"
    builtin = [d for d in everything_docs if not d["apiVersion"].startswith(CRD_GROUP)]
    rendered.write_text(yaml.safe_dump_all(builtin))
    command = [sys.executable, "-m", "kubernetes_validate", "-k", KUBE_VERSION, "--strict"]
    result = subprocess.run(
        [*command, str(rendered), str(EXAMPLE_JOB)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    passed = [line for line in result.stdout.splitlines() if line.startswith("INFO")]
    assert len(passed) == len(builtin) + 1, result.stdout
    assert "ERROR" not in result.stdout and "WARN" not in result.stdout, result.stdout


def test_defaults_need_no_custom_resource_definitions(default_docs: list[dict[str, Any]]) -> None:
    assert not [d for d in default_docs if d["apiVersion"].startswith(CRD_GROUP)]
    kinds = sorted(d["kind"] for d in default_docs if d["kind"] != "ConfigMap")
    assert kinds == ["DaemonSet", "Deployment", "Service", "Service"]
    assert not [d for d in default_docs if d["kind"] == "Secret"]


@pytest.mark.parametrize("which", ["default", "everything"])
def test_objects_are_namespaced_and_labelled(
    which: str, default_docs: list[dict[str, Any]], everything_docs: list[dict[str, Any]]
) -> None:
    docs = everything_docs if which == "everything" else default_docs
    for doc in docs:
        meta = doc["metadata"]
        assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert len(meta["name"]) <= 63, meta["name"]
        if which == "everything":
            assert meta["labels"]["team"] == "ml-platform", meta["name"]
        if not (doc["kind"] == "ConfigMap" and "dashboard" in meta["name"]):
            assert meta["namespace"] == NAMESPACE


def test_long_release_names_give_valid_unique_names(helm: ModuleType) -> None:
    release = "a-rather-long-release-name-for-the-ml-platform-stack"  # Helm's limit is 53
    helm.validate_release_name(release)
    docs = _documents(_render(helm, _everything_values(), release=release))
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(set(names)) == len(names), names
    for _kind, name in names:
        assert len(name) <= 63 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name), name


# --- prometheus-operator custom resources -------------------------------------------------------


def test_custom_resources_have_their_required_fields(everything_docs: list[dict[str, Any]]) -> None:
    custom = [d for d in everything_docs if d["apiVersion"].startswith(CRD_GROUP)]
    kinds = sorted(d["kind"] for d in custom)
    assert kinds == ["PodMonitor", "PodMonitor", "PrometheusRule", "ServiceMonitor"]
    operator_labels = _everything_values()["serviceMonitor"]["labels"]
    for doc in custom:
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        assert doc["metadata"]["name"] and doc["metadata"]["namespace"] == NAMESPACE
        assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
        spec = doc["spec"]
        if doc["kind"] == "PrometheusRule":
            continue
        labels = doc["metadata"]["labels"]
        assert labels.items() >= operator_labels.items(), "the Prometheus selects them by these"
        selector = spec["selector"]
        assert selector.get("matchLabels") or selector.get("matchExpressions")
        assert spec["namespaceSelector"]
        endpoints = spec["endpoints" if doc["kind"] == "ServiceMonitor" else "podMetricsEndpoints"]
        assert endpoints
        for endpoint in endpoints:
            assert isinstance(endpoint["port"], str) and endpoint["port"]
            assert re.fullmatch(r"[0-9]+(ms|s|m|h)", endpoint["interval"])
            jobs = [
                r["replacement"] for r in endpoint["relabelings"] if r.get("targetLabel") == "job"
            ]
            assert len(jobs) == 1 and SCRAPE_JOB.fullmatch(jobs[0]), "the TargetDown alert sees it"
            for relabeling in endpoint["relabelings"]:
                assert relabeling["action"] in {"replace", "labeldrop", "keep", "drop"}


def test_service_monitor_selects_the_gpu_exporter_service(
    everything_docs: list[dict[str, Any]],
) -> None:
    monitor = _only(everything_docs, "ServiceMonitor")
    service = _only(everything_docs, "Service", "gpu-exporter")
    daemonset = _only(everything_docs, "DaemonSet")
    assert _matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
    pod_labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert _matches(service["spec"]["selector"], pod_labels)
    container = daemonset["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"] for p in container["ports"]} >= port_names
    drops = [
        r for r in monitor["spec"]["endpoints"][0]["relabelings"] if r["action"] == "labeldrop"
    ]
    assert drops and all(re.fullmatch(drops[0]["regex"], k) for k in ("pod", "namespace"))


def test_pod_monitors_select_the_collector_and_training_pods(
    everything_docs: list[dict[str, Any]],
) -> None:
    collector_monitor = _only(everything_docs, "PodMonitor", "otel-collector")
    deployment = _only(everything_docs, "Deployment")
    template = deployment["spec"]["template"]
    assert _matches(
        collector_monitor["spec"]["selector"]["matchLabels"], template["metadata"]["labels"]
    )
    container_ports = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
    assert collector_monitor["spec"]["podMetricsEndpoints"][0]["port"] in container_ports

    training_monitor = _only(everything_docs, "PodMonitor", "training")
    job = yaml.safe_load(EXAMPLE_JOB.read_text())
    job_pod = job["spec"]["template"]
    assert _matches(
        training_monitor["spec"]["selector"]["matchLabels"], job_pod["metadata"]["labels"]
    )
    assert training_monitor["spec"]["namespaceSelector"] == {"any": True}
    job_ports = {p["name"] for p in job_pod["spec"]["containers"][0]["ports"]}
    assert training_monitor["spec"]["podMetricsEndpoints"][0]["port"] in job_ports


def _source_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in sorted(ALERTING.glob("*.rules.yml")):
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    return groups


def test_prometheus_rule_holds_exactly_the_alerting_rules(
    everything_docs: list[dict[str, Any]],
) -> None:
    rule = _only(everything_docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    groups = rule["spec"]["groups"]
    assert groups, "no rule group rendered"
    for group in groups:
        assert isinstance(group["name"], str) and group["name"]
        assert group["rules"]
        for item in group["rules"]:
            assert ("alert" in item) != ("record" in item), item
            assert isinstance(item["expr"], str) and item["expr"].strip()
            for value in {**item.get("labels", {}), **item.get("annotations", {})}.values():
                assert isinstance(value, str), "the CRD wants string labels and annotations"
    assert [g["name"] for g in groups] == [g["name"] for g in _source_groups()]
    # prometheusRule.grafanaUrl moved the dashboard links; everything else is the files' own
    links = [r["annotations"]["dashboard_url"] for g in groups for r in g["rules"] if "alert" in r]
    assert links and all(u.startswith("https://grafana.example.org/d/") for u in links)
    as_generated = json.loads(
        json.dumps(groups).replace("https://grafana.example.org/d/", "http://localhost:3000/d/")
    )
    assert as_generated == _source_groups()
    assert len({g["name"] for g in groups}) == len(groups), "group names must be unique"


def test_promtool_accepts_the_rendered_rules(
    everything_docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    rule = _only(everything_docs, "PrometheusRule")
    path = tmp_path / "rendered.rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    assert_ok(run_tool("promtool", "check", "rules", str(path)))


# --- Grafana dashboards -------------------------------------------------------------------------


def _dashboard_maps(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == "ConfigMap" and "-dashboard-" in d["metadata"]["name"]]


def test_one_dashboard_config_map_per_dashboard_json(everything_docs: list[dict[str, Any]]) -> None:
    sources = {p.name: p.read_text() for p in DASHBOARDS.glob("*.json")}
    assert sources, "dashboards/ holds no JSON"
    maps = _dashboard_maps(everything_docs)
    assert len(maps) == len(sources)
    seen: dict[str, str] = {}
    for config_map in maps:
        meta = config_map["metadata"]
        assert meta["labels"]["grafana_dashboard"] == "1"
        assert meta["annotations"] == {"grafana_folder": "mlobs"}
        assert meta["namespace"] == "grafana"  # dashboards.namespace in everything-values
        ((key, text),) = config_map["data"].items()
        seen[key] = text
        assert json.loads(text) == json.loads(sources[key])
        assert text == sources[key].rstrip("\n")
    assert sorted(seen) == sorted(sources)


def test_dashboard_labels_come_from_values_and_exclude_works(helm: ModuleType) -> None:
    values = {
        "dashboards": {
            "label": "grafana.example/dashboard",
            "labelValue": "mlobs",
            "folderAnnotation": "grafana.example/folder",
            "folder": "ML",
            "exclude": ["mlobs-gpu.json"],
        }
    }
    maps = _dashboard_maps(_documents(_render(helm, values)))
    assert len(maps) == len(list(DASHBOARDS.glob("*.json"))) - 1
    assert "mlobs-gpu.json" not in {k for m in maps for k in m["data"]}
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana.example/dashboard"] == "mlobs"
        assert config_map["metadata"]["annotations"] == {"grafana.example/folder": "ML"}
        assert config_map["metadata"]["namespace"] == NAMESPACE


# --- the GPU exporter ---------------------------------------------------------------------------


def test_daemonset_mounts_the_pod_resources_socket_and_sets_node_name(
    default_docs: list[dict[str, Any]],
) -> None:
    daemonset = _only(default_docs, "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["mlobs"]
    args = container["args"]
    assert args[:5] == ["gpu-exporter", "--port", "9835", "--addr", "0.0.0.0"]
    socket = args[args.index("--podresources-socket") + 1]
    assert socket == "/var/lib/kubelet/pod-resources/kubelet.sock"

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    mount = mounts["/var/lib/kubelet/pod-resources"]
    assert mount["readOnly"] is True
    assert volumes[mount["name"]]["hostPath"] == {
        "path": "/var/lib/kubelet/pod-resources",
        "type": "Directory",
    }
    assert socket.startswith(mount["mountPath"] + "/")

    env = _env(container)
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}

    security = container["securityContext"]
    assert security["runAsUser"] == 0, "only root can connect to the kubelet's socket"
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
    assert pod["automountServiceAccountToken"] is False

    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert "runtimeClassName" not in pod
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert container["resources"]["limits"]["memory"]
    service = _only(default_docs, "Service", "gpu-exporter")
    assert service["spec"]["clusterIP"] == "None"


def test_daemonset_without_pod_resources_runs_unprivileged(helm: ModuleType) -> None:
    values = {"gpuExporter": {"podResources": {"enabled": False}, "runtimeClassName": "nvidia"}}
    daemonset = _only(_documents(_render(helm, values)), "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert not [v for v in pod["volumes"] if "hostPath" in v]
    assert "--podresources-socket" not in container["args"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert pod["runtimeClassName"] == "nvidia"
    assert _env(container)["NODE_NAME"]


def test_everything_values_reach_the_daemonset(everything_docs: list[dict[str, Any]]) -> None:
    daemonset = _only(everything_docs, "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.invalid/mlobs/gpu-exporter:0.1.0"
    assert container["args"][-2:] == ["--interval", "10"]
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert _env(container)["MLOBS_LOG_LEVEL"]["value"] == "DEBUG"


# --- the OpenTelemetry Collector ----------------------------------------------------------------


def _collector_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    config_map = _only(docs, "ConfigMap", "otel-collector")
    config: dict[str, Any] = yaml.safe_load(config_map["data"]["config.yaml"])
    return config


def test_collector_config_without_backends_logs_what_it_receives(
    default_docs: list[dict[str, Any]],
) -> None:
    config = _collector_config(default_docs)
    assert set(config["receivers"]) == {"otlp", "fluentforward"}
    pipelines = config["service"]["pipelines"]
    assert pipelines["logs"]["receivers"] == ["otlp", "fluentforward"]
    for signal in ("metrics", "logs", "traces"):
        assert pipelines[signal]["exporters"] == ["debug"]
        assert pipelines[signal]["processors"] == ["memory_limiter", "batch"]


def test_collector_config_with_backends(everything_docs: list[dict[str, Any]]) -> None:
    config = _collector_config(everything_docs)
    pipelines = config["service"]["pipelines"]
    assert pipelines["metrics"]["exporters"] == ["prometheusremotewrite", "influxdb"]
    assert pipelines["logs"]["exporters"] == ["influxdb", "debug"]
    assert pipelines["traces"]["exporters"] == ["influxdb", "debug"]
    exporters = config["exporters"]
    prw = exporters["prometheusremotewrite"]
    assert prw["endpoint"] == "http://prometheus-operated.monitoring.svc:9090/api/v1/write"
    assert prw["headers"] == {"X-Scope-OrgID": "ml"}
    assert exporters["influxdb"]["token"] == "${env:INFLUXDB_TOKEN}"
    assert exporters["influxdb"]["org"] == "ml"
    # extraConfig is merged over the generated configuration
    assert config["processors"]["batch"] == {"send_batch_size": 8192, "timeout": "2s"}
    assert config["processors"]["memory_limiter"]["limit_percentage"] == 80

    deployment = _only(everything_docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    token = _env(container)["INFLUXDB_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token == {"name": "influxdb-token", "key": "token"}
    assert deployment["spec"]["replicas"] == 2


def test_collector_config_matches_the_compose_stack(helm: ModuleType) -> None:
    """The chart's collector does what compose's (collectors/otel-collector/config.yaml) does;
    only addresses, credentials and the memory limit's form (a share of the container's limit)
    differ."""
    compose = yaml.safe_load((REPO / "collectors" / "otel-collector" / "config.yaml").read_text())
    values = {
        "collector": {"prometheusRemoteWrite": {"enabled": True}, "influxdb": {"enabled": True}}
    }
    docs = _documents(_render(helm, values))
    chart = _collector_config(docs)

    def without(section: dict[str, Any], *keys: str) -> dict[str, Any]:
        return {k: v for k, v in section.items() if k not in keys}

    assert chart["service"]["pipelines"] == compose["service"]["pipelines"]
    assert chart["service"]["extensions"] == compose["service"]["extensions"]
    assert set(chart["receivers"]) == set(compose["receivers"])
    assert set(chart["exporters"]) == set(compose["exporters"])
    assert set(chart["processors"]) == set(compose["processors"])
    assert chart["processors"]["batch"] == compose["processors"]["batch"]
    for port, component in [
        (4317, compose["receivers"]["otlp"]["protocols"]["grpc"]),
        (4318, compose["receivers"]["otlp"]["protocols"]["http"]),
        (8006, compose["receivers"]["fluentforward"]),
        (13133, compose["extensions"]["health_check"]),
    ]:
        assert component["endpoint"].endswith(f":{port}")
    ports = {
        p["containerPort"]
        for p in _only(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert ports >= {4317, 4318, 8006, 13133, 8888}
    prw_chart = chart["exporters"]["prometheusremotewrite"]
    prw_compose = compose["exporters"]["prometheusremotewrite"]
    assert without(prw_chart, "endpoint", "tls") == without(prw_compose, "endpoint", "tls")
    influx_chart = chart["exporters"]["influxdb"]
    influx_compose = compose["exporters"]["influxdb"]
    keys = ("endpoint", "org", "bucket", "token")
    assert without(influx_chart, *keys) == without(influx_compose, *keys)
    assert chart["exporters"]["debug"] == compose["exporters"]["debug"]
    reader = chart["service"]["telemetry"]["metrics"]
    assert without(reader, "readers") == without(
        compose["service"]["telemetry"]["metrics"], "readers"
    )
    compose_image = yaml.safe_load((REPO / "compose" / "compose.yaml").read_text())["services"][
        "otel-collector"
    ]["image"]
    (container,) = _only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == compose_image, "the same collector version as compose"


def test_collector_ports_agree_across_config_deployment_and_service(
    default_docs: list[dict[str, Any]],
) -> None:
    config = _collector_config(default_docs)
    deployment = _only(default_docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    otlp = config["receivers"]["otlp"]["protocols"]
    assert otlp["grpc"]["endpoint"] == f"${{env:MY_POD_IP}}:{ports['otlp-grpc']}"
    assert otlp["http"]["endpoint"] == f"${{env:MY_POD_IP}}:{ports['otlp-http']}"
    fluent = config["receivers"]["fluentforward"]["endpoint"]
    assert fluent == f"${{env:MY_POD_IP}}:{ports['fluentforward']}"
    assert config["extensions"]["health_check"]["endpoint"].endswith(f":{ports['health']}")
    reader = config["service"]["telemetry"]["metrics"]["readers"][0]
    assert reader["pull"]["exporter"]["prometheus"]["port"] == ports["metrics"]
    assert _env(container)["MY_POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    service = _only(default_docs, "Service", "otel-collector")
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports and port["port"] == ports[port["targetPort"]]
    assert {p["name"] for p in service["spec"]["ports"]} == {
        "otlp-grpc",
        "otlp-http",
        "fluentforward",
    }
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])


# --- the Alertmanager configuration -------------------------------------------------------------


def _alertmanager_secret(docs: list[dict[str, Any]]) -> dict[str, str]:
    secret = _only(docs, "Secret")
    assert secret["metadata"]["name"] == "mlobs-alertmanager-config"
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def _file_paths(node: Any) -> Iterator[str]:
    """Every value of a *_file key, anywhere in the configuration."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith("_file") and isinstance(value, str):
                yield value
            else:
                yield from _file_paths(value)
    elif isinstance(node, list):
        for item in node:
            yield from _file_paths(item)


def test_alertmanager_secret_holds_the_config_and_templates(
    everything_docs: list[dict[str, Any]],
) -> None:
    data = _alertmanager_secret(everything_docs)
    templates = {p.name: p.read_text() for p in (ALERTING / "templates").glob("*.tmpl")}
    assert set(data) == {"alertmanager.yaml", *templates}
    for name, text in templates.items():
        assert data[name] == text

    rendered = yaml.safe_load(data["alertmanager.yaml"])
    source = yaml.safe_load((ALERTING / "alertmanager.yml").read_text())
    assert rendered["templates"] == ["/etc/alertmanager/config/*.tmpl"]
    secrets_dir = "/etc/alertmanager/secrets/mlobs-alertmanager-secrets/"
    paths = sorted(_file_paths(rendered))
    assert paths, "the configuration reads its secrets from files"
    assert all(p.startswith(secrets_dir) for p in paths), paths
    assert sorted(p.replace(secrets_dir, "/etc/alertmanager/secrets/") for p in paths) == sorted(
        _file_paths(source)
    )
    # apart from those paths and the templates, the configuration is the source's
    as_source = yaml.safe_load(
        data["alertmanager.yaml"].replace(secrets_dir, "/etc/alertmanager/secrets/")
    )
    as_source["templates"] = source["templates"]
    assert as_source == source


def test_amtool_accepts_the_rendered_alertmanager_config(helm: ModuleType, tmp_path: Path) -> None:
    values = {
        "alertmanagerConfig": {
            "enabled": True,
            "existingSecret": "am-secrets",
            "secretFilesDir": str(tmp_path / "secrets"),
            "templatesDir": str(tmp_path / "config"),
        }
    }
    data = _alertmanager_secret(_documents(_render(helm, values)))
    (tmp_path / "config").mkdir()
    for key, text in data.items():
        (tmp_path / "config" / key).write_text(text)
    config = yaml.safe_load(data["alertmanager.yaml"])
    assert all(p.startswith(str(tmp_path / "secrets") + "/") for p in _file_paths(config))
    result = run_tool("amtool", "check-config", str(tmp_path / "config" / "alertmanager.yaml"))
    assert_ok(result)
    templates = len(list((ALERTING / "templates").glob("*.tmpl")))
    assert f" - {templates} templates" in result.stdout, "amtool found and parsed the templates"


def test_alertmanager_config_needs_the_user_secret(helm: ModuleType) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError, match="existingSecret"):
        chart.render(
            {"alertmanagerConfig": {"enabled": True}},
            name=RELEASE,
            namespace=NAMESPACE,
        )


def test_notes_name_what_to_wire(everything_rendered: dict[str, str]) -> None:
    notes = everything_rendered["mlobs/templates/NOTES.txt"]
    assert f"http://mlobs-otel-collector.{NAMESPACE}.svc:4318" in notes
    assert "spec.configSecret: mlobs-alertmanager-config" in notes
    assert "spec.secrets: [mlobs-alertmanager-secrets]" in notes


# --- the example training Job -------------------------------------------------------------------


def test_example_job_wires_mlobs_and_otel_to_the_chart(default_docs: list[dict[str, Any]]) -> None:
    (job,) = [d for d in yaml.safe_load_all(EXAMPLE_JOB.read_text()) if d]
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = _env(container)
    names = [e["name"] for e in container["env"]]

    def field(name: str) -> str:
        path: str = env[name]["valueFrom"]["fieldRef"]["fieldPath"]
        return path

    # the chart's collector Service, as rendered for release "mlobs" in "monitoring"
    service = _only(default_docs, "Service", "otel-collector")
    http_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "otlp-http")
    host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == f"http://{host}:{http_port}"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"]["value"] == "http/protobuf"

    # one run id for every rank: the Job's uid; each pod's rank: its completion index
    assert field("MLOBS_RUN_ID") == "metadata.labels['batch.kubernetes.io/controller-uid']"
    assert job["spec"]["completionMode"] == "Indexed"
    assert field("RANK") == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert int(env["WORLD_SIZE"]["value"]) == job["spec"]["completions"]

    # Kubernetes resource attributes from the downward API, defined before they are used
    assert field("NODE_NAME") == "spec.nodeName"
    assert field("POD_NAME") == "metadata.name"
    assert field("POD_NAMESPACE") == "metadata.namespace"
    attributes = dict(
        pair.split("=", 1) for pair in env["OTEL_RESOURCE_ATTRIBUTES"]["value"].split(",")
    )
    assert attributes["k8s.pod.name"] == "$(POD_NAME)"
    assert attributes["k8s.namespace.name"] == "$(POD_NAMESPACE)"
    assert attributes["k8s.node.name"] == "$(NODE_NAME)"
    position = names.index("OTEL_RESOURCE_ATTRIBUTES")
    for reference in re.findall(r"\$\((\w+)\)", env["OTEL_RESOURCE_ATTRIBUTES"]["value"]):
        assert names.index(reference) < position, f"{reference} must come first to expand"

    # the spool on an emptyDir
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts[env["MLOBS_DIR"]["value"]]]

    # /metrics for the training PodMonitor, and a GPU
    metrics_port = next(p for p in container["ports"] if p["name"] == "metrics")
    assert int(env["MLOBS_PROMETHEUS_PORT"]["value"]) == metrics_port["containerPort"]
    assert env["MLOBS_PROMETHEUS_ADDR"]["value"] == "0.0.0.0"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["restartPolicy"] == "Never"

    # every MLOBS_* variable is one mlobs reads
    from mlobs import config

    known = {v for k, v in vars(config).items() if k.startswith("MLOBS_") and isinstance(v, str)}
    assert {n for n in names if n.startswith("MLOBS_")} <= known


def test_example_job_passes_kubernetes_validate_strict() -> None:
    (job,) = [d for d in yaml.safe_load_all(EXAMPLE_JOB.read_text()) if d]
    _validate_strict(job)
