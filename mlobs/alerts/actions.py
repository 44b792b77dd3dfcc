"""What the alert webhook does with alerts: decide, queue, run the command, record the decision.

Holds :class:`ActionRunner`, its job queue and worker threads, and the process helpers behind
them. Each alert is checked against the rules; a matching rule's de-dup key is the rule, the
alert's status and the values of its ``dedup_by`` labels (Alertmanager repeats notifications:
``repeat_interval``, every change in the group, one copy per replica in an HA pair). A key whose
command is queued or running is skipped as a *duplicate*; one whose command was started less than
``cooldown`` seconds ago is skipped as in *cooldown*, and start times are kept in a small JSON file
so that a restart keeps its cooldowns. Commands run (an argv list, never a shell string, in their
own process group, without the shared secret in their environment) until they end or time out.
Every decision is recorded in the spool as an ``alert.action`` event and counted in
``mlobs_alert_webhook_actions_total{key=decision}``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mlobs import runtime, safety
from mlobs.alerts.notification import Alert, alert_environment
from mlobs.alerts.webhook_config import Rule, WebhookConfig
from mlobs.logs.redact import redact_text
from mlobs.record.types import Kind

logger = logging.getLogger("mlobs.alerts")

SECRET_ENV = "MLOBS_ALERT_WEBHOOK_SECRET"
"""Environment variable holding the receiver's shared secret (``--secret-file`` beats it); it is
kept out of every command's environment."""
EVENT_NAME = "alert.action"
ACTIONS_TOTAL = "mlobs_alert_webhook_actions_total"
OUTPUT_TAIL_BYTES = 4096
QUEUE_MAX = 1000
KILL_GRACE_S = 5.0
"""Seconds between SIGTERM and SIGKILL when a command times out or the receiver stops."""

# Decisions, as recorded and counted. Only the skips are known at once; the rest come from the
# worker when the command has ended.
RAN = "ran"
FAILED = "failed"
TIMED_OUT = "timed_out"
INTERRUPTED = "interrupted"
CANCELLED = "cancelled"
SKIPPED_COOLDOWN = "skipped_cooldown"
SKIPPED_DUPLICATE = "skipped_duplicate"
SKIPPED_BUSY = "skipped_busy"
QUEUED = "queued"
IGNORED_RESOLVED = "ignored_resolved"
"""Reply-only decisions (``queued``, ``ignored_resolved``) are not recorded in the spool."""


@dataclass
class _Job:
    rule: Rule
    alert: Alert
    key: tuple[str, ...]
    started: float
    """Clock time the job was accepted: the start of its cooldown."""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    interrupted: bool = False
    """Set when :meth:`ActionRunner.stop` signalled the command."""


