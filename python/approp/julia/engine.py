"""JuliaEngine: APProp's bounds, losses, gradients and training steps behind numpy in/out.

Weights cross as plain arrays keyed by PyTorch state-dict names (the checkpoint
format is the same for both engines); images are (B, 3, 32, 32) in [0, 1],
labels (B,) 0-based. Layout conversion is convert.py's; starting Julia is
_runtime.py's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from . import _runtime
from .convert import (
    PARAM_NAMES,
    as_numpy,
    check_radius,
    images_to_julia,
    labels_to_julia,
    logits_from_julia,
    param_to_julia,
    params_from_julia,
    params_to_julia,
)

Params = Mapping[str, Any]


class JuliaEngine:
    """Returns results of APProp (Julia) computed on numpy arrays; `device` is "cpu" or "cuda[:N]"."""

    # (snapshot of the Flux-layout weights, the Julia model built from them): see _model_for.
    _cache: tuple[list[np.ndarray], Any] | None = None

    def __init__(self, device: str = "cpu") -> None:
        from . import parse_device

        self.jl = _runtime.julia_main()
        # backend: what APProp's api_* take ("cpu"/"cuda"); the index goes to CUDA.device! once.
        self.backend, self.index = parse_device(device)
        self.device = f"{self.backend}:{self.index}"
        if self.backend == "cuda":
            _runtime.load_cuda(self.index)
        self.ap = self.jl.APProp

    # -- conversion helpers -------------------------------------------------
    def _arr(self, arr: np.ndarray) -> Any:
        return _runtime.to_julia_array(arr)

    def model(self, params: Params) -> Any:
        """Returns a new Julia CNN4 (Flux Chain) holding `params`, on the engine's device."""
        arrays = [self._arr(a) for a in params_to_julia(params)]
        return self.ap.api_model(*arrays, backend=self.backend)

    def _model_for(self, arrays: list[np.ndarray]) -> Any:
        """Returns a Julia model of the Flux-layout `arrays`, the last one built while they are equal.

        Evaluation calls bounds and verified on the same weights batch after batch; comparing
        with a snapshot (one pass over the weights) costs less than converting them again and
        rebuilding the Chain, and, unlike a key by id, sees weights changed in place. Only
        read-only calls use it: a trainer changes its model, so it gets a fresh one.
        """
        cached = self._cache
        if cached is not None and all(
            a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
            for a, b in zip(cached[0], arrays, strict=True)
        ):
            return cached[1]
        model = self.ap.api_model(*[self._arr(a) for a in arrays], backend=self.backend)
        self._cache = ([np.array(a, copy=True) for a in arrays], model)
        return model

    def _xy(self, params: Params, x: Any, y: Any | None = None) -> tuple[Any, Any, Any]:
        arrays = params_to_julia(params)
        xj = self._arr(images_to_julia(x, arrays[0].dtype))
        yj = None if y is None else self._arr(labels_to_julia(y))
        return self._model_for(arrays), xj, yj

    def spec(self, radius: Any) -> Any:
        """Returns APProp.RadiusSpec for an approp.config.RadiusConfig (or any object with its fields).

        A kind APProp lacks ("quant") raises UnsupportedByJuliaError here, not a JuliaError in Julia.
        """
        check_radius(radius)
        return self.ap.RadiusSpec(
            str(radius.kind),
            lam=float(radius.lam),
            s=float(radius.s),
            m=float(radius.m),
            perturb_weights=bool(radius.perturb_weights),
            perturb_biases=bool(radius.perturb_biases),
            clamp=None if radius.clamp is None else float(radius.clamp),
        )

    @staticmethod
    def _lam(radius: Any, lam: float | None) -> float:
        return float(radius.lam if lam is None else lam)

    # -- bounds and losses ----------------------------------------------------
    def bounds(
        self, params: Params, x: Any, eps: float, radius: Any, lam: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Returns (lower, upper) logit bounds, each (B, 10), over the box and the ball."""
        model, xj, _ = self._xy(params, x)
        lo, hi = self.ap.api_bounds(
            model,
            xj,
            float(eps),
            self.spec(radius),
            lam=self._lam(radius, lam),
            backend=self.backend,
        )
        return logits_from_julia(lo), logits_from_julia(hi)

    def worst_case_loss(
        self,
        params: Params,
        x: Any,
        y: Any,
        eps: float,
        radius: Any,
        lam: float | None = None,
        margin: bool = False,
    ) -> float:
        """Returns the mean cross-entropy of the worst-case logits."""
        fn = self.ap.api_worst_case_loss
        return float(self._labelled(fn, params, x, y, eps, radius, lam, margin=margin))

    def loss_and_gradients(
        self,
        params: Params,
        x: Any,
        y: Any,
        eps: float,
        radius: Any,
        kappa: float,
        lam: float | None = None,
        margin: bool = False,
    ) -> tuple[float, dict[str, np.ndarray]]:
        """Returns the training loss (1-κ)·L_worst + κ·L_clean and its gradient {name: array}."""
        fn = self.ap.api_loss_and_gradients
        loss, grads = self._labelled(fn, params, x, y, eps, radius, lam, kappa=float(kappa), margin=margin)
        return float(loss), params_from_julia(grads)

    def margin_lower_bounds(
        self, params: Params, x: Any, y: Any, eps: float, radius: Any, lam: float | None = None
    ) -> np.ndarray:
        """Returns lower bounds of z_y - z_j, (B, 10), with 0 at the true class."""
        lo = self._labelled(self.ap.api_margin_lower_bounds, params, x, y, eps, radius, lam)
        return logits_from_julia(lo)

    def verified(
        self, params: Params, x: Any, y: Any, eps: float, radius: Any, lam: float | None = None
    ) -> np.ndarray:
        """Returns a bool mask (B,): True where the whole box and ball classify correctly."""
        mask = self._labelled(self.ap.api_verified, params, x, y, eps, radius, lam)
        return np.array(mask, dtype=bool)

    def _labelled(
        self, fn: Any, params: Params, x: Any, y: Any, eps: float, radius: Any, lam: float | None, **kw: Any
    ) -> Any:
        """Returns fn(model, x, y, eps, spec; lam, backend, kw...) with every argument converted for Julia."""
        model, xj, yj = self._xy(params, x, y)
        return fn(model, xj, yj, float(eps), self.spec(radius), lam=self._lam(radius, lam),
                  backend=self.backend, **kw)

    def verified_accuracy(
        self, params: Params, x: Any, y: Any, eps: float, radius: Any, lam: float | None = None
    ) -> float:
        """Returns the share of points whose margin lower bounds are all > 0."""
        return float(self.verified(params, x, y, eps, radius, lam).mean())

    # -- training -------------------------------------------------------------
    def trainer(
        self,
        params: Params,
        radius: Any,
        *,
        optimizer: str = "sgd",
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        kappa: float = 0.5,
        margin: bool = False,
    ) -> JuliaTrainer:
        """Returns a trainer that keeps the model and optimiser state in Julia between steps."""
        handle = self.ap.api_trainer(
            self.model(params),
            self.spec(radius),
            optimiser=optimizer,
            lr=float(lr),
            momentum=float(momentum),
            weight_decay=float(weight_decay),
            kappa=float(kappa),
            margin=margin,
        )
        return JuliaTrainer(self, handle, radius, dtype=params_to_julia(params)[0].dtype,
                            slots=optimizer_slots(optimizer, momentum))

    def app_step(
        self,
        params: Params,
        x: Any,
        y: Any,
        eps: float,
        radius: Any,
        kappa: float,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        optimizer: str = "sgd",
        lam: float | None = None,
        margin: bool = False,
    ) -> dict[str, np.ndarray]:
        """Returns the parameters after one APP step from a fresh optimiser state (then the clamp)."""
        t = self.trainer(
            params,
            radius,
            optimizer=optimizer,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            kappa=kappa,
            margin=margin,
        )
        t.step(x, y, eps, lam=lam)
        return t.params()


def optimizer_slots(name: str, momentum: float) -> tuple[str, ...]:
    """Returns the names of PyTorch's per-parameter optimiser state that the Julia rule keeps too.

    SGD with momentum keeps "momentum_buffer" (TorchMomentum's velocity), Adam "exp_avg" and
    "exp_avg_sq" (TorchAdam's m and v, plus the step count), SGD without momentum nothing.
    """
    if name == "adam":
        return ("exp_avg", "exp_avg_sq")
    return ("momentum_buffer",) if momentum > 0 else ()


class JuliaTrainer:
    """Returns losses of APP steps run in Julia; the model and optimiser state stay there."""

    def __init__(
        self, engine: JuliaEngine, handle: Any, radius: Any, dtype: np.dtype, slots: tuple[str, ...] = ()
    ) -> None:
        self.engine, self.handle, self.radius, self.dtype = engine, handle, radius, dtype
        self.slots = slots  # optimizer_slots(...): the state that optimizer_state() returns

    def step(
        self,
        x: Any,
        y: Any,
        eps: float,
        lam: float | None = None,
        lr: float | None = None,
        kappa: float | None = None,
    ) -> float:
        """Returns the batch loss after one step; `lam`/`lr`/`kappa` override the trainer's."""
        return self.step_logs(x, y, eps, lam=lam, lr=lr, kappa=kappa)["loss"]

    def step_logs(
        self,
        x: Any,
        y: Any,
        eps: float,
        lam: float | None = None,
        lr: float | None = None,
        kappa: float | None = None,
    ) -> dict[str, float]:
        """Returns {"loss", "worst_loss"[, "clean_loss"]} of one step, the keys PyTorch's APP logs.

        "clean_loss" is absent where κ = 0 left it uncomputed, as in PyTorch.
        """
        e = self.engine
        xj = e._arr(images_to_julia(x, self.dtype))
        yj = e._arr(labels_to_julia(y))
        extra = {} if kappa is None else {"kappa": float(kappa)}
        loss, worst, clean = e.ap.api_step_b(
            self.handle,
            xj,
            yj,
            float(eps),
            lam=e._lam(self.radius, lam),
            lr=None if lr is None else float(lr),
            backend=e.backend,
            **extra,
        )
        logs = {"loss": float(loss), "worst_loss": float(worst)}
        if clean is not None:
            logs["clean_loss"] = float(clean)
        return logs

    def epoch(
        self, batches: Iterable[tuple[Any, Any]], schedule: Callable[[int], tuple[float, float]]
    ) -> float:
        """Returns the mean loss over `batches`; schedule(i) gives batch i's (eps, lam)."""
        losses = []
        for i, (x, y) in enumerate(batches):
            eps, lam = schedule(i)
            losses.append(self.step(as_numpy(x), as_numpy(y), eps, lam))
        if not losses:
            raise ValueError("epoch got no batches")
        return float(np.mean(losses))

    def params(self) -> dict[str, np.ndarray]:
        """Returns the current parameters {PyTorch name: array} in PyTorch layout."""
        return params_from_julia(self.engine.ap.api_parameters(self.handle))

    def optimizer_state(self) -> tuple[int, dict[str, dict[str, np.ndarray]]]:
        """Returns (step, {slot: {PyTorch name: array}}): the optimiser state in PyTorch layout.

        The slots are `self.slots` (e.g. "exp_avg", "exp_avg_sq"); step is Adam's count, else 0.
        """
        arrays, step = self.engine.ap.api_optimiser_state(self.handle)
        arrays, n = list(arrays), len(PARAM_NAMES)
        if len(arrays) != n * len(self.slots):
            raise ValueError(f"Julia returned {len(arrays)} state arrays for slots {self.slots}")
        return int(step), {s: params_from_julia(arrays[i * n:(i + 1) * n]) for i, s in enumerate(self.slots)}

    def load_optimizer_state(self, step: int, state: Mapping[str, Mapping[str, Any]]) -> None:
        """Sets the Julia optimiser state from {slot: {PyTorch name: array}} (what optimizer_state gives)."""
        missing = [s for s in self.slots if s not in state]
        if missing:
            raise KeyError(f"optimiser state lacks {', '.join(missing)}")
        arrays = [
            self.engine._arr(param_to_julia(n, as_numpy(state[s][n]).astype(self.dtype, copy=False)))
            for s in self.slots
            for n in PARAM_NAMES
        ]
        self.engine.ap.api_restore_optimiser_state_b(self.handle, int(step), *arrays)
