"""Drive the Julia core (APProp, through juliacall) from Python: bounds, loss, gradients, training steps.

    python examples/03_julia_core_from_python.py --quick    # one batch, a few steps
    python examples/03_julia_core_from_python.py            # 1,000 images, one epoch in Julia

Needs Julia 1.10, `pip install 'approp[julia]'` and `approp julia-setup` once. Where
they are missing, --quick prints one line saying what is missing and exits 0.
"""

import argparse
import sys

# juliacall must come before torch in this process (juliacall warns the other order may
# segfault): preload() imports it where the Julia engine can start, and does nothing otherwise.
from approp import julia

julia.preload()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from approp.bounds import interval_bounds  # noqa: E402
from approp.config import RadiusConfig  # noqa: E402
from approp.data import Split, batches, load_cifar10  # noqa: E402
from approp.models import CNN4  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="one batch, a few steps")
parser.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py/")
parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] for the Julia engine")
args = parser.parse_args()

ok, reason = julia.availability()
if not ok:
    print(f"Julia engine unavailable, skipping: {reason.splitlines()[0]}")
    sys.exit(0 if args.quick else 1)

# --- 1. start Julia (once per process) and make a PyTorch CNN4 ---------------------------
engine = julia.get_engine(args.device)  # JuliaEngine: numpy arrays in, numpy arrays out
torch.manual_seed(0)
model = CNN4()
params = {k: v.detach().numpy() for k, v in model.state_dict().items()}  # PyTorch names, layouts
radius, eps = RadiusConfig("tanh", lam=0.01), 2 / 255

# --- 2. a batch of test images: x (B, 3, 32, 32) float32 in [0, 1], y (B,) -----------------
n = 64 if args.quick else 1_000
x_u8, y_all = load_cifar10(args.data_dir, train=False)
x, y = next(iter(batches(Split(x_u8[:n], y_all[:n]), 64)))
xn, yn = x.numpy(), y.numpy()

# --- 3. bounds, worst-case loss and its gradients, computed in Julia ------------------------
lower, upper = engine.bounds(params, xn, eps, radius)  # (B, 10) each
ref = interval_bounds(model, x, eps, radius)
print(f"Julia bounds: mean width {(upper - lower).mean():.4f} (PyTorch {(ref.upper - ref.lower).mean().item():.4f})")
worst = engine.worst_case_loss(params, xn, yn, eps, radius)
loss, grads = engine.loss_and_gradients(params, xn, yn, eps, radius, kappa=0.5)  # {name: array}
gnorm = np.sqrt(sum(float((g**2).sum()) for g in grads.values()))
print(f"Julia worst-case loss {worst:.4f}, training loss {loss:.4f}, gradient norm {gnorm:.4f}")

# --- 4. training steps in Julia: the model and Adam's state stay there between steps --------
trainer = engine.trainer(params, radius, optimizer="adam", lr=1e-3, kappa=0.5)
steps = 3 if args.quick else None
train_batches = batches(Split(x_u8[:n], y_all[:n]), 64, shuffle=True, generator=torch.Generator().manual_seed(0))
for i, (xb, yb) in enumerate(train_batches):
    if steps is not None and i >= steps:
        break
    logs = trainer.step_logs(xb.numpy(), yb.numpy(), eps)
    print(f"Julia step {i + 1}: loss {logs['loss']:.4f}, worst-case loss {logs['worst_loss']:.4f}")

# --- 5. the weights back into the PyTorch model; Adam's step count and moments as arrays ----
model.load_state_dict({k: torch.from_numpy(v) for k, v in trainer.params().items()})
step, state = trainer.optimizer_state()
print(
    f"weights back in PyTorch: clean acc on the batch "
    f"{(model(x).argmax(1) == y).float().mean().item():.4f}; Adam step {step}, "
    f"slots {', '.join(state)}"
)
