"""Structured logs: stdlib records carry run, epoch, step, rank and span context, are redacted,
and reach the sink (or a user's JsonFormatter handler) as one structured event each."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mlobs
from mlobs import runtime
from mlobs.export.memory import InMemoryExporter
from mlobs.logs import REDACTED, JsonFormatter, SpoolHandler
from mlobs.testing import capture_logs, recording

# Secrets that only the key names them as such: the values look harmless on their own.
KEYED_SECRETS = {
    "password": "plainpw-111",
    "api_key": "plainkey-222",
    "token": "plaintok-333",
    "Authorization": "plainauth-444",
    "secret": "plainsecret-555",
}
# Credentials recognisable by their shape, wherever they appear: (text, the part that must go).
SHAPED_SECRETS = [
    ("Bearer abcdefghijk12345", "abcdefghijk12345"),
    (
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyMSJ9.c2lnbmF0dXJlLXBhcnQ",
        "eyJzdWIiOiJ1c2VyMSJ9",
    ),
    ("AKIAABCDEFGHIJKLMNOP", "AKIAABCDEFGHIJKLMNOP"),
    ("ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", "a1B2c3D4e5F6g7H8i9J0"),
    ("sk-proj1234567890abcdefXYZ", "proj1234567890abcdefXYZ"),
    ("postgres://alice:dbpass777@db.internal:5432/train", "dbpass777"),
    ("password=hunter2", "hunter2"),
]
HARMLESS = {"tokens_per_second": 1234.5, "max_tokens": 512, "author": "alice", "tokenizer": "bpe"}


@pytest.fixture(autouse=True)
def _no_git(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOBS_GIT", "0")  # conftest's isolation does the rest


@pytest.fixture
def user_log() -> Iterator[logging.Logger]:
    logger = logging.getLogger("trainer")
    logger.setLevel(logging.DEBUG)
    yield logger
    logger.setLevel(logging.NOTSET)


def _serialized(sink: InMemoryExporter) -> str:
    records = [r.to_json_dict() for r in sink.records]
    runs = [dataclasses.asdict(info) for info in sink.runs.values()]
    return json.dumps([records, runs], default=str)


def _step_span(sink: InMemoryExporter, name: str) -> dict[str, Any]:
    (span,) = [s for s in sink.spans(name) if s.attrs["span_kind"] == "step"]
    return span.attrs


def test_log_inside_run_epoch_step_carries_context(
    tmp_path: Path, user_log: logging.Logger
) -> None:
    with recording(dir=tmp_path) as sink, mlobs.run("ctx") as run:
        mlobs.log(loss=1.0, step=7)
        with mlobs.epoch(3), mlobs.step("forward"):
            user_log.warning("inside forward")
    (rec,) = [r for r in sink.logs() if r.attrs.get("message") == "inside forward"]
    step = _step_span(sink, "forward")
    assert rec.name == "trainer"
    assert rec.value == logging.WARNING and rec.attrs["level"] == "WARNING"
    assert rec.run_id == run.run_id
    assert (rec.epoch, rec.step, rec.attrs["rank"]) == (3, 7, 0)
    assert rec.attrs["trace_id"] == step["trace_id"]
    assert rec.attrs["span_id"] == step["span_id"]  # the innermost span, not the epoch's


def test_log_between_spans_carries_the_enclosing_span(
    tmp_path: Path, user_log: logging.Logger
) -> None:
    with recording(dir=tmp_path) as sink, mlobs.run("ctx"):
        with mlobs.epoch(0):
            user_log.warning("in epoch")
        user_log.warning("in run")
    by_message = {r.attrs["message"]: r for r in sink.logs()}
    (epoch_span,) = [s for s in sink.spans() if s.attrs["span_kind"] == "epoch"]
    (run_span,) = [s for s in sink.spans() if s.attrs["span_kind"] == "run"]
    assert by_message["in epoch"].attrs["span_id"] == epoch_span.attrs["span_id"]
    assert by_message["in epoch"].epoch == 0
    assert by_message["in run"].attrs["span_id"] == run_span.attrs["span_id"]
    assert by_message["in run"].epoch is None


def test_json_formatter_writes_one_json_line_per_record(
    tmp_path: Path, user_log: logging.Logger
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    user_log.addHandler(handler)
    try:
        with recording(dir=tmp_path) as sink, mlobs.run("fmt") as run:
            mlobs.log(loss=1.0, step=4)
            with mlobs.epoch(1), mlobs.step("eval"):
                user_log.info("first line\nsecond line", extra={"batch": 9})
                try:
                    raise KeyError("missing column")
                except KeyError:
                    user_log.exception("lookup failed")
    finally:
        user_log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    events = [json.loads(line) for line in lines]
    step = _step_span(sink, "eval")
    for event in events:
        assert event["run_id"] == run.run_id
        assert (event["epoch"], event["step"], event["rank"]) == (1, 4, 0)
        assert (event["trace_id"], event["span_id"]) == (step["trace_id"], step["span_id"])
        assert event["logger"] == "trainer"
    assert events[0]["message"] == "first line\nsecond line"
    assert events[0]["batch"] == 9 and events[0]["level"] == "INFO"
    assert events[1]["exception_type"] == "KeyError" and "missing column" in events[1]["exception"]


def test_secrets_never_reach_the_sink_or_the_formatter(
    tmp_path: Path, user_log: logging.Logger
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    user_log.addHandler(handler)
    sentence = "connecting with " + " and ".join(text for text, _ in SHAPED_SECRETS) + " now"
    try:
        with recording(dir=tmp_path) as sink, mlobs.run("redact"):
            user_log.warning(sentence, extra={**KEYED_SECRETS, **HARMLESS})
            user_log.warning("nested", extra={"db": {"password": "nestedpw-666", "host": "h1"}})
            try:
                raise ConnectionError("refused: password=hunter2 for alice")
            except ConnectionError:
                user_log.exception("failed with %s", "Bearer abcdefghijk12345")
    finally:
        user_log.removeHandler(handler)
    secrets = [*KEYED_SECRETS.values(), "nestedpw-666"] + [part for _, part in SHAPED_SECRETS]
    for output in (_serialized(sink), stream.getvalue()):
        leaked = [s for s in secrets if s in output]
        assert not leaked, f"secrets leaked: {leaked}"
    formatted = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(formatted) == len(sink.logs()) == 3
    for event in [r.attrs for r in sink.logs()] + formatted:
        if event["message"].startswith("connecting"):
            for key in KEYED_SECRETS:
                assert event[key] == REDACTED
            for key, value in HARMLESS.items():
                assert event[key] == value
            # Only the credential is cut out: the rest of the sentence stays readable.
            assert "db.internal" in event["message"] and event["message"].endswith(" now")
        elif event["message"] == "nested":
            assert event["db"] == {"password": REDACTED, "host": "h1"}


def test_run_params_and_tags_are_redacted(tmp_path: Path) -> None:
    params = {"lr": 0.01, "api_key": "plainkey-222", **HARMLESS}
    tags = {"db": "postgres://alice:dbpass777@db.internal/x", "token": "plaintok-333"}
    with recording(dir=tmp_path) as sink, mlobs.run("p", params=params, tags=tags) as run:
        pass
    output = _serialized(sink)
    for secret in ("plainkey-222", "dbpass777", "plaintok-333"):
        assert secret not in output
    info = sink.runs[run.run_id]
    assert info.params["api_key"] == REDACTED and info.params["lr"] == 0.01
    assert {k: info.params[k] for k in HARMLESS} == HARMLESS
    assert info.tags["token"] == REDACTED
    assert "db.internal" in info.tags["db"]


def test_exception_records_carry_type_and_traceback(
    tmp_path: Path, user_log: logging.Logger
) -> None:
    def load_shard() -> None:
        raise ValueError("shard 3 is corrupt")

    with recording(dir=tmp_path) as sink, mlobs.run("exc"):
        try:
            load_shard()
        except ValueError:
            user_log.exception("loading failed")
    (rec,) = [r for r in sink.logs() if r.attrs["message"] == "loading failed"]
    assert rec.value == logging.ERROR
    assert rec.attrs["exception_type"] == "ValueError"
    text = rec.attrs["exception"]
    assert text.startswith("Traceback") and "load_shard" in text
    assert "ValueError: shard 3 is corrupt" in text


def test_mlobs_own_loggers_are_not_fed_back(tmp_path: Path) -> None:
    with recording(dir=tmp_path) as sink, mlobs.run("loop"):
        logging.getLogger("mlobs").warning("internal one")
        logging.getLogger("mlobs.spool").warning("internal two")
        logging.getLogger("mlobsfan").warning("a user logger with a similar name")
    names = [r.name for r in sink.logs()]
    assert names == ["mlobsfan"]


def test_root_without_handlers_still_prints_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], user_log: logging.Logger
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()  # as in a script that never configured logging
    try:
        with recording(dir=tmp_path) as sink:
            assert any(isinstance(h, SpoolHandler) for h in root.handlers)
            user_log.warning("disk almost full")
            user_log.info("quiet detail")
        assert root.handlers == []  # shutdown takes away what mlobs added
    finally:
        root.handlers[:] = saved
    err = capsys.readouterr().err
    assert err.count("disk almost full") == 1
    assert "quiet detail" not in err  # lastResort prints warnings and above only, as before
    assert [r.attrs["message"] for r in sink.logs()] == ["disk almost full", "quiet detail"]


def test_capture_logs_collects_structured_redacted_events(
    tmp_path: Path, user_log: logging.Logger
) -> None:
    with capture_logs("trainer", level=logging.INFO) as events:
        user_log.debug("below the capture level")
        user_log.info("loss %.1f", 0.5, extra={"password": "plainpw-111", "batch": 2})
    assert user_log.level == logging.DEBUG  # capture_logs restored the level it changed
    assert runtime.current() is None  # capturing alone starts no pipeline
    (event,) = events
    assert event["message"] == "loss 0.5" and event["level"] == "INFO"
    assert event["logger"] == "trainer" and event["batch"] == 2
    assert event["password"] == REDACTED
    assert "run_id" not in event

    with recording(dir=tmp_path), mlobs.run("cap") as run, capture_logs("trainer") as inside:
        user_log.debug("inside run")
    assert [e["message"] for e in inside] == ["inside run"]
    assert inside[0]["run_id"] == run.run_id
