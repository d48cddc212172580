"""What every command shares: the Typer app, the one-line user errors, option help texts."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

from ..bounds.rules import UnsupportedLayerError
from ..checkpoint import CheckpointError
from ..config import ConfigError
from ..data import DataError
from ..models import ARCHITECTURES
from ..outcomes import OutcomesError
from ..train.loop import TrainingDiverged

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="approp (Adversarial Parameter Propagation) trains and evaluates CNNs that stay correct when "
    "their parameters and their inputs are perturbed: it bounds a network's outputs over a box of "
    "parameters and a ball of inputs (interval and linear bounds), trains on that worst case (APP) or "
    "with AWP, PGD-AT or standard training, attacks and certifies trained networks, and runs the "
    "thesis's CIFAR-10 experiments. Run a command with --help for its options.",
)
err_console = Console(stderr=True)

# Errors that carry a message meant for the user: shown without a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    DataError,
    CheckpointError,
    TrainingDiverged,
    UnsupportedLayerError,
    OutcomesError,
)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turns a known user-facing error into a one-line message and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as err:
            from rich.markup import escape  # messages name sections as [train]: not markup

            err_console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)  # one line, unwrapped
            raise typer.Exit(1) from None

    return wrapper


def overrides(sets: dict[str, dict[str, Any]], **sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Returns the options the user gave (None: not given), the --set values `sets` over them."""
    out = {}
    for name, values in sections.items():
        given = {k: v for k, v in values.items() if v is not None}
        if given:
            out[name] = given
    for name, values in sets.items():
        out[name] = {**out.get(name, {}), **values}
    return out


CLI_PRECISION = "auto"
SET_VAR = "SECTION.KEY=VALUE"
ARCH_HELP = f"architecture of a .safetensors file: {', '.join(ARCHITECTURES)} (optionally :WIDTH)"
SET_HELP = "any config field, e.g. train.ramp=smoothed or data.subset=none (repeatable)"
# --set on a grid or sweep: what it does to the finished cells or variants.
SET_GRID = (
    "; applied over every {0}'s run config, so it changes their fingerprints: "
    "{0}s finished with other settings run again, and a run folder holding another "
    "config refuses it (use a new --out)"
)
SET_TRAIN = SET_HELP + "; precedence: defaults < --config < the options above < --set"
