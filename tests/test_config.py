"""Configuration: argument > ``MLOBS_*`` variable > default, bad values warn and fall back,
unknown ``configure`` arguments are refused, and the README documents every variable."""

from __future__ import annotations

import dataclasses
import re
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

import mlobs
from mlobs import config, runtime
from mlobs.config import SETTINGS, Config, resolve
from mlobs.export.memory import InMemoryExporter
from mlobs.spool.catalog import Catalog
from mlobs.spool.store import spool_files

from .spool_util import metric_values

README = Path(__file__).resolve().parent.parent / "README.md"
_BY_ENV = {s.env: s for s in SETTINGS}


def _env_constants() -> dict[str, str]:
    """Every ``MLOBS_*`` and ``OTEL_*`` constant defined in mlobs/config.py, name to value."""
    return {
        name: value
        for name, value in vars(config).items()
        if name.startswith(("MLOBS_", "OTEL_")) and isinstance(value, str)
    }


# -- precedence -----------------------------------------------------------------------------

PRECEDENCE = [
    # field, variable, argument, its parsed value, variable's text, its parsed value
    ("dir", "MLOBS_DIR", "/arg/spool", "/arg/spool", "/env/spool", "/env/spool"),
    ("flush_interval", "MLOBS_FLUSH_INTERVAL", 0.25, 0.25, "2.5", 2.5),
    ("flush_max_records", "MLOBS_FLUSH_MAX_RECORDS", 50, 50, "700", 700),
    ("strict", "MLOBS_STRICT", False, False, "1", True),
    ("capture_logs", "MLOBS_CAPTURE_LOGS", True, True, "0", False),
    ("log_level", "MLOBS_LOG_LEVEL", "error", "ERROR", "debug", "DEBUG"),
    ("log_all_ranks", "MLOBS_LOG_ALL_RANKS", False, False, "yes", True),
    ("heartbeat_interval", "MLOBS_HEARTBEAT_INTERVAL", 3, 3.0, "0.5", 0.5),
    ("experiment", "MLOBS_EXPERIMENT", "sweep-b", "sweep-b", "sweep-a", "sweep-a"),
    ("run_id", "MLOBS_RUN_ID", "from-arg", "from-arg", "job-42", "job-42"),
    ("git", "MLOBS_GIT", True, True, "off", False),
]


@pytest.mark.parametrize(
    ("field", "env", "arg", "arg_value", "raw", "env_value"),
    PRECEDENCE,
    ids=[p[0] for p in PRECEDENCE],
)
def test_argument_beats_environment_beats_default(
    field: str, env: str, arg: Any, arg_value: Any, raw: str, env_value: Any
) -> None:
    default = getattr(Config(), field)
    assert env_value != default and arg_value != env_value  # each level is visible

    from_default = resolve({}, {})
    assert getattr(from_default, field) == default
    assert from_default.sources[field] == "default"

    from_env = resolve({}, {env: raw})
    assert getattr(from_env, field) == env_value
    assert from_env.sources[field] == "env"

    from_arg = resolve({field: arg}, {env: raw})
    assert getattr(from_arg, field) == arg_value
    assert from_arg.sources[field] == "argument"


def test_resolve_reads_the_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLOBS_FLUSH_INTERVAL", "4")
    monkeypatch.setenv("MLOBS_EXPERIMENT", "from-env")
    cfg = resolve()
    assert (cfg.flush_interval, cfg.experiment) == (4.0, "from-env")
    assert resolve({"experiment": "from-arg"}).experiment == "from-arg"


def test_an_empty_variable_counts_as_unset() -> None:
    cfg = resolve({}, {"MLOBS_FLUSH_INTERVAL": "", "MLOBS_EXPERIMENT": ""})
    assert (cfg.flush_interval, cfg.experiment) == (1.0, "default")
    assert cfg.sources["flush_interval"] == cfg.sources["experiment"] == "default"


def test_a_none_argument_leaves_the_setting_to_the_environment() -> None:
    cfg = resolve({"experiment": None}, {"MLOBS_EXPERIMENT": "env-exp"})
    assert cfg.experiment == "env-exp" and cfg.sources["experiment"] == "env"


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "Yes", "on", " 1 "])
def test_boolean_variables_accept_the_usual_true_spellings(raw: str) -> None:
    assert resolve({}, {"MLOBS_STRICT": raw}).strict is True
    assert resolve({}, {"MLOBS_GIT": raw}).git is True


@pytest.mark.parametrize("raw", ["0", "false", "False", "no", "OFF"])
def test_boolean_variables_accept_the_usual_false_spellings(raw: str) -> None:
    assert resolve({}, {"MLOBS_CAPTURE_LOGS": raw}).capture_logs is False
    assert resolve({}, {"MLOBS_GIT": raw}).git is False


