"""Redaction: secrets in log records, params and tags never leave the process.

Two rules. A key that names a secret (password, token, API key, ...) has its whole value replaced.
A value that looks like a credential (a bearer token, a JWT, a cloud or VCS key, ``password=...``
inside a sentence) has that part replaced, whatever its key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[REDACTED]"

SECRET_KEY = re.compile(
    r"(pass(word|wd|phrase)?|secret|token|api[-_]?key|apikey|access[-_]?key|private[-_]?key"
    r"|credential|authorization|(^|[-_])auth($|[-_])|session[-_]?id|cookie)",
    re.IGNORECASE,
)
# ML code is full of token counts and tokenizers, which are not secrets.
_KEY_EXCEPTIONS = re.compile(
    r"tokens|tokeniz|(num|max|n)_token|token_(count|len|length|ids?|type)", re.IGNORECASE
)

_SECRET_VALUE = re.compile(
    "|".join(
        (
            r"(?i:bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}",  # Authorization header values
            r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWT
            r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",  # AWS access key id
            r"\bgh[pousr]_[A-Za-z0-9]{20,}\b",  # GitHub tokens
            r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b",  # Slack tokens
            r"\bsk-[A-Za-z0-9_-]{16,}\b",  # OpenAI-style secret keys
            r"\bhf_[A-Za-z0-9]{20,}\b",  # Hugging Face tokens
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
            r"://[^/\s:@]+:[^/\s@]+@",  # credentials in a URL
        )
    )
)
# key=value or key: value inside free text, where the key names a secret.
_INLINE_PAIR = re.compile(
    r"(?i)\b([\w.-]*(?:pass(?:word|wd)?|secret|token|api[-_]?key|apikey|access[-_]?key)[\w.-]*)"
    r"(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&\"']+)"
)


def is_secret_key(key: str) -> bool:
    return bool(SECRET_KEY.search(key)) and not _KEY_EXCEPTIONS.search(key)


def redact_text(text: str) -> str:
    """Replace credential-looking parts of a string."""
    if not text:
        return text

    def url_creds(m: re.Match[str]) -> str:
        return f"://{REDACTED}@" if m.group(0).startswith("://") else REDACTED

    text = _SECRET_VALUE.sub(url_creds, text)
    return _INLINE_PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


def redact_value(key: str, value: Any) -> Any:
    if is_secret_key(key) and value not in (None, ""):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return redact_mapping(value)
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(key, v) for v in value)
    return value


def redact_mapping(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with secret keys and credential-looking values replaced, recursively."""
    return {str(k): redact_value(str(k), v) for k, v in data.items()}
