"""Array and layout conversion between the PyTorch engine and APProp (numpy only, no Julia).

PyTorch is row-major NCHW; Flux is column-major WHCN. Reversing the axes of a
C-contiguous numpy array gives an F-contiguous view whose numpy index equals
the Julia index, so every conversion here is a transpose:

- images (B, C, H, W) -> (W, H, C, B);
- conv weights (out, in, kH, kW) -> (kW, kH, in, out), used by Flux.CrossCor
  as cross-correlation exactly as PyTorch's Conv2d is: no kernel flip;
- linear weights (out, in) and biases stay as they are: Flux flattens
  (W, H, C) features column-major, index w + W·h + W·H·c, which is PyTorch's
  c·H·W + h·W + w, so the first linear layer needs no permutation;
- logits (K, B) -> (B, K); labels 0-based -> 1-based.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

# PyTorch state-dict names of CNN4's parameters, in the order APProp.cnn4 takes them.
PARAM_NAMES: tuple[str, ...] = tuple(
    f"layers.{k}.{p}" for k in (1, 3, 6, 8, 12, 14) for p in ("weight", "bias")
)


def as_numpy(value: Any) -> np.ndarray:
    """Returns `value` as a numpy array (torch tensors are detached and moved to the CPU)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _reverse_axes(arr: np.ndarray) -> np.ndarray:
    return arr.transpose(tuple(reversed(range(arr.ndim))))


def param_to_julia(name: str, value: Any) -> np.ndarray:
    """Returns the parameter `name` in Flux layout (conv weights reversed, others unchanged)."""
    arr = as_numpy(value)
    if name.endswith(".weight") and arr.ndim == 4:
        return _reverse_axes(arr)
    return arr


def param_from_julia(name: str, value: Any) -> np.ndarray:
    """Returns the Flux-layout parameter `name` in PyTorch layout, as an owned C-contiguous array."""
    arr = np.asarray(value)
    if name.endswith(".weight") and arr.ndim == 4:
        arr = _reverse_axes(arr)
    # A copy even where arr is already C-contiguous (reversed conv weights, vectors): numpy
    # then views Julia memory, which ascontiguousarray would hand back as it is.
    return np.array(arr, order="C", copy=True)


# State-dict entries only a BatchNorm layer has (its running statistics and step count).
BATCHNORM_BUFFERS: tuple[str, ...] = (".running_mean", ".running_var", ".num_batches_tracked")


class UnsupportedByJuliaError(TypeError):
    """A network the Julia engine cannot hold (it has CNN4 without BatchNorm only); names the layers."""


def check_cnn4(params: Mapping[str, Any]) -> None:
    """Raises UnsupportedByJuliaError naming any BatchNorm layer or any entry CNN4 does not have."""
    batchnorm = sorted({n.rsplit(".", 1)[0] for n in params if n.endswith(BATCHNORM_BUFFERS)})
    if batchnorm:
        raise UnsupportedByJuliaError(
            f"the Julia engine has no BatchNorm rule: {', '.join(batchnorm)} "
            f"{'is a BatchNorm layer' if len(batchnorm) == 1 else 'are BatchNorm layers'}; "
            "use the torch engine (arch 'cnn4' only in Julia)"
        )
    extra = [n for n in params if n not in PARAM_NAMES]
    if extra:
        raise UnsupportedByJuliaError(
            f"the Julia engine holds CNN4 only; these entries are not CNN4's: {', '.join(extra)}"
        )


# The radius kinds APProp.RadiusSpec accepts (julia/src/radius.jl); "quant" has a PyTorch rule only.
RADIUS_KINDS: tuple[str, ...] = ("abs", "const", "tanh")


def check_radius(radius: Any) -> None:
    """Raises UnsupportedByJuliaError where `radius` (a RadiusConfig) has a kind APProp has no rule for."""
    if str(radius.kind) not in RADIUS_KINDS:
        raise UnsupportedByJuliaError(
            f"the Julia engine has no radius kind {radius.kind!r} (it has {', '.join(RADIUS_KINDS)}); "
            "use the torch engine"
        )


def params_to_julia(params: Mapping[str, Any]) -> list[np.ndarray]:
    """Returns CNN4's parameters in APProp.cnn4's order and Flux layout; names are PyTorch's.

    A network with BatchNorm or other layers is refused (check_cnn4), never converted in part.
    """
    check_cnn4(params)
    missing = [n for n in PARAM_NAMES if n not in params]
    if missing:
        raise KeyError(f"parameters missing for the Julia engine: {', '.join(missing)}")
    arrays = [param_to_julia(n, params[n]) for n in PARAM_NAMES]
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) != 1:
        raise TypeError(f"parameters must share one dtype; got {sorted(map(str, dtypes))}")
    return arrays


def params_from_julia(values: Any) -> dict[str, np.ndarray]:
    """Returns {PyTorch name: array} from the 12 Flux-layout arrays APProp returns."""
    values = list(values)
    if len(values) != len(PARAM_NAMES):
        raise ValueError(f"expected {len(PARAM_NAMES)} arrays from Julia; got {len(values)}")
    return {n: param_from_julia(n, v) for n, v in zip(PARAM_NAMES, values)}


def images_to_julia(x: Any, dtype: np.dtype | None = None) -> np.ndarray:
    """Returns images (B, C, H, W) as WHCN (W, H, C, B), optionally cast to `dtype`."""
    arr = as_numpy(x)
    if arr.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W); got shape {arr.shape}")
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    return _reverse_axes(arr)


def labels_to_julia(y: Any) -> np.ndarray:
    """Returns 0-based class labels (B,) as 1-based int64 labels."""
    arr = as_numpy(y)
    if arr.ndim != 1:
        raise ValueError(f"labels must be (B,); got shape {arr.shape}")
    return arr.astype(np.int64) + 1


def logits_from_julia(z: Any) -> np.ndarray:
    """Returns a Julia (K, B) matrix as an owned numpy (B, K) array, never a view of Julia's."""
    return np.array(np.asarray(z).T, order="C", copy=True)
