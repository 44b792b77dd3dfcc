"""``mlobs demo``: a small but real training run, so that the CLI has something true to show.

Softmax regression trained by mini-batch SGD on a synthetic three-class dataset, with numpy only
(the ``demo`` extra). It exercises every kind of record: a run with lineage, params and tags;
epochs with throughput; train and validation metrics; pipeline steps, one of which fails once
with a transient error and is retried; and log lines, one of them carrying a (fake) secret that
the spool handler redacts. It takes well under a second per epoch on a small CPU. The model is
then served (see :mod:`mlobs.demo_serving`): requests, latency and errors, drift of the incoming
data against the training data's profile, and quality once the ground truth arrives.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

try:
    import numpy as np
    from numpy.typing import NDArray
except ModuleNotFoundError as exc:  # numpy is an extra; say which one instead of a traceback
    raise ModuleNotFoundError(
        "the mlobs demo needs numpy: pip install 'mlobs[demo]'", name="numpy"
    ) from exc

import mlobs
import mlobs.drift
from mlobs.demo_serving import ServingResult, feature_names, serve
from mlobs.logs.redact import REDACTED
from mlobs.quality import classification_quality, log_quality, regression_quality
from mlobs.record.types import Kind
from mlobs.spool.catalog import Catalog

log = logging.getLogger("demo.train")  # loggers named mlobs.* are mlobs' own and not spooled

CLASSES = 3
FEATURES = 8
SAMPLES = 3000
FAKE_API_KEY = "sk-demo-4f9c2a7b1e8d6053"


FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass
class Data:
    x_train: FloatArray
    y_train: IntArray
    x_val: FloatArray
    y_val: IntArray
    x_test: FloatArray
    y_test: IntArray
    mean: FloatArray
    std: FloatArray


@dataclass
class DemoResult:
    run_id: str
    run_name: str
    model_path: Path
    directory: Path
    status: str = "unknown"
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    recorded: dict[str, int] = field(default_factory=dict)
    """Records of the run in the spool, by kind (``gauge``, ``log``, ``span``, ``event``)."""
    redacted_logs: int = 0
    spool_files: int = 0
    serving: ServingResult = field(default_factory=ServingResult)


class _FlakyStore:
    """Pretends to be a dataset server that resets the first connection: a transient error."""

    def __init__(self) -> None:
        self.calls = 0
        self.centers = np.zeros((CLASSES, FEATURES))

    def fetch(self, rng: np.random.Generator) -> tuple[FloatArray, IntArray]:
        self.calls += 1
        log.info("connecting to the dataset store with api_key=%s", FAKE_API_KEY)
        if self.calls == 1:
            log.warning("dataset store reset the connection; the step will be retried")
            raise ConnectionResetError("dataset store reset the connection (transient)")
        self.centers = rng.normal(0.0, 2.2, size=(CLASSES, FEATURES))
        return self.draw(rng, SAMPLES)

    def draw(self, rng: np.random.Generator, n: int) -> tuple[FloatArray, IntArray]:
        """``n`` rows from the store's distribution (for serving, after training)."""
        y = rng.integers(0, CLASSES, size=n)
        x = self.centers[y] + rng.normal(0.0, 1.6, size=(n, FEATURES))
        return x, y


def _softmax(z: FloatArray) -> FloatArray:
    z = z - z.max(axis=1, keepdims=True)
    e: FloatArray = np.exp(z)
    out: FloatArray = e / e.sum(axis=1, keepdims=True)
    return out


def _loss_accuracy(w: FloatArray, b: FloatArray, x: FloatArray, y: IntArray) -> tuple[float, float]:
    p = _softmax(x @ w + b)
    loss = -np.log(p[np.arange(len(y)), y] + 1e-12).mean()
    return float(loss), float((p.argmax(axis=1) == y).mean())


