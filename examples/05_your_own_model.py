"""Bound your own torch.nn.Sequential over a parameter box and an input ball.

    python examples/05_your_own_model.py --quick     # 64 images, untrained model: seconds
    python examples/05_your_own_model.py             # 1,000 images, a few clean epochs first

The interval rules cover Conv2d, Linear, ReLU, MaxPool2d, Flatten and approp's
Normalize (approp.bounds.RULES); any other layer is a clear UnsupportedLayerError.
"""

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from approp.bounds import RULES, UnsupportedLayerError, interval_bounds, margin_lower_bounds
from approp.config import RadiusConfig
from approp.data import Split, batches, load_cifar10
from approp.models import Normalize

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="few images, no training")
parser.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py/")
args = parser.parse_args()
torch.manual_seed(0)

# --- 1. your model: any Sequential of supported layers; normalisation inside the model ----
model = nn.Sequential(
    Normalize((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    nn.Conv2d(3, 16, 3, stride=2, padding=1),  # (B, 16, 16, 16)
    nn.ReLU(),
    nn.Conv2d(16, 32, 3, stride=2, padding=1),  # (B, 32, 8, 8)
    nn.ReLU(),
    nn.MaxPool2d(2),  # (B, 32, 4, 4)
    nn.Flatten(),  # (B, 512)
    nn.Linear(512, 64),
    nn.ReLU(),
    nn.Linear(64, 10),  # (B, 10) logits
)
print("supported layers:", ", ".join(sorted(k.__name__ for k in RULES)))

# --- 2. data: CIFAR-10 test images as uint8, batched as float in [0, 1] -------------------
n = 64 if args.quick else 1_000
x_u8, y_all = load_cifar10(args.data_dir, train=False)
test = Split(x_u8[:n], y_all[:n])

# --- 3. (full mode) a few clean epochs so that the margins mean something -----------------
if not args.quick:
    x_tr, y_tr = load_cifar10(args.data_dir, train=True)
    train = Split(x_tr[:10_000], y_tr[:10_000])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(3):
        for xb, yb in batches(train, 128, shuffle=True, generator=torch.Generator().manual_seed(epoch)):
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
model.eval()

# --- 4. bounds over the box B∞(θ, λ|θ|) and the ball B∞(x, ε) ------------------------------
radius = RadiusConfig("abs", lam=0.001)  # r = λ·|θ| on every weight and bias
with torch.no_grad():
    for eps in (0.0, 1 / 255, 2 / 255):
        lo_sum, width, verified = 0.0, 0.0, 0
        for x, y in batches(test, 64):
            b = interval_bounds(model, x, eps, radius)  # (B, 10) each
            m = margin_lower_bounds(model, x, y, eps, radius)  # (B, 10), 0 at j = y
            width += (b.upper - b.lower).mean(1).sum().item()
            verified += int((m.masked_fill(F.one_hot(y, 10).bool(), 1.0) > 0).all(1).sum())
        print(
            f"eps {eps:.5f}, lam {radius.lam}: mean bound width {width / n:.4f}, "
            f"verified share {verified / n:.4f} of {n}"
        )
    # At ε = λ = 0 the bounds collapse to the forward pass.
    x, y = next(iter(batches(test, 64)))
    b0 = interval_bounds(model, x, 0.0, radius, lam=0.0)
    print(f"eps = lam = 0: max |bound - logits| = {(b0.upper - model(x)).abs().max():.2e}")

# --- 5. a layer without an interval rule is refused by name --------------------------------
try:
    interval_bounds(nn.Sequential(nn.Flatten(), nn.Linear(3072, 10), nn.Tanh()), x, 0.01, radius)
except UnsupportedLayerError as err:
    print(f"unsupported layer: {err}")
