"""The alert webhook's configuration file: which alerts run which command, and how often.

Holds :class:`WebhookConfig` and its rules (:class:`Rule`), the defaults a rule falls back on
(``cooldown``, ``timeout``, ``dedup_by``), and :func:`load_config` / :func:`parse_config`, which
read a YAML or JSON file and validate every key, raising :class:`ConfigError` with the place of the
first mistake; nothing here runs a command or opens a socket.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_COOLDOWN = 3600.0
DEFAULT_TIMEOUT = 3600.0
DEFAULT_DEDUP_BY = ("alertname", "run_id")


class ConfigError(ValueError):
    """The receiver's configuration file is missing, unreadable or invalid."""


@dataclass(frozen=True)
class Rule:
    """Which alerts run which command, and how often."""

    name: str
    match: Mapping[str, str]
    """Label values an alert must have (``alertname`` included when given)."""
    command: tuple[str, ...]
    cooldown: float = DEFAULT_COOLDOWN
    dedup_by: tuple[str, ...] = DEFAULT_DEDUP_BY
    on_resolved: bool = False
    timeout: float = DEFAULT_TIMEOUT
    cwd: str | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match.items())


@dataclass(frozen=True)
class WebhookConfig:
    """The whole configuration file.

    ``state_file``: where cooldowns survive a restart; ``None`` puts it in the spool directory,
    ``""`` keeps them in memory only.
    """

    rules: tuple[Rule, ...]
    max_concurrent: int = 1
    state_file: str | None = None


_TOP_KEYS = ("rules", "max_concurrent", "state_file")
_RULE_KEYS = (
    "name",
    "alertname",
    "match",
    "command",
    "cooldown",
    "dedup_by",
    "on_resolved",
    "timeout",
    "cwd",
)


def load_config(path: str | Path) -> WebhookConfig:
    """Read and validate a YAML or JSON configuration file.

    YAML needs PyYAML; without it only JSON files load. Raises :class:`ConfigError`.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    if path.suffix.lower() == ".json":
        return parse_config(_parse_json(text, path))
    try:
        yaml: Any = importlib.import_module("yaml")
    except ImportError:
        try:
            data = json.loads(text)
        except ValueError:
            raise ConfigError(
                f"{path}: not JSON, and reading YAML needs PyYAML (pip install pyyaml)"
            ) from None
        return parse_config(data)
    try:
        return parse_config(yaml.safe_load(text))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def _parse_json(text: str, path: Path) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None


def parse_config(data: Any) -> WebhookConfig:
    """Validate configuration data (as loaded from YAML or JSON). Raises :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a mapping with a 'rules' list")
    _no_unknown_keys(data, _TOP_KEYS, "configuration")
    raw_rules = data.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise ConfigError("'rules' must be a non-empty list")
    rules = tuple(_parse_rule(raw, i) for i, raw in enumerate(raw_rules))
    names = [r.name for r in rules]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"rule name {name!r} is used twice: give the rules distinct 'name's")
    max_concurrent = data.get("max_concurrent", 1)
    if type(max_concurrent) is not int or not 1 <= max_concurrent <= 64:
        raise ConfigError("'max_concurrent' must be an integer from 1 to 64")
    state_file = data.get("state_file")
    if state_file is False:
        state_file = ""
    if state_file is not None and not isinstance(state_file, str):
        raise ConfigError("'state_file' must be a path, or false to keep cooldowns in memory")
    return WebhookConfig(rules, max_concurrent, state_file)


def _parse_rule(raw: Any, index: int) -> Rule:
    where = f"rules[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping")
    _no_unknown_keys(raw, _RULE_KEYS, where)
    match = raw.get("match", {})
    if not isinstance(match, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in match.items()
    ):
        raise ConfigError(f"{where}.match: must map label names to string values")
    match = dict(match)
    alertname = raw.get("alertname")
    if alertname is not None:
        if not isinstance(alertname, str) or not alertname:
            raise ConfigError(f"{where}.alertname: must be a non-empty string")
        if match.get("alertname", alertname) != alertname:
            raise ConfigError(f"{where}: 'alertname' and 'match.alertname' disagree")
        match["alertname"] = alertname
    if not match:
        raise ConfigError(f"{where}: give 'alertname' or a 'match' of label values")
    name = raw.get("name", match.get("alertname") or f"rule-{index}")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.name: must be a non-empty string")
    where = f"{where} ({name})"
    command = raw.get("command")
    if (
        not isinstance(command, list)
        or not command
        or not all(isinstance(a, str) and a for a in command)
    ):
        raise ConfigError(
            f"{where}.command: must be a non-empty list of non-empty strings (an argv list, "
            "not a shell string)"
        )
    dedup_by = raw.get("dedup_by", list(DEFAULT_DEDUP_BY))
    if not isinstance(dedup_by, list) or not all(isinstance(x, str) and x for x in dedup_by):
        raise ConfigError(f"{where}.dedup_by: must be a list of label names")
    on_resolved = raw.get("on_resolved", False)
    if not isinstance(on_resolved, bool):
        raise ConfigError(f"{where}.on_resolved: must be true or false")
    cwd = raw.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not cwd):
        raise ConfigError(f"{where}.cwd: must be a directory path")
    return Rule(
        name=name,
        match=match,
        command=tuple(command),
        cooldown=_seconds(raw, "cooldown", DEFAULT_COOLDOWN, where, zero_ok=True),
        dedup_by=tuple(dedup_by),
        on_resolved=on_resolved,
        timeout=_seconds(raw, "timeout", DEFAULT_TIMEOUT, where, zero_ok=False),
        cwd=cwd,
    )


def _seconds(raw: dict[str, Any], key: str, default: float, where: str, zero_ok: bool) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}.{key}: must be a number of seconds")
    if value < 0 or (value == 0 and not zero_ok) or value != value or value == float("inf"):
        raise ConfigError(f"{where}.{key}: must be {'≥' if zero_ok else '>'} 0 and finite")
    return float(value)


def _no_unknown_keys(data: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}"
        )
