"""Which pod, namespace and container holds each GPU, from the kubelet PodResources API.

The standalone GPU exporter runs as a DaemonSet beside the kubelet; :class:`PodResources` asks the
kubelet's ``v1.PodResourcesLister/List`` (gRPC over the unix socket :data:`DEFAULT_SOCKET`, which
the DaemonSet mounts) which devices each container was given, and maps every NVIDIA device id
(``GPU-<uuid>``, or ``MIG-<uuid>`` for a MIG instance) to a :class:`PodRef`.

Attribution is an extra, never a requirement: outside Kubernetes, with the socket not mounted or
the kubelet restarting, :meth:`PodResources.by_device` returns the last mapping it got (``{}`` at
first), logs one warning per kind of failure (a kind warns again only after the kubelet answered
in between) and counts every failure in ``mlobs_gpu_podresources_errors_total`` with the reason as
label: ``socket_missing``, ``permission_denied``, ``unavailable``, ``timeout``, another gRPC status
in lower case, ``import_error`` or ``error``. It never raises.

grpcio and protobuf (the ``gpu`` extra) are imported on the first query, not with this module.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlobs import safety

logger = logging.getLogger("mlobs")

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
"""Where the kubelet serves the PodResources API."""

PODRESOURCES_ERRORS = "mlobs_gpu_podresources_errors_total"
"""Self-metric: failed queries of the PodResources API, labelled with a short reason."""

NVIDIA_RESOURCE_PREFIX = "nvidia.com/"
"""Resources of the NVIDIA device plugin, such as ``nvidia.com/gpu``, ``nvidia.com/mig-1g.10gb``."""

_LIST_METHOD = "/v1.PodResourcesLister/List"
_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
"""A node with many pods answers with more than gRPC's default 4 MiB limit on a message."""


@dataclass(frozen=True)
class PodRef:
    """The container a device is assigned to."""

    pod: str
    namespace: str
    container: str


