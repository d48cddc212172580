"""Command line: parses options and dispatches to library functions, nothing more.

approp train --algo app --radius tanh --eps 0.0078 --lam 0.01 --epochs 10 --out runs/app
approp bounds runs/app --eps 0.0078

One module per family of commands (training, models, experiments); common holds the app and the
error handling they share.
"""

from __future__ import annotations

import importlib
import sys

from ..julia import preload_for_argv

# With --engine julia, juliacall must be imported before torch (juliacall warns
# that the other order may segfault); the imports below pull torch in.
preload_for_argv(sys.argv[1:])

from .common import USER_ERRORS, app, user_errors  # noqa: E402

# Each module registers its commands on `app` when imported; this order is `approp --help`'s.
for _family in ("training", "models", "experiments"):
    importlib.import_module(f"{__name__}.{_family}")

__all__ = ["USER_ERRORS", "app", "main", "user_errors"]


def main() -> None:  # pragma: no cover - console entry
    app()