def train_model(epochs: int, directory: Path, seed: int = 7) -> DemoResult:
    """Run the demo pipeline inside one mlobs run and return where it went."""
    rng = np.random.default_rng(seed)
    store = _FlakyStore()
    lr, batch_size, l2 = 0.5, 64, 1e-4

    @mlobs.step("load_data", retries=2)
    def load_data() -> tuple[FloatArray, IntArray]:
        return store.fetch(rng)

    @mlobs.step("preprocess")
    def preprocess(x: FloatArray, y: IntArray) -> Data:
        order = rng.permutation(len(y))
        x, y = x[order], y[order]
        n_train, n_val = int(0.7 * len(y)), int(0.15 * len(y))
        mean, std = x[:n_train].mean(axis=0), x[:n_train].std(axis=0) + 1e-9
        x = (x - mean) / std
        cut = n_train + n_val
        return Data(
            x[:n_train], y[:n_train], x[n_train:cut], y[n_train:cut], x[cut:], y[cut:], mean, std
        )

    @mlobs.step("train")
    def train(data: Data) -> tuple[FloatArray, FloatArray]:
        w, b = np.zeros((FEATURES, CLASSES)), np.zeros(CLASSES)
        n, global_step = len(data.y_train), 0
        for epoch in range(epochs):
            rate = lr / (1 + 0.3 * epoch)
            with mlobs.epoch(epoch, samples=n):
                with mlobs.step("train_epoch"):
                    order = rng.permutation(n)
                    for start in range(0, n, batch_size):
                        idx = order[start : start + batch_size]
                        xb, yb = data.x_train[idx], data.y_train[idx]
                        p = _softmax(xb @ w + b)
                        p[np.arange(len(yb)), yb] -= 1.0
                        w -= rate * (xb.T @ p / len(yb) + l2 * w)
                        b -= rate * p.mean(axis=0)
                        global_step += 1
                with mlobs.step("validate"):
                    train_loss, train_acc = _loss_accuracy(w, b, data.x_train, data.y_train)
                    val_loss, val_acc = _loss_accuracy(w, b, data.x_val, data.y_val)
                mlobs.log(loss=train_loss, accuracy=train_acc, split="train", step=global_step)
                mlobs.log(loss=val_loss, accuracy=val_acc, split="val", step=global_step)
                mlobs.log(learning_rate=rate, step=global_step)
                log.info(
                    "epoch %d: train loss %.4f acc %.3f, val loss %.4f acc %.3f",
                    epoch,
                    train_loss,
                    train_acc,
                    val_loss,
                    val_acc,
                )
        return w, b

    @mlobs.step("evaluate")
    def evaluate(w: FloatArray, b: FloatArray, data: Data) -> float:
        loss, acc = _loss_accuracy(w, b, data.x_test, data.y_test)
        mlobs.log(loss=loss, accuracy=acc, split="test")
        scores = _softmax(data.x_test @ w + b)
        report = classification_quality(data.y_test, scores.argmax(axis=1), y_score=scores)
        log_quality(report, labels={"split": "test"})
        # a second, tiny model for the regression KPIs: feature 0 from the others, least squares
        ones = np.ones((len(data.y_train), 1))
        coef, *_ = np.linalg.lstsq(np.hstack([data.x_train[:, 1:], ones]), data.x_train[:, 0])
        test_ones = np.ones((len(data.y_test), 1))
        estimate = np.hstack([data.x_test[:, 1:], test_ones]) @ coef
        regression = regression_quality(data.x_test[:, 0], estimate)
        log_quality(regression, labels={"split": "test", "model": "f0-regressor"})
        log.info("test accuracy %.3f", acc)
        return acc

    @mlobs.step("save")
    def save(w: FloatArray, b: FloatArray, run_id: str) -> Path:
        path = directory / "demo-artifacts" / f"model-{run_id[:8]}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, w=w, b=b)
        log.info("saved the model to %s", path)
        return path

    with mlobs.run(
        name="demo-softmax",
        model=("softmax-regression", "1.0"),
        dataset=("synthetic-blobs", f"v1-seed{seed}"),
        params={
            "learning_rate": lr,
            "batch_size": batch_size,
            "l2": l2,
            "epochs": epochs,
            "seed": seed,
            "features": FEATURES,
            "classes": CLASSES,
        },
        tags={"purpose": "demo", "store_api_key": FAKE_API_KEY},
    ) as run:
        x, y = load_data()
        data = preprocess(x, y)
        # what serving will be compared with: stored with the run
        reference = mlobs.drift.profile(
            dict(zip(feature_names(FEATURES), data.x_train.T, strict=True))
        )
        w, b = train(data)
        evaluate(w, b, data)
        model_path = save(w, b, run.run_id)
    result = DemoResult(run.run_id, run.name, model_path, directory)
    x_new, y_new = store.draw(rng, 20_000)  # what the served model will see
    with mlobs.run(name="demo-serving", model=("softmax-regression", "1.0")):
        result.serving = serve(
            lambda rows: np.asarray((rows @ w + b).argmax(axis=1)),
            reference,
            (x_new - data.mean) / data.std,
            y_new,
            reference_predictions=(data.x_train @ w + b).argmax(axis=1),
        )
    return result


