"""Numeric precision: bf16 autocast around a training step, full precision wherever a number is reported.

Training with `train.precision = "bf16"` runs the loss of every step — the
forward pass, the interval bounds and the attacks inside training (PGD-AT's
and AWP's PGD, AWP's weight ascent) — under
`torch.autocast(device_type, dtype=torch.bfloat16)`: convolutions and matrix
products read bf16 operands and accumulate in fp32, elementwise work follows
its inputs' dtype. The parameters (master weights), their gradients and the
optimiser state stay fp32, and so do checkpoints. No loss scaler: bf16 keeps
fp32's 8-bit exponent, so gradients that fp32 represents do not underflow
(fp16, with 5 exponent bits, needs one; bf16 does not).

Verification never runs in bf16. `full_precision()` switches autocast off
(on the CPU and, where present, CUDA) around everything that certifies or
reports: verified accuracy, linear bounds, the statistical stage, the
parameter attack, every stage of `approp evaluate`, the per-epoch metrics and
the sweep's scores. Those paths therefore compute in the parameters' dtype
(fp32) whatever precision the run trained in, even when called inside an
autocast region.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

LOW_PRECISION = (torch.bfloat16, torch.float16)


def upcast(t: torch.Tensor) -> torch.Tensor:
    """Returns t in fp32 if it is a 16-bit float (e.g. logits under bf16 autocast), else t itself (fp32, fp64)."""
    return t.float() if t.dtype in LOW_PRECISION else t


def training_autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """Returns the context a training step's loss runs in: bf16 autocast for "bf16", a no-op for "fp32"."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    if precision == "fp32":
        return contextlib.nullcontext()
    raise ValueError(f"precision must be 'fp32' or 'bf16'; got {precision!r}")


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """Yields with autocast disabled on the CPU and CUDA; also usable as a function decorator."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast("cpu", enabled=False))
        if torch.cuda.is_available():
            stack.enter_context(torch.autocast("cuda", enabled=False))
        yield


# CPU feature flags (Linux /proc/cpuinfo) of native bf16 arithmetic: x86 AVX-512 BF16 and
# AMX, Arm's BF16 extension. oneDNN also "supports" bf16 on plain AVX-512 by emulation,
# which is no faster than fp32, so its own check does not decide.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def native_bf16(device: torch.device | str, cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Returns whether `device` computes bf16 natively: a CUDA device with bf16, or a CPU whose flags name it."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    flags = {
        word
        for line in text.splitlines()
        if line.startswith(("flags", "Features"))
        for word in line.split(":", 1)[-1].split()
    }
    return bool(flags & NATIVE_BF16_FLAGS)


def resolve_precision(
    precision: str, device: torch.device | str, engine: str = "torch", resumed: str | None = None
) -> str:
    """Returns "fp32" or "bf16" for a run's train.precision.

    "auto" becomes the resumed run's own precision (`resumed`, from its config.toml) if there
    is one, fp32 on the Julia engine, else bf16 where `device` computes it natively, else fp32.
    """
    if precision != "auto":
        return precision
    if resumed is not None and resumed != "auto":
        return resumed
    if engine == "julia":
        return "fp32"
    return "bf16" if native_bf16(device) else "fp32"
