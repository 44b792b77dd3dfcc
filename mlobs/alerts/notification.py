"""Alertmanager's webhook notification (payload version 4) and what a command learns of an alert.

Holds :class:`Alert` (one alert with its group's facts), :func:`parse_notification`, which turns a
decoded request body into alerts or raises :class:`PayloadError`, and :func:`alert_environment`,
the ``MLOBS_ALERT_*`` variables a rule's command receives; nothing here decides or runs anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mlobs import safety
from mlobs.alerts.webhook_config import Rule

RUN_ID_LABEL = "run_id"


class PayloadError(ValueError):
    """A request body that is not an Alertmanager webhook notification."""


@dataclass(frozen=True)
class Alert:
    """One alert of a notification, with the notification's group facts."""

    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str = ""
    fingerprint: str = ""
    generator_url: str = ""
    receiver: str = ""
    group_key: str = ""
    external_url: str = ""

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def run_id(self) -> str:
        return self.labels.get(RUN_ID_LABEL, "")


def parse_notification(data: Any) -> list[Alert]:
    """The alerts of an Alertmanager webhook payload. Raises :class:`PayloadError`."""
    if not isinstance(data, dict) or not isinstance(data.get("alerts"), list):
        raise PayloadError("not an Alertmanager notification: no 'alerts' list")
    if data.get("truncatedAlerts"):
        safety.warn(
            "alert_webhook.truncated",
            "mlobs: Alertmanager left %s alert(s) out of a notification (max_alerts)",
            data["truncatedAlerts"],
        )
    group = {
        "receiver": _text(data.get("receiver")),
        "group_key": _text(data.get("groupKey")),
        "external_url": _text(data.get("externalURL")),
    }
    alerts = []
    for i, raw in enumerate(data["alerts"]):
        if not isinstance(raw, dict) or not isinstance(raw.get("labels"), dict):
            raise PayloadError(f"alerts[{i}]: not an alert with a 'labels' object")
        annotations = raw.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise PayloadError(f"alerts[{i}]: 'annotations' is not an object")
        alerts.append(
            Alert(
                status=_text(raw.get("status")) or _text(data.get("status")) or "firing",
                labels={str(k): _text(v) for k, v in raw["labels"].items()},
                annotations={str(k): _text(v) for k, v in annotations.items()},
                starts_at=_text(raw.get("startsAt")),
                fingerprint=_text(raw.get("fingerprint")),
                generator_url=_text(raw.get("generatorURL")),
                **group,
            )
        )
    return alerts


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def alert_environment(alert: Alert, rule: Rule) -> dict[str, str]:
    """The ``MLOBS_ALERT_*`` variables a command receives (on top of the receiver's environment,
    less the shared secret)."""
    return {
        "MLOBS_ALERT_NAME": alert.name,
        "MLOBS_ALERT_RUN_ID": alert.run_id,
        "MLOBS_ALERT_STATUS": alert.status,
        "MLOBS_ALERT_LABELS": json.dumps(alert.labels, sort_keys=True),
        "MLOBS_ALERT_ANNOTATIONS": json.dumps(alert.annotations, sort_keys=True),
        "MLOBS_ALERT_FINGERPRINT": alert.fingerprint,
        "MLOBS_ALERT_STARTS_AT": alert.starts_at,
        "MLOBS_ALERT_GENERATOR_URL": alert.generator_url,
        "MLOBS_ALERT_RECEIVER": alert.receiver,
        "MLOBS_ALERT_GROUP_KEY": alert.group_key,
        "MLOBS_ALERT_EXTERNAL_URL": alert.external_url,
        "MLOBS_ALERT_RULE": rule.name,
    }
