"""Feed the same weights and inputs to the Julia and the PyTorch engine and tabulate the differences.

    python examples/04_crosscheck_julia_vs_pytorch.py --quick

Bounds, the worst-case loss and its gradients, and the weights after three Adam
steps, in float64, each against its tolerance (tests/test_julia_crosscheck.py
holds the same checks). Where Julia is missing, --quick prints one line saying
what is missing and exits 0.
"""

import argparse
import sys

from approp import julia  # juliacall before torch: see examples/03

julia.preload()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from approp.bounds import interval_bounds, worst_case_loss  # noqa: E402
from approp.config import RadiusConfig  # noqa: E402
from approp.data import Split, batches, load_cifar10  # noqa: E402
from approp.models import CNN4  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="8 images")
parser.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py/")
args = parser.parse_args()

ok, reason = julia.availability()
if not ok:
    print(f"Julia engine unavailable, skipping: {reason.splitlines()[0]}")
    sys.exit(0 if args.quick else 1)

engine = julia.get_engine("cpu")
torch.manual_seed(0)
model = CNN4().double()  # float64: differences are the methods'
params = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
n = 8 if args.quick else 64
x_u8, y_all = load_cifar10(args.data_dir, train=False)
x, y = next(iter(batches(Split(x_u8[:n], y_all[:n]), n)))
x = x.double()  # (n, 3, 32, 32)
eps, radius, kappa = 2 / 255, RadiusConfig("tanh", lam=0.01), 0.5


def rel(a, b):
    """Returns max |a − b| / max |b| (0 where b is all zeros)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


rows = []  # (quantity, relative difference, tolerance)
ref = interval_bounds(model, x, eps, radius)
lo, hi = engine.bounds(params, x.numpy(), eps, radius)
rows += [("lower bounds", rel(lo, ref.lower.detach()), 1e-5), ("upper bounds", rel(hi, ref.upper.detach()), 1e-5)]

model.zero_grad()
loss = (1 - kappa) * worst_case_loss(model, x, y, eps, radius) + kappa * F.cross_entropy(model(x), y)
loss.backward()
jl_loss, grads = engine.loss_and_gradients(params, x.numpy(), y.numpy(), eps, radius, kappa)
rows.append(("training loss", rel(jl_loss, loss.item()), 1e-5))
rows.append(("gradients (worst tensor)", max(rel(grads[k], p.grad) for k, p in model.named_parameters()), 1e-5))

# Three Adam steps: TorchAdam matches PyTorch's Float64 bias correction, so only rounding remains.
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
trainer = engine.trainer(params, radius, optimizer="adam", lr=1e-3, kappa=kappa)
for _ in range(3):
    opt.zero_grad()
    ((1 - kappa) * worst_case_loss(model, x, y, eps, radius) + kappa * F.cross_entropy(model(x), y)).backward()
    opt.step()
    trainer.step(x.numpy(), y.numpy(), eps)
new = trainer.params()
rows.append(("weights after 3 Adam steps", max(rel(new[k], v) for k, v in model.state_dict().items()), 1e-5))

print(f"{'quantity':<28} {'max rel. diff':>14} {'tolerance':>10}  ok")
for name, d, tol in rows:
    print(f"{name:<28} {d:>14.2e} {tol:>10.0e}  {'yes' if d <= tol else 'NO'}")
sys.exit(0 if all(d <= tol for _, d, tol in rows) else 1)