def run_demo(epochs: int = 8, directory: str | Path = ".mlobs") -> DemoResult:
    """Configure mlobs to spool into ``directory``, train, shut down, and read the run back."""
    directory = Path(directory)
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.INFO)  # INFO records must reach mlobs' spool handler on the root
    mlobs.configure(dir=str(directory))
    started = time.perf_counter()
    try:
        result = train_model(epochs, directory)
    finally:
        mlobs.shutdown()
        root.setLevel(old_level)
    result.seconds = time.perf_counter() - started
    with Catalog(directory) as catalog:
        info = catalog.find_run(result.run_id)
        result.status = info.status
        result.metrics = catalog.last_metrics([info.run_id])[info.run_id]
        records = catalog.records(info.run_id)
        result.spool_files = len(catalog.files())
    for record in records:
        kind = record.kind.name.lower()
        result.recorded[kind] = result.recorded.get(kind, 0) + 1
        if record.kind == Kind.LOG and REDACTED in str(record.attrs.get("message", "")):
            result.redacted_logs += 1
    return result


def print_summary(result: DemoResult, cli_prefix: str = "mlobs") -> None:
    """What was made and what to try next."""
    from rich.console import Console
    from rich.text import Text

    out = Console(highlight=False)
    style = "green" if result.status == "finished" else "red"
    out.print(
        Text.assemble(
            ("demo run ", "bold"),
            (result.run_name, "bold"),
            " ",
            (result.status, style),
            f" in {result.seconds:.1f}s",
            f"  id {result.run_id}",
        )
    )
    counts = result.recorded
    out.print(
        Text(
            f"spool:  {result.directory.resolve()} ({result.spool_files} SQLite file(s)): "
            f"{counts.get('gauge', 0)} metric points, {counts.get('log', 0)} log records "
            f"({result.redacted_logs} with a secret redacted), {counts.get('span', 0)} spans, "
            f"{counts.get('event', 0)} lifecycle events"
        )
    )
    out.print(Text("sinks:  none configured, so everything stays in the spool (see the README)"))
    out.print(Text(f"model:  {result.model_path}"))
    served = result.serving
    accuracy = "n/a" if served.last_accuracy is None else f"{served.last_accuracy:.3f}"
    drifted = ", ".join(served.drifted_features) or "none"
    out.print(
        Text(
            f"served: {served.requests} requests ({served.errors} errors) in run demo-serving; "
            f"drift in {served.drifted_windows} of {served.drift_windows} windows "
            f"(features: {drifted}); {served.quality_windows} quality windows, last accuracy "
            f"{accuracy}"
        )
    )
    for i, split in enumerate(("train", "val", "test")):
        values = {
            k.split("/", 1)[1]: v
            for k, v in result.metrics.items()
            if k in (f"{split}/loss", f"{split}/accuracy")
        }
        label = "final:  " if i == 0 else " " * 8
        out.print(
            Text(
                f"{label}{split:<6}"
                + "  ".join(f"{name}={value:.4g}" for name, value in sorted(values.items()))
            )
        )
    out.print(Text("\nnext, try:", style="bold"))
    short = result.run_id[:8]
    for command in (
        "runs",
        f"show {short}",
        f"tail {short}",
        f"export {short} --format csv",
        "doctor",
    ):
        out.print(Text(f"  {cli_prefix} {command}", style="cyan"))


def main(epochs: int = 8, directory: str | Path = ".mlobs", cli_prefix: str = "mlobs") -> int:
    """Train, print the summary; 0 when the run finished."""
    result = run_demo(epochs, directory)
    print_summary(result, cli_prefix)
    return 0 if result.status == "finished" else 1


if __name__ == "__main__":
    raise SystemExit(main())
