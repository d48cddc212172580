"""Train APP(tanh) from Python, load the run back, and bound a batch of test images.

    python examples/01_train_and_bound.py --quick             # 256 images, one epoch: seconds
    python examples/01_train_and_bound.py --out runs/ex01     # 10,000 images, 5 epochs: minutes

The data folder comes from --data-dir, else $APPROP_DATA, else ./data (as for the CLI).
"""

import argparse
import tempfile

import torch

from approp.bounds import interval_bounds, linear_margin_bounds, margin_lower_bounds
from approp.bounds.verify import verified_by
from approp.checkpoint import load_model
from approp.config import RunConfig
from approp.data import Split, batches, load_cifar10
from approp.train import fit

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="a few hundred images, one epoch")
parser.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py/")
parser.add_argument("--out", default=None, help="run directory (default: a temporary one)")
parser.add_argument("--device", default="cpu")
args = parser.parse_args()
torch.manual_seed(0)

# --- 1. configure: one frozen dataclass per concern; replace() checks every value ---------
eps = 2 / 255  # the input ball B∞(x, ε) in pixel units ([0, 1] images)
cfg = RunConfig().replace(
    data={
        "data_dir": args.data_dir,
        "subset": 256 if args.quick else 10_000,
        "test_subset": 128 if args.quick else 1_000,
        "batch_size": 64 if args.quick else 128,
    },
    radius={"kind": "tanh", "lam": 0.01},  # the parameter box: r(θ) = λ·tanh(s·θ²)/m
    optim={"name": "adam", "lr": 1e-3, "schedule": "cosine"},
    train={
        "algo": "app",
        "eps": eps,
        "kappa": 0.5,
        "epochs": 1 if args.quick else 5,
        "warmup_epochs": 0 if args.quick else 1,
        "ramp_epochs": 1 if args.quick else 2,
        "device": args.device,
    },
)

# --- 2. train: the same loop as `approp train`; it writes config, metrics, checkpoint, report
run_dir = args.out or tempfile.mkdtemp(prefix="approp-ex01-")
result = fit(cfg, run_dir, progress=not args.quick)
last = result.history[-1]
print(
    f"trained {cfg.train.epochs} epoch(s) into {run_dir}: loss {last['loss']:.4f}, "
    f"clean acc {last['clean_acc']:.4f}, verified acc {last['verified_acc']:.4f}"
)

# --- 3. load the run as any user would: midpoint weights + metadata (radius, ε, λ) ----------
model, meta = load_model(run_dir, device=args.device)
model.eval()
x_u8, y = load_cifar10(args.data_dir, train=False)
test = Split(x_u8[:128], y[:128]).to(args.device)
x, y = next(iter(batches(test, 128)))  # x (B, 3, 32, 32) float in [0, 1], y (B,)

# --- 4. interval bounds: sound for every θ̃ in the box and x̃ in the ball --------------------
with torch.no_grad():
    b = interval_bounds(model, x, eps, cfg.radius)  # b.lower, b.upper: (B, 10)
    logits = model(x)  # (B, 10): inside [lower, upper]
    inside = bool(((b.lower <= logits + 1e-5) & (logits <= b.upper + 1e-5)).all())
    print(f"interval bounds: mean width {(b.upper - b.lower).mean():.4f}, clean logits inside: {inside}")

    # --- 5. margins z_y − z_j: intervals vs the linear (CROWN-style) backward pass ---------
    m_ibp = margin_lower_bounds(model, x, y, eps, cfg.radius)  # (B, 10), 0 at j = y
    m_lin = linear_margin_bounds(model, x, y, eps, cfg.radius)  # (B, 10), tighter
    worst = lambda m: m.masked_fill(m == 0, float("inf")).min(1).values.median()  # noqa: E731
    print(f"median smallest margin bound: interval {worst(m_ibp):.4f}, linear {worst(m_lin):.4f}")

    # --- 6. verified accuracy: every margin > 0 for the whole box and ball ------------------
    for method in ("ibp", "best"):
        share = verified_by(model, x, y, eps, cfg.radius, method=method).float().mean()
        print(f"verified share ({method}): {share:.4f} of {len(y)} test images")