class _QueryError(Exception):
    """A failed query, with the short reason it is counted under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class PodResources:
    """Device id -> pod mapping from the kubelet, refreshed at most every ``refresh_interval``.

    Thread-safe. Device ids are reported as the kubelet has them: GPU and MIG UUIDs with the
    device plugin's default settings, ``<uuid>::<n>`` for a time-sliced replica.

    Args:
        socket_path: the kubelet's PodResources socket.
        timeout: seconds one ``List`` call may take.
        refresh_interval: seconds a mapping (or a failure) is reused before asking again.
        clock: monotonic seconds; tests pass a fake one.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str] = DEFAULT_SOCKET,
        timeout: float = 2.0,
        refresh_interval: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._socket_path = os.fspath(socket_path)
        self._timeout = timeout
        self._refresh_interval = refresh_interval
        self._clock = clock
        self._lock = threading.Lock()
        # all below guarded by _lock; the gRPC call itself runs outside it
        self._mapping: dict[str, PodRef] = {}
        self._asked_at: float | None = None
        self._querying = False
        self._closed = False
        self._channel: Any = None
        self._warned: set[str] = set()

    @property
    def socket_path(self) -> str:
        return self._socket_path

    def available(self) -> bool:
        """Whether a unix socket is at ``socket_path`` (not whether the kubelet answers on it)."""
        try:
            return stat.S_ISSOCK(os.stat(self._socket_path).st_mode)
        except OSError:
            return False

    def by_device(self) -> dict[str, PodRef]:
        """Device id -> the pod, namespace and container it is assigned to (NVIDIA devices only).

        Asks the kubelet when the last answer is older than ``refresh_interval``; while another
        thread is asking, returns the previous mapping at once. Never raises.
        """
        with self._lock:
            now = self._clock()
            fresh = self._asked_at is not None and now - self._asked_at < self._refresh_interval
            if fresh or self._querying or self._closed:
                return dict(self._mapping)
            # a failure is also kept for refresh_interval: a missing socket costs one stat per
            # interval, and a hung kubelet one timeout, not one per scrape
            self._asked_at = now
            self._querying = True
            channel = self._channel
        channel_used: Any = None
        mapping: dict[str, PodRef] | None = None
        failure: _QueryError | None = None
        try:
            channel_used, mapping = self._query(channel)
        except _QueryError as exc:
            failure = exc
        except Exception as exc:  # never raise into the exporter's scrape
            failure = _QueryError("error", repr(exc))
        with self._lock:
            self._querying = False
            leftover = channel_used if self._closed else None
            if not self._closed:
                # after a failure _query closed the channel: the next query connects afresh
                # instead of waiting out gRPC's reconnect backoff after a kubelet restart
                self._channel = channel_used
            if mapping is not None:
                self._mapping = mapping
            recovered = failure is None and bool(self._warned)
            if recovered:
                self._warned.clear()
            first_of_kind = failure is not None and failure.reason not in self._warned
            if failure is not None:
                self._warned.add(failure.reason)
            result = dict(self._mapping)
        _close_quietly(leftover)
        if failure is not None:
            safety.self_metrics.inc(PODRESOURCES_ERRORS, failure.reason)
            if first_of_kind:
                logger.warning(
                    "mlobs: kubelet PodResources API at %s failed (%s: %s); GPU series keep "
                    "the last pod labels known (%d devices); further %r failures are only "
                    "counted in %s",
                    self._socket_path,
                    failure.reason,
                    failure,
                    len(result),
                    failure.reason,
                    PODRESOURCES_ERRORS,
                )
        elif recovered:
            logger.info("mlobs: kubelet PodResources API at %s answers again", self._socket_path)
        return result

    def close(self) -> None:
        """Close the gRPC channel. Later calls of :meth:`by_device` return the last mapping."""
        with self._lock:
            self._closed = True
            channel, self._channel = self._channel, None
        _close_quietly(channel)

    def _query(self, channel: Any) -> tuple[Any, dict[str, PodRef]]:
        """One ``List`` call: the channel to keep and the mapping. Raises :class:`_QueryError`.

        On any failure the channel is closed.
        """
        try:
            self._check_socket()
            try:
                import grpc  # type: ignore[import-untyped]

                from mlobs.gpu.podresources_proto import api_pb2
            except Exception as exc:  # not installed, or a protobuf runtime older than the gencode
                raise _QueryError(
                    "import_error", f"{exc!r}; mlobs[gpu] installs the grpcio and protobuf it needs"
                ) from exc
            if channel is None:
                channel = grpc.insecure_channel(
                    "unix:" + self._socket_path,
                    options=[("grpc.max_receive_message_length", _MAX_RESPONSE_BYTES)],
                )
            call = channel.unary_unary(
                _LIST_METHOD,
                request_serializer=api_pb2.ListPodResourcesRequest.SerializeToString,
                response_deserializer=api_pb2.ListPodResourcesResponse.FromString,
            )
            try:
                response = call(api_pb2.ListPodResourcesRequest(), timeout=self._timeout)
            except grpc.RpcError as exc:
                raise _QueryError(_reason(exc), _detail(exc)) from exc
            return channel, _devices(response)
        except BaseException:
            _close_quietly(channel)
            raise

    def _check_socket(self) -> None:
        """Name the two usual failures (not mounted, not allowed) before gRPC blurs them."""
        try:
            os.stat(self._socket_path)
        except FileNotFoundError as exc:
            raise _QueryError("socket_missing", f"no such socket: {exc.strerror}") from exc
        except PermissionError as exc:
            raise _QueryError("permission_denied", str(exc)) from exc
        except OSError as exc:
            raise _QueryError("socket_error", str(exc)) from exc
        if not os.access(self._socket_path, os.W_OK):
            raise _QueryError("permission_denied", "no write permission on the socket")


def _devices(response: Any) -> dict[str, PodRef]:
    mapping: dict[str, PodRef] = {}
    for pod in response.pod_resources:
        for container in pod.containers:
            ref = PodRef(pod=pod.name, namespace=pod.namespace, container=container.name)
            for devices in container.devices:
                if not devices.resource_name.startswith(NVIDIA_RESOURCE_PREFIX):
                    continue
                for device_id in devices.device_ids:
                    if device_id:
                        mapping[device_id] = ref
    return mapping


def _reason(exc: Any) -> str:
    """``timeout``, ``unavailable``, ``permission_denied``, ...: the gRPC status, short."""
    code = getattr(exc, "code", None)
    status = code() if callable(code) else None
    name = getattr(status, "name", None)
    if not isinstance(name, str):
        return "grpc_error"
    return "timeout" if name == "DEADLINE_EXCEEDED" else name.lower()


def _detail(exc: Any) -> str:
    details = getattr(exc, "details", None)
    text = details() if callable(details) else None
    return str(text) if text else repr(exc)


def _close_quietly(channel: Any) -> None:
    if channel is None:
        return
    try:
        channel.close()
    except Exception:
        pass  # closing a broken channel may fail; there is nothing left to release
