"""Live progress of a training stage (DESIGN.md §8).

Each step's named scalars stay on the device until a log boundary; there all steps since the
last boundary are read with one transfer, checked for finiteness (the divergence guard), and
written: rows appended to `train_log.csv`, one line in the job log, a small `progress.json`
that `seemore status` reads, and TensorBoard scalars when `tensorboard` is installed.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from seemore.data.base import atomic_write_bytes

PROGRESS_FILE = "progress.json"
# Wall-clock columns: the only ones of train_log.csv that differ between identical runs.
TIMING_COLUMNS = ("steps_per_s", "eta_s")

Row = dict[str, Any]


class TrainingDiverged(RuntimeError):
    """A loss term became non-finite; the message names the run, step and term."""


def write_csv(rows: list[Row], path: Path) -> None:
    """All of `rows` (columns in order of first appearance), written atomically."""
    columns = csv_columns(rows)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    payload = text.getvalue().encode()
    atomic_write_bytes(path, lambda file: file.write(payload))


def csv_columns(rows: list[Row]) -> list[str]:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _print_line(text: str) -> None:
    # Flushed: under Snakemake/DVC stdout is a log file, which Python would buffer.
    print(text, flush=True)


@dataclass
class _Pending:
    head: Row
    host: Row
    device: dict[str, Tensor]


@dataclass
class ProgressLog:
    """The log of one stage. `history` holds every row so far (earlier stages' and, after a
    resume, the checkpointed ones); rows of this stage follow from `record` + `flush`."""

    label: str
    stage: int
    steps: int
    csv_path: Path
    status_path: Path
    history: list[Row]
    echo: Callable[[str], None] = _print_line
    tensorboard_dir: Path | None = None
    # False on the other ranks of a data-parallel run: they keep the history and the guard but
    # write and print nothing (rank 0 writes the same rows; seemore/distributed.py).
    write_files: bool = True
    _pending: list[_Pending] = field(default_factory=list)
    _columns: list[str] = field(default_factory=list)
    _window: tuple[float, int] | None = None
    _tensorboard: Any = None

    def start(self, done: int) -> None:
        """Begin (or continue, after `done` steps of this stage) writing the log files."""
        self._window = (time.perf_counter(), done)
        if not self.write_files:
            return
        write_csv(self.history, self.csv_path)
        self._columns = csv_columns(self.history)
        if self.tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # an optional extra: `pip install tensorboard`
                self.tensorboard_dir = None
            else:
                self._tensorboard = SummaryWriter(str(self.tensorboard_dir))

    def record(self, head: Row, values: dict[str, Tensor | float]) -> None:
        """Keep one step's scalars; device tensors are not read until `flush`."""
        host = {k: v for k, v in values.items() if not isinstance(v, Tensor)}
        device = {k: v for k, v in values.items() if isinstance(v, Tensor)}
        self._pending.append(_Pending(head, host, device))

    def flush(self, done: int) -> list[Row]:
        """Read the pending steps (one device read), refuse non-finite values, write them out.
        `done` is the number of this stage's steps completed."""
        if not self._pending:
            return []
        tensors = [
            t.detach().reshape(()).to(torch.float64)
            for pending in self._pending
            for t in pending.device.values()
        ]
        values = iter(torch.stack(tensors).tolist() if tensors else [])
        rows = []
        for pending in self._pending:
            read = {k: next(values) for k in pending.device}
            self._check_finite(pending.head["step"], read)
            rows.append({**pending.head, **read, **pending.host})
        self._pending.clear()

        now = time.perf_counter()
        assert self._window is not None, "start() first"
        since, steps_then = self._window
        rate = (done - steps_then) / max(now - since, 1e-9)
        eta = (self.steps - done) / rate if rate > 0 else math.inf
        self._window = (now, done)
        rows[-1].update(steps_per_s=round(rate, 4), eta_s=round(eta, 1))
        if not self.write_files:
            self.history.extend(rows)
            return rows
        self._append(rows)
        self._report(rows, done, rate, eta)
        return rows

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()

    def _check_finite(self, step: int, read: Row) -> None:
        """The guard, on what the step computed (Python values it logs are not checked: e.g.
        LMA's NaN lookahead loss on a task step means 'none')."""
        bad = [k for k, v in read.items() if not math.isfinite(v)]
        if bad:
            # Name a specific term before the total it makes non-finite.
            term = next((k for k in bad if k != "loss"), bad[0])
            raise TrainingDiverged(
                f"{self.label}: training diverged at stage {self.stage} step {step}: "
                f"loss term {term!r} = {read[term]}"
            )

    def _append(self, rows: list[Row]) -> None:
        self.history.extend(rows)
        new = [c for c in csv_columns(rows) if c not in self._columns]
        if new:  # a column not in the header yet: rewrite the file with the wider header
            write_csv(self.history, self.csv_path)
            self._columns = csv_columns(self.history)
            return
        text = io.StringIO()
        csv.DictWriter(text, fieldnames=self._columns, restval="").writerows(rows)
        with open(self.csv_path, "a") as file:
            file.write(text.getvalue())
            file.flush()

    def _report(self, rows: list[Row], done: int, rate: float, eta: float) -> None:
        last = rows[-1]
        terms = " ".join(
            f"{k}={v:.5g}"
            for k, v in last.items()
            if isinstance(v, float) and k not in TIMING_COLUMNS and k != "loss"
        )
        self.echo(
            f"{self.label} stage {self.stage} step {done}/{self.steps} loss={last['loss']:.5g} "
            f"{terms} | {rate:.3g} steps/s, ETA {format_duration(eta)}"
        )
        status = {
            "run": self.label,
            "stage": self.stage,
            "step": done,
            "steps": self.steps,
            "loss": last["loss"],
            "steps_per_s": rate,
            "eta_s": eta if math.isfinite(eta) else None,
            "updated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        payload = json.dumps(status, indent=2).encode()
        atomic_write_bytes(self.status_path, lambda file: file.write(payload))
        if self._tensorboard is not None:
            for row in rows:
                for key, value in row.items():
                    if isinstance(value, float) and math.isfinite(value):
                        self._tensorboard.add_scalar(f"stage{self.stage}/{key}", value, row["step"])
            self._tensorboard.flush()


def read_progress(path: Path) -> Row | None:
    """A stage's live progress (`progress.json`) with its liveness: `running` when its process
    is alive on this host, `stopped` when it is not, `elsewhere` for another host."""
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if status.get("host") != socket.gethostname():
        status["state"] = "elsewhere"
        return status
    try:
        os.kill(int(status["pid"]), 0)
    except ProcessLookupError:
        status["state"] = "stopped"
    except (PermissionError, KeyError, ValueError, TypeError):
        status["state"] = "running"
    else:
        status["state"] = "running"
    return status
