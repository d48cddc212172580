"""The grid runner: every (ε, algorithm) cell is an independent job of two subprocesses.

    approp train --config CELL/config.toml --out CELL/run     (resumes an interrupted run)
    approp evaluate CELL/run ...                             (resumes per stage)

A finished cell holds CELL/done.json with the fingerprint of its training and
evaluation settings; it is skipped on the next call. Every start and end of a
stage is appended to OUT/ledger.jsonl, the record of what ran. `jobs` runs
several cells at once; where several GPUs exist each concurrent job gets its
own (CUDA_VISIBLE_DEVICES), so `--jobs 8` on an 8-GPU node uses them all, and
`--only PATTERN` selects cells so a scheduler can run one per node.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import CheckpointError, is_final, read_meta
from ..config import ConfigError
from ..rundir import read_jsonl
from .preset import Cell, EvalSpec, Preset

LEDGER = "ledger.jsonl"
DONE = "done.json"
CLI = [sys.executable, "-c", "from approp.cli import main; main()"]


class CellFailed(RuntimeError):
    """A cell's train or evaluate subprocess exited with an error; its log names the cause."""


@dataclass(frozen=True)
class CellOutcome:
    """What happened to one cell: 'skipped' (already done) or 'ran', and the wall time it took."""

    name: str
    status: str
    seconds: float


def cell_dir(out: Path, cell: Cell) -> Path:
    """Returns the folder of one cell inside the output directory."""
    return Path(out) / "cells" / cell.name


def is_trained(out: Path, cell: Cell) -> bool:
    """Returns whether the cell's run holds the checkpoint of its last epoch (its evaluation may still run)."""
    try:
        return is_final(read_meta(cell_dir(out, cell) / "run"), cell.config.train.epochs)
    except (CheckpointError, KeyError, TypeError):
        return False


def is_done(out: Path, cell: Cell, ev: EvalSpec) -> bool:
    """Returns whether the cell finished with exactly these training and evaluation settings."""
    path = cell_dir(out, cell) / DONE
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("fingerprint") == cell.fingerprint(ev)
    except json.JSONDecodeError:
        return False


def _ledger(out: Path, lock: threading.Lock, **entry) -> None:
    with lock, open(Path(out) / LEDGER, "a") as fh:
        fh.write(json.dumps({"time": time.time(), **entry}) + "\n")


def read_ledger(out: Path) -> list[dict]:
    """Returns the ledger's entries in order (empty if none was written)."""
    return read_jsonl(Path(out) / LEDGER)


def _commands(cell: Cell, folder: Path, ev: EvalSpec) -> dict[str, list[str]]:
    """Returns the train and evaluate command lines of a cell."""
    cfg = cell.config
    data = ["--data-dir", cfg.data.data_dir] if cfg.data.data_dir else []
    lams = ",".join(f"{lam:g}" for lam in ev.param_attack)
    return {
        "train": CLI
        + ["train", "--config", str(folder / "config.toml"), "--out", str(folder / "run"), "--quiet", *data],
        "evaluate": CLI
        + [
            "evaluate",
            str(folder / "run"),
            "--n",
            str(ev.n),
            "--param-attack",
            lams,
            "--autoattack" if ev.autoattack else "--no-autoattack",
            *(["--autoattack-n", str(ev.autoattack_n)] if ev.autoattack_n else []),
            *(["--neighbourhood", str(ev.neighbourhood)] if ev.neighbourhood else []),
            *(
                ["--statistical", str(ev.statistical), "--delta", f"{ev.delta:g}", "--p0", f"{ev.p0:g}"]
                if ev.statistical
                else []
            ),
            *(["--certify", ",".join(f"{lam:g}" for lam in ev.certify)] if ev.certify else []),
            *(["--quant", ",".join(ev.quant)] if ev.quant else []),
            "--device",
            cfg.train.device,
            "--quiet",
            *data,
        ],
    }


def run_cell(out: Path, cell: Cell, ev: EvalSpec, gpu: int | None, lock: threading.Lock) -> CellOutcome:
    """Returns the outcome of one cell after training and evaluating it (or skipping it if done)."""
    if is_done(out, cell, ev):
        return CellOutcome(cell.name, "skipped", 0.0)
    folder = cell_dir(out, cell)
    folder.mkdir(parents=True, exist_ok=True)
    cell.config.save(folder / "config.toml")
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    t0 = time.perf_counter()
    for stage, cmd in _commands(cell, folder, ev).items():
        _ledger(out, lock, cell=cell.name, stage=stage, event="start")
        with open(folder / f"{stage}.log", "a") as log:
            code = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        _ledger(out, lock, cell=cell.name, stage=stage, event="end", code=code)
        if code != 0:
            raise CellFailed(f"cell {cell.name}: {stage} exited with {code}; see {folder / (stage + '.log')}")
    (folder / DONE).write_text(json.dumps({"fingerprint": cell.fingerprint(ev), "cell": cell.name}))
    return CellOutcome(cell.name, "ran", time.perf_counter() - t0)


def gpu_slots(jobs: int, device: str) -> list[int | None]:
    """Returns one GPU index per concurrent job (round robin over visible GPUs), or None per job on CPU."""
    if not device.startswith("cuda"):
        return [None] * jobs
    import torch

    count = torch.cuda.device_count()
    return [i % count for i in range(jobs)] if count > 1 else [None] * jobs


def run_grid(preset: Preset, cells: list[Cell], out: Path, jobs: int = 1, on_done=None) -> list[CellOutcome]:
    """Returns the outcome of every cell after running them, `jobs` at a time; raises CellFailed on a failure.

    `on_done(outcome)` is called as each cell finishes (for progress display).
    """
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1; got {jobs}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    slots: queue.Queue = queue.Queue()
    for slot in gpu_slots(jobs, preset.base.train.device if not cells else cells[0].config.train.device):
        slots.put(slot)

    def work(cell: Cell) -> CellOutcome:
        gpu = slots.get()
        try:
            outcome = run_cell(out, cell, preset.eval, gpu, lock)
        finally:
            slots.put(gpu)
        if on_done is not None:
            on_done(outcome)
        return outcome

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(work, cells))
