"""The thesis grid: presets, the per-cell job runner, tables beside the thesis numbers, plots and report."""

from .preset import Cell, Preset, load_preset
from .reproduce import ReproduceSummary, reproduce
from .runner import read_ledger, run_grid
from .tables import load_reference, write_tables

__all__ = [
    "Cell",
    "Preset",
    "ReproduceSummary",
    "load_preset",
    "read_ledger",
    "reproduce",
    "run_grid",
    "load_reference",
    "write_tables",
]