class ActionRunner:
    """Decides, for each alert and matching rule, whether to run the command; runs it on worker
    threads and records every decision.

    Args:
        config: the rules.
        state_path: JSON file keeping cooldown start times across restarts (``None``: memory).
        clock: wall-clock seconds (tests pass a fake one).
    """

    def __init__(
        self,
        config: WebhookConfig,
        state_path: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.state_path = state_path
        self._clock = clock
        self._rules = {r.name: r for r in config.rules}
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._last_start: dict[tuple[str, ...], float] = {}
        self._in_flight: set[tuple[str, ...]] = set()
        self._running: list[_Job] = []
        self._queue: queue.Queue[_Job | None] = queue.Queue(QUEUE_MAX)
        self._stopping = False
        self._workers: list[threading.Thread] = []
        self._load_state()

    def start(self) -> None:
        for n in range(self.config.max_concurrent):
            worker = threading.Thread(target=self._work, name=f"mlobs-alert-action-{n}")
            worker.daemon = True
            worker.start()
            self._workers.append(worker)

    def handle(self, alerts: list[Alert]) -> dict[str, Any]:
        """Decide for each alert; returns the summary the HTTP reply carries."""
        actions: list[dict[str, Any]] = []
        unmatched = 0
        for alert in alerts:
            rules = [r for r in self.config.rules if r.matches(alert.labels)]
            if not rules:
                unmatched += 1
            for rule in rules:
                decision = self._decide(rule, alert)
                actions.append(
                    {
                        "rule": rule.name,
                        "alertname": alert.name,
                        "run_id": alert.run_id,
                        "fingerprint": alert.fingerprint,
                        "status": alert.status,
                        "decision": decision,
                    }
                )
        return {"received": len(alerts), "unmatched": unmatched, "actions": actions}

    def _decide(self, rule: Rule, alert: Alert) -> str:
        if alert.status == "resolved" and not rule.on_resolved:
            return IGNORED_RESOLVED
        key = (rule.name, alert.status, *(alert.labels.get(n, "") for n in rule.dedup_by))
        now = self._clock()
        extra: dict[str, Any] = {}
        with self._lock:
            last = self._last_start.get(key)
            if self._stopping:
                decision = CANCELLED
            elif key in self._in_flight:
                decision = SKIPPED_DUPLICATE
            elif last is not None and now - last < rule.cooldown:
                decision = SKIPPED_COOLDOWN
                extra["cooldown_left_s"] = round(rule.cooldown - (now - last), 3)
            else:
                try:
                    self._queue.put_nowait(_Job(rule, alert, key, now))
                except queue.Full:
                    decision = SKIPPED_BUSY
                else:
                    decision = QUEUED
                    self._in_flight.add(key)
                    self._last_start[key] = now
        if decision == QUEUED:
            self._save_state()
        else:
            self._record(_Job(rule, alert, key, now), decision, **extra)
        return decision

    # -- worker -----------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                self._execute(job)
            except Exception as exc:  # a worker never dies: the next job must still run
                report_failure("alert_webhook.worker", exc)
            finally:
                with self._lock:
                    self._in_flight.discard(job.key)
                    if job in self._running:
                        self._running.remove(job)

    def _execute(self, job: _Job) -> None:
        rule = job.rule
        env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
        env.update(alert_environment(job.alert, rule))
        began = time.monotonic()
        start_error = ""
        with tempfile.TemporaryFile() as output:
            with self._lock:
                if self._stopping:
                    self._forget_start(job)
                    cancelled = True
                else:
                    cancelled = False
                    try:
                        job.process = subprocess.Popen(
                            rule.command,
                            stdin=subprocess.DEVNULL,
                            stdout=output,
                            stderr=subprocess.STDOUT,
                            env=env,
                            cwd=rule.cwd,
                            start_new_session=True,  # its own process group, killed as a whole
                        )
                    except OSError as exc:
                        start_error = f"cannot start {rule.command[0]}: {exc.strerror or exc}"
                    else:
                        self._running.append(job)
            if cancelled:
                self._record(job, CANCELLED)
                return
            if job.process is None:
                self._record(job, FAILED, output_tail=start_error, duration_s=0.0)
                return
            try:
                code: int | None = job.process.wait(rule.timeout)
                decision = RAN if code == 0 else FAILED
            except subprocess.TimeoutExpired:
                _terminate(job.process)
                code = job.process.returncode
                decision = TIMED_OUT
            if job.interrupted:
                decision = INTERRUPTED
            self._record(
                job,
                decision,
                exit_code=code,
                duration_s=round(time.monotonic() - began, 3),
                output_tail=_tail(output),
            )

    def stop(self, timeout: float = KILL_GRACE_S + 5.0) -> None:
        """Cancel queued commands, stop running ones (SIGTERM, then SIGKILL), join the workers."""
        with self._lock:
            self._stopping = True
            running = [j.process for j in self._running if j.process is not None]
            for running_job in self._running:
                running_job.interrupted = True
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                with self._lock:
                    self._in_flight.discard(job.key)
                    self._forget_start(job)
                self._record(job, CANCELLED)
        for process in running:
            _signal_group(process, signal.SIGTERM)
        for _ in self._workers:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic() - 1.0))
            if worker.is_alive():  # a command that ignores SIGTERM
                for process in running:
                    _signal_group(process, signal.SIGKILL)
                worker.join(1.0)
        self._workers.clear()
        self._save_state()

    def _forget_start(self, job: _Job) -> None:
        """A cancelled job never ran: it must not hold its key in cooldown (lock held)."""
        if self._last_start.get(job.key) == job.started:
            del self._last_start[job.key]

    # -- recording --------------------------------------------------------------------------
    def _record(self, job: _Job, decision: str, **details: Any) -> None:
        alert = job.alert
        attrs: dict[str, Any] = {
            "alertname": alert.name,
            "run_id": alert.run_id,
            "fingerprint": alert.fingerprint,
            "status": alert.status,
            "rule": job.rule.name,
            "command": [redact_text(a) for a in job.rule.command],
            "dedup_key": ",".join(
                f"{n}={v}" for n, v in zip(job.rule.dedup_by, job.key[2:], strict=True)
            ),
            "decision": decision,
            "exit_code": None,
            "duration_s": None,
            "output_tail": "",
        }
        attrs.update(details)
        log = logger.warning if decision in (FAILED, TIMED_OUT) else logger.info
        log(
            "alert %s (run_id=%r, rule %s): %s%s",
            alert.name,
            alert.run_id,
            job.rule.name,
            decision,
            f", exit code {attrs['exit_code']}" if attrs["exit_code"] is not None else "",
        )
        safety.self_metrics.inc(ACTIONS_TOTAL, decision)
        try:
            rt = runtime.get()
            rt.recorder.append(
                (int(Kind.EVENT), time.time_ns(), alert.run_id, EVENT_NAME, None, None, None, attrs)
            )
            rt.flush_spool()  # a decision is worth a small write now, not at the next interval
        except Exception as exc:
            report_failure("alert_webhook.record", exc)

    # -- cooldown state ---------------------------------------------------------------------
    def _load_state(self) -> None:
        if self.state_path is None or not self.state_path.exists():
            return
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
            entries = data["cooldowns"]
            now = self._clock()
            for entry in entries:
                key = tuple(str(part) for part in entry["key"])
                rule = self._rules.get(key[0]) if key else None
                started = float(entry["started"])
                if rule is not None and now - started < rule.cooldown:
                    self._last_start[key] = started
        except (OSError, ValueError, KeyError, TypeError) as exc:
            safety.warn(
                "alert_webhook.state",
                "mlobs: ignoring the alert webhook state file %s: %r",
                self.state_path,
                exc,
            )

    def _save_state(self) -> None:
        if self.state_path is None:
            return
        now = self._clock()
        with self._lock:
            entries = [
                {"key": list(key), "started": started}
                for key, started in self._last_start.items()
                if key[0] in self._rules and now - started < self._rules[key[0]].cooldown
            ]
        text = json.dumps({"version": 1, "cooldowns": entries}, indent=1)
        temporary = self.state_path.with_name(self.state_path.name + ".tmp")
        try:
            with self._state_lock:
                self.state_path.parent.mkdir(parents=True, exist_ok=True)
                temporary.write_text(text, encoding="utf-8")
                os.replace(temporary, self.state_path)
        except OSError as exc:
            report_failure("alert_webhook.state", exc)


def _tail(output: IO[bytes]) -> str:
    size = output.seek(0, os.SEEK_END)
    output.seek(max(0, size - OUTPUT_TAIL_BYTES))
    return redact_text(output.read().decode("utf-8", errors="replace"))


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _terminate(process: subprocess.Popen[bytes]) -> None:
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        process.wait()


def report_failure(where: str, exc: Exception) -> None:
    """Count and log an internal failure; on a background thread even strict mode only logs."""
    try:
        safety.report(where, exc)
    except safety.MlobsError:
        logger.exception("mlobs: %s failed", where)
