"""Per-point outcomes of an evaluation: which test points each measure counted, kept in eval.json.

    from approp.outcomes import decode, encode
    raw = encode(correct)   # bool mask (n,) -> {"n": 1000, "k": 649, "bits": "a3f0…"}
    correct = decode(raw)   # and back, checked

An accuracy k/n alone allows only the independent interval of a difference between two
models; with both models' outcomes on the same points the difference gets the paired
interval (approp.stats.paired), which is what a comparison on one test set calls for.
A mask is stored as hexadecimal of its bits packed eight to a byte, first point in the
highest bit (1,000 points: 250 characters), beside its n and its count k, so that a mask
that does not belong to its accuracy, or was damaged, is refused rather than read.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class OutcomesError(ValueError):
    """A stored outcome mask is malformed or disagrees with its own count."""


def encode(mask: torch.Tensor) -> dict[str, Any]:
    """Returns {"n", "k", "bits"} of a bool mask (n,) (see the module docstring)."""
    if mask.dim() != 1:
        raise ValueError(f"an outcome mask is one entry per point (n,); got shape {tuple(mask.shape)}")
    flags = mask.detach().to("cpu", torch.bool).numpy()
    return {"n": int(flags.size), "k": int(flags.sum()), "bits": np.packbits(flags).tobytes().hex()}


def decode(raw: Any) -> torch.Tensor:
    """Returns the bool mask (n,) that `encode` stored; OutcomesError where it is malformed."""
    if not isinstance(raw, dict) or not {"n", "k", "bits"} <= raw.keys():
        raise OutcomesError(f"an outcome mask is {{'n', 'k', 'bits'}}; got {str(raw)[:80]!r}")
    n, k, bits = raw["n"], raw["k"], raw["bits"]
    if not isinstance(n, int) or n < 0 or not isinstance(k, int) or not isinstance(bits, str):
        raise OutcomesError(f"outcome mask with n={n!r}, k={k!r}: n and k must be integers, bits a string")
    try:
        packed = np.frombuffer(bytes.fromhex(bits), dtype=np.uint8)
    except ValueError:
        raise OutcomesError("outcome mask: bits is not hexadecimal") from None
    if packed.size != (n + 7) // 8:
        raise OutcomesError(f"outcome mask of n={n} needs {(n + 7) // 8} bytes; got {packed.size}")
    flags = np.unpackbits(packed)
    if flags[n:].any():
        raise OutcomesError("outcome mask: bits set past its n points")
    mask = torch.from_numpy(flags[:n].astype(bool))
    if int(mask.sum()) != k:
        raise OutcomesError(f"outcome mask counts {int(mask.sum())} points, its k says {k}")
    return mask
