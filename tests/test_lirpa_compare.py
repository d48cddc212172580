"""approp's bounds against auto_LiRPA's at λ = 0 (no parameter perturbation), in float64.

auto_LiRPA is the independent implementation: its IBP must give approp's interval bounds, and its
CROWN-IBP approp's linear margin bounds on the same specification (the rows e_y − e_j, as approp's
verified decision uses), up to the one rule where they choose differently (max-pooling at ties).
Skipped where auto_LiRPA is not importable; how to make it available: tests/lirpa_glue.py and
docs/results/lirpa/README.md. benchmarks/lirpa_compare.py records the numbers, full CROWN included
(too slow for a test: it bounds every intermediate neuron by a backward pass).

Networks: ResNet-20 (BatchNorm in eval mode with running statistics averaged over 256 random images,
identity and projection shortcuts, global average pooling) and CNN4-BN (BatchNorm2d and 1d, max-pooling).
"""

import pytest
import torch

pytest.importorskip(
    "auto_LiRPA",
    reason="auto_LiRPA is not importable: put its source (github.com/Verified-Intelligence/auto_LiRPA) and "
    "appdirs, tqdm, graphviz on PYTHONPATH (PyPI's 0.3 fails under numpy 2); "
    "see docs/results/lirpa/README.md",
)

from lirpa_glue import (  # noqa: E402  (tests/)
    bounded,
    calibrate,
    default_dtype,
    ibp_logits,
    lirpa_pool_relaxation,
    margins,
)

from approp.bounds import interval_bounds, linear_margin_bounds, linear_rules, margin_lower_bounds  # noqa: E402
from approp.config import ModelConfig, RadiusConfig  # noqa: E402
from approp.models import build_model  # noqa: E402

# auto_LiRPA warns that approp's Normalize constants (1, C, 1, 1) have a batch dimension; IBP and
# CROWN-IBP handle them (the tests check the numbers), only its full CROWN does not (tests/lirpa_glue.py).
pytestmark = pytest.mark.filterwarnings("ignore:Constant operand of node:UserWarning")

# λ = 0: the parameter box has zero width, the only case auto_LiRPA can bound for a conv net.
FLAT = RadiusConfig(kind="abs", lam=0.0)
# Relative to the largest |bound|. Both libraries compute the same float64 midpoint-radius products
# in different orders (auto_LiRPA folds BatchNorm into a scale and shift first; approp computes
# γ/s·(x − μ) + β), so they differ by rounding: measured ≤ 3e-15 of the magnitude on these networks,
# which depth × log₂(fan-in) × 2⁻⁵³ ≈ 20 · 12 · 1.1e-16 ≈ 3e-14 bounds. 1e-12 leaves a factor 30 on
# that, and a real rule difference moves bounds by far more (test_tolerance_separates_rules: > 1e-6).
RTOL = 1e-12
POINTS = 4


def _network(arch: str) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """Returns (float64 model in eval mode with averaged BatchNorm statistics, images (4, 3, 32, 32), labels)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model = calibrate(build_model(ModelConfig(arch=arch, init="ibp")), torch.rand(256, 3, 32, 32, generator=gen))
    x = torch.rand(POINTS, 3, 32, 32, generator=gen, dtype=torch.float64)
    return model.double(), x, torch.arange(POINTS) % 10


@pytest.fixture(scope="module", params=["resnet20", "cnn4_bn"])
def case(request):
    """Returns (arch, model, x, y, auto_LiRPA's BoundedModule of the model)."""
    model, x, y = _network(request.param)
    return request.param, model, x, y, bounded(model, x)


@pytest.mark.parametrize("eps", [1 / 255, 2 / 255])
def test_interval_bounds_equal_auto_lirpa_ibp(case, eps):
    """At λ = 0 approp's interval logit bounds and its margin bounds are auto_LiRPA's IBP, to rounding."""
    arch, model, x, y, module = case
    lower, upper = ibp_logits(module, x, eps)
    ours = interval_bounds(model, x, eps, FLAT)
    scale = max(lower.abs().max(), upper.abs().max())
    assert (ours.lower - lower).abs().max() <= RTOL * scale
    assert (ours.upper - upper).abs().max() <= RTOL * scale
    assert (ours.lower <= model(x)).all() and (model(x) <= ours.upper).all()
    # The margin form: both merge the last linear layer with the specification e_y − e_j.
    theirs = margins(module, x, y, eps, "IBP")
    assert (margin_lower_bounds(model, x, y, eps, FLAT) - theirs).abs().max() <= RTOL * theirs.abs().max()


@pytest.mark.parametrize("eps", [1 / 255, 2 / 255])
def test_linear_bounds_against_crown_ibp(case, eps, monkeypatch):
    """approp's linear margin bounds are auto_LiRPA's CROWN-IBP, up to max-pooling's tie rule; at least as tight here.

    Both relax each ReLU with the chord above and CROWN's adaptive slope below, on interval
    pre-activation bounds, so without max-pooling (ResNet-20) they are equal for every point and
    class. With max-pooling (CNN4-BN) they differ only in the input a window tests for dominance
    (tests/lirpa_glue.lirpa_pool_relaxation): with auto_LiRPA's choice in approp's engine they are
    equal again. On these untrained CNN4-BN points approp's choice is never looser and strictly tighter
    somewhere; that is not a theorem (on the trained CNN4 of docs/results/lirpa it is looser on up to
    a third of the margins), so it is asserted only where it was found to hold.
    """
    arch, model, x, y, module = case
    theirs = margins(module, x, y, eps, "CROWN-IBP")  # (B, K), 0 at j = y
    ours = linear_margin_bounds(model, x, y, eps, FLAT)
    tol = RTOL * theirs.abs().amax(1, keepdim=True)  # per point
    margin = model(x).gather(1, y[:, None]) - model(x)
    assert (ours <= margin + tol).all()  # sound at the centre point
    assert (ours >= theirs - tol).all()
    if arch == "cnn4_bn":
        assert ((ours - theirs) > 1e3 * tol).any()  # the tie rule matters here
        monkeypatch.setattr(linear_rules, "_pool_relaxation", lirpa_pool_relaxation)
        ours = linear_margin_bounds(model, x, y, eps, FLAT)
    assert ((ours - theirs).abs() <= tol).all()


def test_tolerance_separates_rules(case):
    """The tolerance cannot hide a rule difference: auto_LiRPA on the unclipped ball B∞(x, ε) differs by > 1e-6.

    approp clips the ball to [0, 1] (images); the random images have pixels within ε of 0 and 1.
    """
    from auto_LiRPA import BoundedTensor, PerturbationLpNorm

    arch, model, x, y, module = case
    eps = 2 / 255
    with default_dtype(x.dtype):
        unclipped = BoundedTensor(x, PerturbationLpNorm(norm=float("inf"), eps=eps))
        lower, _ = module.compute_bounds(x=(unclipped,), method="IBP")
    ours = interval_bounds(model, x, eps, FLAT)
    assert (ours.lower - lower).abs().max() > 1e-6 * lower.abs().max()
    assert (ours.lower >= lower - RTOL * lower.abs().max()).all()  # the clipped ball is the smaller set
