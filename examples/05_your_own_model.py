"""Bound and certify your own network (a Sequential, and a residual one) over a parameter box and an input ball.

    python examples/05_your_own_model.py --quick     # 64 images, untrained models: seconds
    python examples/05_your_own_model.py             # 1,000 images, a few clean epochs first

Any nn.Module that torch.fx can trace is bounded, node by node (approp.bounds.KINDS: Conv2d,
Linear, BatchNorm, ReLU, pooling, flatten/view/reshape, residual `+`, approp's Normalize, …);
any other node is a clear UnsupportedLayerError naming it. A model saved with torch.save goes
through `approp certify FILE` and `approp bounds FILE --lam L` the same way (its class must be
importable where it is loaded: run from the script's folder or put it on PYTHONPATH).
"""

import argparse
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from approp.bounds import KINDS, UnsupportedLayerError, interval_bounds, margin_lower_bounds
from approp.bounds.rules import kind_name
from approp.certify.run import CertifyConfig, certify_source
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
print("supported node kinds:", ", ".join(sorted(kind_name(k) for k in KINDS)))


class SmallResNet(nn.Module):
    """Returns logits (B, 10) of x (B, 3, 32, 32): a stem, one residual block with BatchNorm, a head."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.norm = Normalize((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))
        self.stem = nn.Conv2d(3, c, 3, stride=2, padding=1)  # (B, c, 16, 16)
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.pool = nn.AdaptiveAvgPool2d(4)  # (B, c, 4, 4)
        self.fc = nn.Linear(16 * c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.stem(self.norm(x)))
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(h)))))
        return self.fc(torch.flatten(self.pool(F.relu(out + h)), 1))  # the residual addition: out + h


resnet = SmallResNet()

# --- 2. data: CIFAR-10 test images as uint8, batched as float in [0, 1] -------------------
n = 64 if args.quick else 1_000
x_u8, y_all = load_cifar10(args.data_dir, train=False)
test = Split(x_u8[:n], y_all[:n])

# --- 3. (full mode) a few clean epochs so that the margins mean something -----------------
if not args.quick:
    x_tr, y_tr = load_cifar10(args.data_dir, train=True)
    train = Split(x_tr[:10_000], y_tr[:10_000])
    for net in (model, resnet):
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        for epoch in range(3):
            for xb, yb in batches(train, 128, shuffle=True, generator=torch.Generator().manual_seed(epoch)):
                opt.zero_grad()
                F.cross_entropy(net(xb), yb).backward()
                opt.step()
model.eval()
resnet.eval()  # BatchNorm with its running statistics: a fixed affine map per channel

# --- 4. bounds over the box B∞(θ, λ|θ|) and the ball B∞(x, ε) ------------------------------
radius = RadiusConfig("abs", lam=0.001)  # r = λ·|θ| on every weight and bias
with torch.no_grad():
    for name, net in (("", model), ("residual ", resnet)):
        for eps in (0.0, 1 / 255, 2 / 255):
            width, verified = 0.0, 0
            for x, y in batches(test, 64):
                b = interval_bounds(net, x, eps, radius)  # (B, 10) each
                m = margin_lower_bounds(net, x, y, eps, radius)  # (B, 10), 0 at j = y
                width += (b.upper - b.lower).mean(1).sum().item()
                verified += int((m.masked_fill(F.one_hot(y, 10).bool(), 1.0) > 0).all(1).sum())
            print(
                f"{name}eps {eps:.5f}, lam {radius.lam}: mean bound width {width / n:.4f}, "
                f"verified share {verified / n:.4f} of {n}"
            )
    # At ε = λ = 0 the bounds collapse to the forward pass (of both networks).
    x, y = next(iter(batches(test, 64)))
    gap = max((interval_bounds(net, x, 0.0, radius, lam=0.0).upper - net(x)).abs().max() for net in (model, resnet))
    print(f"eps = lam = 0: max |bound - logits| = {gap:.2e}")

# --- 5. a layer without an interval rule is refused by name --------------------------------
try:
    interval_bounds(nn.Sequential(nn.Flatten(), nn.Linear(3072, 10), nn.Tanh()), x, 0.01, radius)
except UnsupportedLayerError as err:
    print(f"unsupported layer: {err}")

# --- 6. certify the residual network as `approp certify FILE` does --------------------------
# torch.save keeps the class by reference (__main__.SmallResNet here): where the file is read,
# that class must be importable; in this process it is.
with tempfile.TemporaryDirectory() as folder:
    path = Path(folder) / "resnet.pt"
    torch.save(resnet, path)
    cfg = CertifyConfig(lams=(0.0001, 0.001, 0.01), quant=("int8",))
    res = certify_source(path, cfg, n=n, data_dir=args.data_dir)  # writes resnet.pt.certify/certify.md
    curve = ", ".join(f"lam {r['lam']:g}: {r['certified']}" for r in res["curve"])
    unchanged = res["quant"][0]["certified_unchanged"]
    print(f"residual certified of {res['correct']} correct: {curve}; int8 unchanged {unchanged}")