def test_defaults_are_the_documented_ones_and_match_the_config_class() -> None:
    cfg = resolve({}, {})
    assert cfg == Config()  # the dataclass defaults and SETTINGS agree
    fields = {f.name for f in dataclasses.fields(Config)} - {"sources"}
    assert fields == {s.field for s in SETTINGS}
    assert cfg.dir == ".mlobs"
    assert cfg.flush_interval == 1.0
    assert cfg.flush_max_records == 10_000
    assert cfg.spool_max_bytes == 2 * 1024**3
    assert cfg.strict is False and cfg.capture_logs is True and cfg.git is True
    assert cfg.jsonl is None and cfg.run_id is None
    assert set(cfg.sources.values()) == {"default"}


def test_configure_dir_argument_beats_mlobs_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_env, from_arg = tmp_path / "env-spool", tmp_path / "arg-spool"
    monkeypatch.setenv("MLOBS_DIR", str(from_env))
    monkeypatch.setenv("MLOBS_GIT", "0")

    cfg = mlobs.configure(dir=str(from_arg))
    assert cfg.dir == str(from_arg) and cfg.sources["dir"] == "argument"
    with mlobs.run("arg"):
        mlobs.log(where=1.0)
    mlobs.shutdown()
    assert metric_values(from_arg, "where") == [1.0]
    assert spool_files(from_env) == []

    runtime.forget_configuration()  # the next pipeline starts from the environment alone
    with mlobs.run("env"):
        mlobs.log(where=2.0)
    assert runtime.get().config.sources["dir"] == "env"
    mlobs.shutdown()
    assert metric_values(from_env, "where") == [2.0]
    assert metric_values(from_arg, "where") == [1.0]


