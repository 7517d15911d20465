"""Metrics log (JSONL, and with ``report_to`` TensorBoard event files or an offline wandb run), PNG plots of the
curves, and the progress bar."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from tqdm import tqdm

REPORT_TARGETS = ("tensorboard", "wandb")


def report_targets(report_to: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``report_to`` as transformers takes it: a name, a comma-separated string or a list; "all" is every target,
    "none" (or an empty list) none. Unknown names are an error naming the choices."""
    names = report_to.split(",") if isinstance(report_to, str) else list(report_to)
    names = [n.strip() for n in names if n.strip()]
    out: list[str] = []
    for name in names:
        if name == "all":
            out += [t for t in REPORT_TARGETS if t not in out]
        elif name in REPORT_TARGETS:
            out += [name] if name not in out else []
        elif name != "none":
            raise ValueError(f"report_to must be one of {['none', *REPORT_TARGETS, 'all']} (or a list of them), got "
                             f"{name!r}")
    return tuple(out)


class MetricsLog:
    """Appends one JSON object per line to output_dir/metrics.jsonl; on resume, lines past ``step`` are dropped.

    ``report_to``: "tensorboard" also writes each numeric value as a scalar (its key as the tag, at its row's step)
    to event files in output_dir/tensorboard (a resumed run purges the events past its step); "wandb" logs the rows
    to an offline wandb run in output_dir/wandb (``wandb sync`` uploads it later); "none" writes the JSONL only;
    a list (or "all") does several."""

    def __init__(self, output_dir: str | Path, enabled: bool = True, report_to: str | list[str] = "none",
                 config: dict | None = None):
        self.dir = Path(output_dir)
        self.path = self.dir / "metrics.jsonl"
        self.enabled = enabled
        self.report_to = report_targets(report_to)
        self.config = config or {}
        self._writers: dict = {}
        self._purge_step: int | None = None

    def truncate_after(self, step: int) -> None:
        self._purge_step = step + 1
        if not self.enabled or not self.path.exists():
            return
        keep = [line for line in self.path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in keep))

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        clean = {k: (float(v) if hasattr(v, "item") else v) for k, v in row.items()}
        with self.path.open("a") as fh:
            fh.write(json.dumps(clean) + "\n")
        for target in self.report_to:
            self._report(target, clean)

    def _writer(self, target: str):
        if target not in self._writers:
            if target == "tensorboard":
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError as err:
                    raise ImportError("report_to='tensorboard' needs the tensorboard package: pip install "
                                      "'zrcore[tensorboard]'") from err
                self._writers[target] = SummaryWriter(str(self.dir / "tensorboard"), purge_step=self._purge_step)
            else:
                try:
                    import wandb
                except ImportError as err:
                    raise ImportError("report_to='wandb' needs the wandb package: pip install 'zrcore[wandb]'") from err
                self._writers[target] = wandb.init(project="zrcore", name=self.dir.name, dir=str(self.dir),
                                                   mode="offline", config=self.config, resume="allow",
                                                   id=f"zrcore-{self.dir.name}")
        return self._writers[target]

    def _report(self, target: str, row: dict) -> None:
        step = int(row.get("step", 0))
        scalars = {k: float(v) for k, v in row.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        writer = self._writer(target)
        if target == "tensorboard":
            for key, value in scalars.items():
                writer.add_scalar(key, value, step)
            writer.flush()
        else:
            writer.log(scalars, step=step)

    def close(self) -> None:
        """Flushes and closes the TensorBoard writer and ends the wandb run (the JSONL needs nothing)."""
        for target, writer in self._writers.items():
            (writer.close if target == "tensorboard" else writer.finish)()
        self._writers = {}

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]


def plot_curves(metrics_path: str | Path, out_png: str | Path, keys: list[str] | None = None, title: str = "") -> Path:
    """One panel per metric against the step (NaN and missing values skipped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line]
    if keys is None:
        skip = {"step", "time", "eval/n"}
        keys = sorted({k for r in rows for k, v in r.items() if k not in skip and isinstance(v, (int, float))})
    keys = [k for k in keys if any(isinstance(r.get(k), (int, float)) for r in rows)]
    cols = min(3, max(1, len(keys)))
    nrows = max(1, math.ceil(len(keys) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout(rect=(0, 0, 1, 0.97) if title else None)
    if title:
        fig.suptitle(title)
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


class Progress:
    """tqdm bar over training steps showing rate, ETA and the latest metrics."""

    def __init__(self, total: int, start: int = 0, enabled: bool = True, desc: str = "train"):
        self.bar = tqdm(total=total, initial=start, desc=desc, unit="step", disable=not enabled, dynamic_ncols=True)
        self.t0 = time.time()

    PREFERRED = ("loss/total", "loss", "reward/mean", "loss/ce", "loss/pairwise", "kl", "eval/hpa")

    def update(self, metrics: dict) -> None:
        keys = [k for k in self.PREFERRED if isinstance(metrics.get(k), float)]
        self.bar.set_postfix({k.split("/")[-1] if k.startswith("loss/") else k: f"{metrics[k]:.3g}" for k in keys[:4]},
                             refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
