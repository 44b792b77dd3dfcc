"""``alertmanager.yml``: routing by team and severity, grouping by run, inhibition, receivers.

Routing: every team of :class:`~mlobs.alerts.params.AlertmanagerParams` gets two receivers,
``<team>-email-slack`` (critical alerts: an email and a Slack message) and ``<team>-slack``
(warnings and info: Slack only); an alert whose team has no receiver goes to the default team's
Slack. Alerts are grouped by ``alertname`` and ``run_id`` (one message per alert and run).

Inhibition: while a critical alert of a run fires, the warnings and infos of the same run are
muted (they are nearly always its consequences: a NaN loss makes the loss diverge, a lost GPU
makes it idle). The same holds per GPU (``uuid``), for the latency of a model whose error rate
is critical, and for the spool backlog of a sink whose exports keep failing. Alerts without a
``run_id`` or ``uuid`` never inhibit one another through the first two rules.

Secrets never appear here: the SMTP password and each team's Slack webhook URL are read from
files under ``secrets_dir`` (``smtp-password``, ``slack-api-url-<team>``).
"""

from __future__ import annotations

from typing import Any

from mlobs.alerts.params import AlertmanagerParams

TEMPLATE_FILE = "templates/mlobs.tmpl"
"""Where the notification templates go, relative to alertmanager.yml."""


def _email(params: AlertmanagerParams, team: str) -> dict[str, Any]:
    return {
        "to": params.email_to[team],
        "send_resolved": True,
        "headers": {"Subject": '{{ template "mlobs.email.subject" . }}'},
        "html": '{{ template "mlobs.email.html" . }}',
        "text": '{{ template "mlobs.email.text" . }}',
    }


def _slack(params: AlertmanagerParams, team: str) -> dict[str, Any]:
    return {
        "api_url_file": f"{params.secrets_dir.rstrip('/')}/slack-api-url-{team}",
        "channel": params.slack_channel[team],
        "send_resolved": True,
        "color": '{{ template "mlobs.slack.color" . }}',
        "title": '{{ template "mlobs.slack.title" . }}',
        "title_link": '{{ template "mlobs.slack.title_link" . }}',
        "text": '{{ template "mlobs.slack.text" . }}',
        "fallback": '{{ template "mlobs.slack.title" . }}',
    }


def _inhibit_rules() -> list[dict[str, Any]]:
    muted = 'severity=~"warning|info"'
    return [
        {
            "source_matchers": ['severity="critical"', 'run_id=~".+"'],
            "target_matchers": [muted, 'run_id=~".+"'],
            "equal": ["run_id"],
        },
        {
            "source_matchers": ['severity="critical"', 'uuid=~".+"'],
            "target_matchers": [muted, 'uuid=~".+"'],
            "equal": ["uuid"],
        },
        {
            "source_matchers": ['alertname="MlobsServingErrorRateHigh"'],
            "target_matchers": ['alertname="MlobsServingLatencyHigh"'],
            "equal": ["model", "model_version"],
        },
        {
            "source_matchers": ['alertname="MlobsExporterFailing"'],
            "target_matchers": ['alertname="MlobsSpoolBacklogGrowing"'],
            "equal": ["instance", "sink"],
        },
    ]


def build_alertmanager(params: AlertmanagerParams | None = None) -> dict[str, Any]:
    """The ``alertmanager.yml`` document (Alertmanager 0.25 and later)."""
    p = params or AlertmanagerParams()
    smtp: dict[str, Any] = {
        "smtp_smarthost": p.smtp_smarthost,
        "smtp_from": p.smtp_from,
        "smtp_require_tls": p.smtp_require_tls,
    }
    if p.smtp_auth_username:
        smtp["smtp_auth_username"] = p.smtp_auth_username
        smtp["smtp_auth_password_file"] = f"{p.secrets_dir.rstrip('/')}/smtp-password"
    receivers: list[dict[str, Any]] = []
    routes: list[dict[str, Any]] = []
    for team in p.teams:
        receivers.append(
            {
                "name": f"{team}-email-slack",
                "email_configs": [_email(p, team)],
                "slack_configs": [_slack(p, team)],
            }
        )
        receivers.append({"name": f"{team}-slack", "slack_configs": [_slack(p, team)]})
        routes.append(
            {
                "matchers": [f'team="{team}"'],
                "receiver": f"{team}-slack",
                "routes": [
                    {
                        "matchers": ['severity="critical"'],
                        "receiver": f"{team}-email-slack",
                        "repeat_interval": p.critical_repeat_interval,
                    },
                    {
                        "matchers": ['severity="info"'],
                        "receiver": f"{team}-slack",
                        "repeat_interval": p.info_repeat_interval,
                    },
                ],
            }
        )
    return {
        "global": {"resolve_timeout": p.resolve_timeout, **smtp},
        "templates": list(p.templates),
        "route": {
            "receiver": f"{p.default_team}-slack",
            "group_by": list(p.group_by),
            "group_wait": p.group_wait,
            "group_interval": p.group_interval,
            "repeat_interval": p.repeat_interval,
            "routes": routes,
        },
        "inhibit_rules": _inhibit_rules(),
        "receivers": receivers,
    }