def test_configure_settings_reach_the_pipeline(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    cfg = mlobs.configure(dir=spool, experiment="ablation", git=False, run_id="fixed-id")
    assert cfg.dir == str(spool)  # a Path argument is accepted
    with mlobs.run("r") as run:
        pass
    mlobs.flush()
    assert run.run_id == "fixed-id"
    with Catalog(spool) as catalog:
        (info,) = catalog.runs()
    assert info.resource["experiment"] == "ablation"
    assert "git_commit" not in info.resource


# -- values that do not parse ---------------------------------------------------------------

BAD_VARIABLES = [
    ("MLOBS_FLUSH_INTERVAL", "abc"),
    ("MLOBS_FLUSH_INTERVAL", "-1"),
    ("MLOBS_FLUSH_INTERVAL", "0"),
    ("MLOBS_FLUSH_INTERVAL", "nan"),
    ("MLOBS_FLUSH_MAX_RECORDS", "1.5"),
    ("MLOBS_FLUSH_MAX_RECORDS", "-10"),
    ("MLOBS_SPOOL_MAX_BYTES", "2GB"),
    ("MLOBS_BUFFER_MAX_RECORDS", "0"),
    ("MLOBS_STRICT", "maybe"),
    ("MLOBS_CAPTURE_LOGS", "2"),
    ("MLOBS_LOG_LEVEL", "loud"),
    ("MLOBS_LOG_ALL_RANKS", "all"),
    ("MLOBS_HEARTBEAT_INTERVAL", "-5"),
    ("MLOBS_GIT", "sometimes"),
]


@pytest.mark.parametrize(("env", "raw"), BAD_VARIABLES, ids=[f"{e}={r}" for e, r in BAD_VARIABLES])
def test_unparsable_variable_warns_and_falls_back_to_the_default(env: str, raw: str) -> None:
    setting = _BY_ENV[env]
    with pytest.warns(RuntimeWarning, match=re.escape(f"{env}={raw!r}")):
        cfg = resolve({}, {env: raw})
    assert getattr(cfg, setting.field) == setting.default
    assert cfg.sources[setting.field] == "default"


def test_unparsable_variables_do_not_disturb_the_others() -> None:
    with pytest.warns(RuntimeWarning) as caught:
        cfg = resolve(
            {}, {"MLOBS_STRICT": "maybe", "MLOBS_FLUSH_INTERVAL": "abc", "MLOBS_EXPERIMENT": "e1"}
        )
    messages = " ".join(str(w.message) for w in caught)
    assert "MLOBS_STRICT" in messages and "MLOBS_FLUSH_INTERVAL" in messages
    assert (cfg.strict, cfg.flush_interval, cfg.experiment) == (False, 1.0, "e1")


def test_unparsable_argument_warns_and_falls_back_to_the_variable() -> None:
    with pytest.warns(RuntimeWarning, match="flush_interval"):
        cfg = resolve({"flush_interval": "soon"}, {"MLOBS_FLUSH_INTERVAL": "2.5"})
    assert cfg.flush_interval == 2.5 and cfg.sources["flush_interval"] == "env"
    with pytest.warns(RuntimeWarning, match="strict"):
        cfg = resolve({"strict": "perhaps"}, {})
    assert cfg.strict is False and cfg.sources["strict"] == "default"


def test_configure_with_bad_values_warns_and_still_records(spool_dir: Path) -> None:
    with pytest.warns(RuntimeWarning) as caught:
        cfg = mlobs.configure(dir=str(spool_dir), flush_interval=-3, heartbeat_interval="x")
    assert len(caught) >= 2
    assert (cfg.flush_interval, cfg.heartbeat_interval) == (1.0, 10.0)
    with mlobs.run("still-works"):
        mlobs.log(loss=0.5)
    assert mlobs.flush()
    assert metric_values(spool_dir, "loss") == [0.5]


def test_bad_strict_variable_warns_when_the_pipeline_starts_lazily(
    spool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOBS_DIR", str(spool_dir))
    monkeypatch.setenv("MLOBS_STRICT", "maybe")
    assert runtime.current() is None
    with pytest.warns(RuntimeWarning, match="MLOBS_STRICT"), mlobs.run("lazy"):
        mlobs.log(text="not a number")  # not strict: rejected and counted, no raise
    assert runtime.get().config.strict is False
    assert mlobs.flush()
    with Catalog(spool_dir) as catalog:
        assert [r.status for r in catalog.runs()] == ["finished"]


# -- unknown configure arguments ------------------------------------------------------------


def test_unknown_configure_argument_raises_type_error_and_changes_nothing(
    spool_dir: Path, tmp_path: Path
) -> None:
    mlobs.configure(dir=str(spool_dir), flush_interval=0.5)
    before = runtime.current()
    assert before is not None
    elsewhere = tmp_path / "elsewhere"
    with pytest.raises(TypeError, match="flush_intervall"):
        mlobs.configure(dir=str(elsewhere), flush_intervall=2)
    assert runtime.current() is before  # the pipeline in force was not touched
    assert before.config.dir == str(spool_dir) and before.config.flush_interval == 0.5
    assert runtime.settings_in_force() == {"dir": str(spool_dir), "flush_interval": 0.5}
    assert not elsewhere.exists()
    with mlobs.run("unaffected"):
        mlobs.log(x=1.0)
    assert mlobs.flush()
    assert metric_values(spool_dir, "x") == [1.0]


def test_unknown_argument_before_anything_started_starts_nothing() -> None:
    with pytest.raises(TypeError, match="colour, verbosity"):
        mlobs.configure(verbosity=3, colour="blue")
    assert runtime.current() is None
    assert runtime.settings_in_force() == {}
    with pytest.raises(TypeError, match="sources"):
        resolve({"sources": {}})  # a field of Config, but not a setting


# -- a non-finite interval ------------------------------------------------------------------


def test_infinite_heartbeat_interval_still_lets_runs_finish(
    spool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOBS_HEARTBEAT_INTERVAL", "inf")
    monkeypatch.setenv("MLOBS_GIT", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rejecting 'inf' with a warning is fine
        mlobs.configure(dir=str(spool_dir))
    with mlobs.run("never-ends") as run:
        mlobs.log(loss=1.0)
    assert mlobs.flush()
    with Catalog(spool_dir) as catalog:
        assert catalog.find_run(run.run_id).status == "finished"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_infinite_flush_interval_keeps_sinks_shipping(spool_dir: Path) -> None:
    memory = InMemoryExporter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mlobs.configure(dir=str(spool_dir), exporters=[memory], flush_interval="inf", git=False)
    with mlobs.run("r"), mlobs.epoch(0):  # the epoch end wakes the flusher, which wakes sinks
        mlobs.log(loss=1.0)
    deadline = time.monotonic() + 2
    while not memory.values("loss") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert memory.values("loss") == [1.0]


# -- the README ------------------------------------------------------------------------------


def _readme_configuration_rows() -> dict[str, list[str]]:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"`(MLOBS|OTEL)_[A-Z_]+`", cells[0]):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_every_variable_in_config_is_documented_in_the_readme() -> None:
    constants = _env_constants()
    assert len(constants) >= 14
    assert all(name == value for name, value in constants.items())
    assert set(constants) == {s.env for s in SETTINGS}  # every constant is a setting
    rows = _readme_configuration_rows()
    assert sorted(set(constants) - set(rows)) == [], "in config.py, missing from README"
    assert sorted(set(rows) - set(constants)) == [], "in README, not in config.py"


def test_readme_configuration_table_matches_the_settings() -> None:
    words = {"unset": None, "random": None, "2 GiB": 2 * 1024**3}
    for env, (argument, default, meaning) in _readme_configuration_rows().items():
        setting = _BY_ENV[env]
        assert argument == f"`{setting.field}`", env
        if default.startswith("`"):
            documented = setting.parse(default.strip("`"))
        else:
            documented = words[default]
        assert documented == setting.default, (env, default, setting.default)
        assert meaning, env


def test_sizes_written_as_whole_floats_are_accepted_and_fractions_are_not() -> None:
    assert resolve({"spool_max_bytes": 1e9}, {}).spool_max_bytes == 1_000_000_000
    assert resolve({}, {"MLOBS_SPOOL_MAX_BYTES": "5e8"}).spool_max_bytes == 500_000_000
    with pytest.warns(RuntimeWarning):
        cfg = resolve({}, {"MLOBS_FLUSH_MAX_RECORDS": "2.5"})
    assert cfg.flush_max_records == 10_000  # the default stays
