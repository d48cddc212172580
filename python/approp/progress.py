"""Progress display for long work (rich), silent when disabled."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress


class Progress:
    """A context manager with an epoch bar and a batch bar; a no-op when enabled=False."""

    def __init__(self, enabled: bool = True, total_epochs: int | None = None) -> None:
        self.enabled = enabled
        self.console = Console(stderr=True)
        self._bar = (
            RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            if enabled
            else None
        )
        self._batch_task = None

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def start_batches(self, epoch: int, steps: int, label: str = "epoch") -> Any:
        """Starts (or resets) the batch bar for one epoch; returns its task handle."""
        if self._bar is None:
            return None
        desc = f"{label} {epoch + 1}"
        if self._batch_task is None:
            self._batch_task = self._bar.add_task(desc, total=steps)
        else:
            self._bar.reset(self._batch_task, total=steps, description=desc)
        return self._batch_task

    def advance(self, task: Any, n: int = 1) -> None:
        if self._bar is not None and task is not None:
            self._bar.advance(task, n)

    def log_epoch(self, row: dict[str, Any]) -> None:
        """Prints one line of epoch metrics above the bars."""
        if self._bar is None:
            return
        shown = ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float) and k != "lr")
        self._bar.console.print(f"epoch {row['epoch'] + 1}: {shown}")


class StageBar(Progress):
    """The shared progress display with one bar per long stage (the evaluation's); does nothing when disabled."""

    def add(self, label: str, total: int, completed: int = 0) -> Any:
        """Returns a task handle for a stage with `total` units (None when disabled)."""
        return None if self._bar is None else self._bar.add_task(label, total=total, completed=completed)
