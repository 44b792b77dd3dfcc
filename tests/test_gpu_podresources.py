"""Pod attribution of GPUs from the kubelet PodResources API.

The kubelet here is a STAND-IN, not a kubelet: a grpcio server in the test process that listens on
a unix socket under ``tmp_path`` and answers ``v1.PodResourcesLister/List`` with a scripted
response, or with a scripted error status. It encodes its answers with the kubelet's fuller schema
(CPU ids, memory, NUMA topology: fields mlobs does not declare), built below from a descriptor
independently of mlobs' generated module, so these tests also check that mlobs' trimmed
``api.proto`` reads what a kubelet sends.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from google.protobuf import (  # type: ignore[import-untyped]
    descriptor_pb2,
    descriptor_pool,
    message_factory,
)

from mlobs import safety
from mlobs.gpu.podresources import PODRESOURCES_ERRORS, PodRef, PodResources
from tests.clock import FakeClock

_FIELD = descriptor_pb2.FieldDescriptorProto


def _kubelet_response_class() -> Any:
    """``v1.ListPodResourcesResponse`` as the kubelet declares it, in a private descriptor pool."""
    schema = descriptor_pb2.FileDescriptorProto(
        name="kubelet_standin/podresources.proto", package="v1", syntax="proto3"
    )

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        proto = schema.message_type.add(name=name)
        for field_name, number, label, kind, type_name in fields:
            field = proto.field.add(name=field_name, number=number, label=label, type=kind)
            if type_name:
                field.type_name = type_name

    one, many = _FIELD.LABEL_OPTIONAL, _FIELD.LABEL_REPEATED
    text, int64, uint64, msg = (
        _FIELD.TYPE_STRING,
        _FIELD.TYPE_INT64,
        _FIELD.TYPE_UINT64,
        _FIELD.TYPE_MESSAGE,
    )
    message("NUMANode", ("ID", 1, one, int64, ""))
    message("TopologyInfo", ("nodes", 1, many, msg, ".v1.NUMANode"))
    message(
        "ContainerDevices",
        ("resource_name", 1, one, text, ""),
        ("device_ids", 2, many, text, ""),
        ("topology", 3, one, msg, ".v1.TopologyInfo"),
    )
    message(
        "ContainerMemory",
        ("memory_type", 1, one, text, ""),
        ("size", 2, one, uint64, ""),
        ("topology", 3, one, msg, ".v1.TopologyInfo"),
    )
    message(
        "ContainerResources",
        ("name", 1, one, text, ""),
        ("devices", 2, many, msg, ".v1.ContainerDevices"),
        ("cpu_ids", 3, many, int64, ""),
        ("memory", 4, many, msg, ".v1.ContainerMemory"),
    )
    message(
        "PodResources",
        ("name", 1, one, text, ""),
        ("namespace", 2, one, text, ""),
        ("containers", 3, many, msg, ".v1.ContainerResources"),
    )
    message("ListPodResourcesResponse", ("pod_resources", 1, many, msg, ".v1.PodResources"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(schema)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("v1.ListPodResourcesResponse")
    )


_KubeletResponse = _kubelet_response_class()


def _numa(node: int) -> dict[str, Any]:
    return {"nodes": [{"ID": node}]}


# Three pods as a kubelet reports them: a whole-GPU trainer with a sidecar that holds a MIG
# instance and a device of another vendor, a serving pod, and a pod holding no device at all.
PODS: list[dict[str, Any]] = [
    {
        "name": "train-0",
        "namespace": "research",
        "containers": [
            {
                "name": "trainer",
                "devices": [
                    {
                        "resource_name": "nvidia.com/gpu",
                        "device_ids": ["GPU-aaaa0000-0000", "GPU-bbbb0000-0000"],
                        "topology": _numa(0),
                    }
                ],
                "cpu_ids": [2, 3, 4, 5],
                "memory": [{"memory_type": "memory", "size": 1 << 30, "topology": _numa(0)}],
            },
            {
                "name": "sidecar",
                "devices": [
                    {"resource_name": "example.com/fpga", "device_ids": ["fpga-0"]},
                    {
                        "resource_name": "nvidia.com/mig-1g.10gb",
                        "device_ids": ["MIG-cccc0000-0000"],
                        "topology": _numa(1),
                    },
                ],
            },
        ],
    },
    {
        "name": "serve-7f9c",
        "namespace": "serving",
        "containers": [
            {
                "name": "server",
                "devices": [{"resource_name": "nvidia.com/gpu", "device_ids": ["GPU-dddd0000"]}],
                "cpu_ids": [8],
            }
        ],
    },
    {"name": "coredns-5d", "namespace": "kube-system", "containers": [{"name": "coredns"}]},
]

EXPECTED = {
    "GPU-aaaa0000-0000": PodRef(pod="train-0", namespace="research", container="trainer"),
    "GPU-bbbb0000-0000": PodRef(pod="train-0", namespace="research", container="trainer"),
    "MIG-cccc0000-0000": PodRef(pod="train-0", namespace="research", container="sidecar"),
    "GPU-dddd0000": PodRef(pod="serve-7f9c", namespace="serving", container="server"),
}


class KubeletStandin:
    """A STAND-IN for the kubelet's PodResources gRPC service on a unix socket.

    ``pods`` is the scripted answer; ``fail_with`` makes ``List`` answer with that status
    instead, ``raw`` replaces the encoded answer with other bytes, and ``hang`` makes it wait
    (until released or 5 s) before answering.
    """

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.pods: list[dict[str, Any]] = PODS
        self.fail_with: grpc.StatusCode | None = None
        self.raw: bytes | None = None
        self.hang = False
        self.requests: list[bytes] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._server: Any = None

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.requests)

    def start(self) -> None:
        list_handler = grpc.unary_unary_rpc_method_handler(
            self._list,
            request_deserializer=lambda data: data,
            response_serializer=lambda data: data,
        )
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("v1.PodResourcesLister", {"List": list_handler}),)
        )
        self._server.add_insecure_port("unix:" + str(self.socket))
        self._server.start()

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.stop(grace=None).wait(5)
            self._server = None

    def _list(self, request: bytes, context: Any) -> bytes:
        with self._lock:
            self.requests.append(request)
        self.entered.set()
        if self.hang:
            self.release.wait(5)
        if self.fail_with is not None:
            context.abort(self.fail_with, "scripted failure")
        if self.raw is not None:
            return self.raw
        data: bytes = _KubeletResponse(pod_resources=self.pods).SerializeToString()
        return data


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[KubeletStandin]:
    standin = KubeletStandin(tmp_path / "kubelet.sock")
    standin.start()
    yield standin
    standin.stop()


def _client(socket: Path, clock: FakeClock, timeout: float = 2.0) -> PodResources:
    return PodResources(socket, timeout=timeout, refresh_interval=30.0, clock=clock)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "mlobs" and r.levelno == logging.WARNING and "PodResources" in r.getMessage()
    ]


def test_maps_nvidia_devices_to_pod_namespace_and_container(
    kubelet: KubeletStandin, clock: FakeClock
) -> None:
    client = _client(kubelet.socket, clock)
    try:
        assert client.available()
        assert client.by_device() == EXPECTED
    finally:
        client.close()
    # ListPodResourcesRequest has no fields: the request on the wire is empty
    assert kubelet.requests == [b""]
    assert safety.self_metrics.get(PODRESOURCES_ERRORS) == 0


def test_available_only_for_a_socket(tmp_path: Path) -> None:
    assert not PodResources(tmp_path / "absent.sock").available()
    plain = tmp_path / "plain-file"
    plain.write_text("not a socket")
    assert not PodResources(plain).available()


def test_mapping_is_cached_for_the_refresh_interval(
    kubelet: KubeletStandin, clock: FakeClock
) -> None:
    client = _client(kubelet.socket, clock)
    try:
        assert client.by_device() == EXPECTED
        kubelet.pods = PODS[1:]
        clock.now += 29.0
        assert client.by_device() == EXPECTED
        assert kubelet.calls == 1
        clock.now += 1.5
        assert client.by_device() == {"GPU-dddd0000": EXPECTED["GPU-dddd0000"]}
        assert kubelet.calls == 2
    finally:
        client.close()


def test_a_returned_mapping_is_the_callers_copy(kubelet: KubeletStandin, clock: FakeClock) -> None:
    client = _client(kubelet.socket, clock)
    try:
        client.by_device().clear()
        assert client.by_device() == EXPECTED
    finally:
        client.close()


def test_missing_socket_gives_empty_mapping_one_warning_and_counts(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    client = _client(tmp_path / "not-mounted" / "kubelet.sock", clock)
    with caplog.at_level(logging.INFO, logger="mlobs"):
        for _ in range(3):
            assert client.by_device() == {}
            clock.now += 31.0
    client.close()
    assert not client.available()
    assert safety.self_metrics.get(PODRESOURCES_ERRORS, "socket_missing") == 3
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    assert "socket_missing" in warnings[0]


def test_failures_within_the_refresh_interval_are_not_retried(
    tmp_path: Path, clock: FakeClock
) -> None:
    client = _client(tmp_path / "kubelet.sock", clock)
    for _ in range(5):
        assert client.by_device() == {}
    assert safety.self_metrics.get(PODRESOURCES_ERRORS) == 1


def test_kubelet_gone_keeps_the_last_mapping_then_recovers(
    kubelet: KubeletStandin, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    client = _client(kubelet.socket, clock)
    try:
        assert client.by_device() == EXPECTED
        kubelet.stop()
        with caplog.at_level(logging.INFO, logger="mlobs"):
            for _ in range(3):
                clock.now += 31.0
                assert client.by_device() == EXPECTED
            # stopping removed the socket file
            assert safety.self_metrics.get(PODRESOURCES_ERRORS, "socket_missing") == 3
            assert len(_warnings(caplog)) == 1

            # the kubelet restarts on the same socket with other pods: picked up at once
            restarted = KubeletStandin(kubelet.socket)
            restarted.pods = PODS[1:]
            restarted.start()
            try:
                clock.now += 31.0
                assert client.by_device() == {"GPU-dddd0000": EXPECTED["GPU-dddd0000"]}
            finally:
                restarted.stop()
        assert any("answers again" in r.getMessage() for r in caplog.records)
    finally:
        client.close()


def test_stale_socket_nobody_listening(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "kubelet.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))  # bound but not listening, as a crashed kubelet leaves it
        client = _client(path, clock)
        assert client.available()
        assert client.by_device() == {}
        client.close()
    assert safety.self_metrics.get(PODRESOURCES_ERRORS, "unavailable") == 1


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (grpc.StatusCode.UNIMPLEMENTED, "unimplemented"),  # a kubelet without the v1 API
        (grpc.StatusCode.PERMISSION_DENIED, "permission_denied"),
        (grpc.StatusCode.UNAVAILABLE, "unavailable"),
    ],
)
def test_error_status_keeps_the_last_mapping(
    kubelet: KubeletStandin,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    status: grpc.StatusCode,
    reason: str,
) -> None:
    client = _client(kubelet.socket, clock)
    try:
        assert client.by_device() == EXPECTED
        kubelet.fail_with = status
        with caplog.at_level(logging.WARNING, logger="mlobs"):
            for _ in range(2):
                clock.now += 31.0
                assert client.by_device() == EXPECTED
        assert kubelet.calls == 3
        assert safety.self_metrics.get(PODRESOURCES_ERRORS, reason) == 2
        warnings = _warnings(caplog)
        assert len(warnings) == 1
        assert reason in warnings[0]
        assert "scripted failure" in warnings[0]
    finally:
        client.close()


def test_error_status_before_any_answer_gives_empty_mapping(
    kubelet: KubeletStandin, clock: FakeClock
) -> None:
    kubelet.fail_with = grpc.StatusCode.INTERNAL
    client = _client(kubelet.socket, clock)
    try:
        assert client.by_device() == {}
    finally:
        client.close()
    assert safety.self_metrics.get(PODRESOURCES_ERRORS, "internal") == 1


def test_undecodable_answer_is_counted(kubelet: KubeletStandin, clock: FakeClock) -> None:
    kubelet.raw = b"\xff\xff\xff"
    client = _client(kubelet.socket, clock)
    try:
        assert client.by_device() == {}
    finally:
        client.close()
    assert safety.self_metrics.get(PODRESOURCES_ERRORS) == 1


def test_slow_kubelet_times_out(kubelet: KubeletStandin, clock: FakeClock) -> None:
    kubelet.hang = True
    client = _client(kubelet.socket, clock, timeout=0.2)
    try:
        started = time.monotonic()
        assert client.by_device() == {}
        assert time.monotonic() - started < 3.0
    finally:
        client.close()
    assert safety.self_metrics.get(PODRESOURCES_ERRORS, "timeout") == 1


def test_socket_without_permission(
    kubelet: KubeletStandin, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tests may run as root, for whom file modes do not bite: deny access the way a non-root
    # exporter without the kubelet's group sees it
    real_access = os.access

    def access(path: Any, mode: int, **kwargs: Any) -> bool:
        if os.fspath(path) == str(kubelet.socket):
            return False
        return real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    client = _client(kubelet.socket, clock)
    assert client.by_device() == {}
    assert kubelet.calls == 0
    assert safety.self_metrics.get(PODRESOURCES_ERRORS, "permission_denied") == 1


def test_without_grpc_installed(
    kubelet: KubeletStandin, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "grpc", None)  # makes `import grpc` raise ImportError
    client = _client(kubelet.socket, clock)
    assert client.by_device() == {}
    assert kubelet.calls == 0
    assert safety.self_metrics.get(PODRESOURCES_ERRORS, "import_error") == 1


def test_each_kind_of_failure_warns_once(
    kubelet: KubeletStandin, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    missing = _client(kubelet.socket.with_name("absent.sock"), clock)
    failing = _client(kubelet.socket, clock)
    kubelet.fail_with = grpc.StatusCode.UNIMPLEMENTED
    with caplog.at_level(logging.WARNING, logger="mlobs"):
        for _ in range(2):
            assert missing.by_device() == {}
            assert failing.by_device() == {}
            clock.now += 31.0
    failing.close()
    assert sorted(w.split("failed (")[1].split(":")[0] for w in _warnings(caplog)) == [
        "socket_missing",
        "unimplemented",
    ]
    assert safety.self_metrics.get(PODRESOURCES_ERRORS) == 4


def test_concurrent_callers_get_the_last_mapping_while_one_asks(
    kubelet: KubeletStandin, clock: FakeClock
) -> None:
    client = _client(kubelet.socket, clock, timeout=5.0)
    try:
        assert client.by_device() == EXPECTED
        kubelet.pods = PODS[1:]
        kubelet.hang = True
        kubelet.entered.clear()
        clock.now += 31.0
        results: list[dict[str, PodRef]] = []
        asker = threading.Thread(target=lambda: results.append(client.by_device()))
        asker.start()
        assert kubelet.entered.wait(5)
        # the refresh is in flight: others neither wait for it nor start another
        others = [client.by_device() for _ in range(10)]
        assert others == [EXPECTED] * 10
        assert kubelet.calls == 2
        kubelet.release.set()
        asker.join(5)
        assert results == [{"GPU-dddd0000": EXPECTED["GPU-dddd0000"]}]
        assert client.by_device() == results[0]
    finally:
        client.close()


def test_close_ends_queries(kubelet: KubeletStandin, clock: FakeClock) -> None:
    client = _client(kubelet.socket, clock)
    assert client.by_device() == EXPECTED
    client.close()
    client.close()
    clock.now += 31.0
    assert client.by_device() == EXPECTED
    assert kubelet.calls == 1


def test_importing_the_module_loads_neither_grpc_nor_protobuf() -> None:
    code = (
        "import sys, mlobs.gpu.podresources; "
        "print(sorted(m for m in ('grpc', 'google.protobuf') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
