"""Evaluate a run the way the thesis does, calling the library directly (not `approp evaluate`).

    python examples/02_evaluate_like_the_thesis.py --quick            # trains a tiny run first: ~a minute
    python examples/02_evaluate_like_the_thesis.py runs/ex01 --n 500  # any run directory

Clean and PGD-20 accuracy, AutoAttack on a few points, verified accuracy, the
adversarial parameter attack over λ (Yu, Wang, Gao 2023) and the neighbourhood
view (networks sampled uniformly and at corners of the parameter box).
"""

import argparse
import math
import tempfile

import torch

from approp.attacks import autoattack, parameter_attack, pgd_accuracy
from approp.checkpoint import load_model
from approp.config import RadiusConfig, RunConfig
from approp.data import Split, load_cifar10, to_float
from approp.metrics import clean_accuracy, verified_accuracy
from approp.neighbourhood import neighbourhood, summarise
from approp.train import fit

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("run", nargs="?", default=None, help="run directory (--quick: trains one)")
parser.add_argument("--quick", action="store_true", help="tiny run, few points, few samples")
parser.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py/")
parser.add_argument("--n", type=int, default=None, help="test points (default 64 quick, 1000)")
parser.add_argument("--device", default="cpu")
args = parser.parse_args()
if args.run is None and not args.quick:
    parser.error("give a run directory, or --quick to train a tiny one first")
torch.manual_seed(0)

# --- 1. the run: given, or (--quick) one clean epoch on 256 images (APP from a random init
#        in one epoch collapses to a constant, which evaluates to nothing worth reading) ----
run_dir = args.run
if run_dir is None:
    run_dir = tempfile.mkdtemp(prefix="approp-ex02-")
    cfg = RunConfig().replace(
        data={"data_dir": args.data_dir, "subset": 256, "test_subset": 64, "batch_size": 64},
        train={"algo": "standard", "eps": 2 / 255, "epochs": 1},
    )
    fit(cfg, run_dir, progress=False)
model, meta = load_model(run_dir, device=args.device)
model.eval()
eps = float(meta["eps"])  # the run's ε, its box: meta["radius"]
radius = RadiusConfig(**meta["radius"])
print(f"run {run_dir}: {meta['algo']} radius {radius.kind} λ={radius.lam}, eps {eps:.5f}")

# --- 2. the test points: the first n of the test split, uint8 (n, 3, 32, 32) on the device -
n = args.n or (64 if args.quick else 1_000)
x_u8, y = load_cifar10(args.data_dir, train=False)
test = Split(x_u8[:n], y[:n]).to(args.device)

# --- 3. clean, PGD-20 and verified accuracy ------------------------------------------------
clean = clean_accuracy(model, test)
pgd = pgd_accuracy(model, test, eps, steps=20)
ver = verified_accuracy(model, test, eps, radius)
print(f"clean acc {clean:.4f}, PGD-20 acc {pgd:.4f}, verified acc {ver:.4f} on {n} points")

# --- 4. AutoAttack (standard, L∞) on a few points: it costs seconds per robust point on a CPU
k = 4 if args.quick else 100
aa = autoattack(model, to_float(test.x[:k]), test.y[:k], eps)
print(
    f"AutoAttack acc {aa.robust_acc:.4f} on {aa.n} points; cascade: "
    + ", ".join(f"{name} {acc:.4f}" for name, acc in aa.cascade.items())
)

# --- 5. the parameter attack: projected gradient ascent in [θ − λ|θ|, θ + λ|θ|] ------------
lams = (0.02, 0.1) if args.quick else (0.02, 0.04, 0.06, 0.08, 0.1)
for row in parameter_attack(model, test, lams=lams, steps=5 if args.quick else 20):
    print(
        f"parameter attack λ={row.lam}: acc {row.acc_before:.4f} -> {row.acc_after:.4f}, "
        f"flipped {row.flipped:.4f} of the correct points"
    )

# --- 6. the neighbourhood: k networks per mode sampled in the run's own box --------------
samples = neighbourhood(model, test, radius, eps, k=2 if args.quick else 10, pgd_steps=5 if args.quick else 20)
for mode, stats in summarise(samples).items():
    c, p = stats["clean_acc"], stats["pgd_acc"]
    print(
        f"neighbourhood {mode}: clean acc mean {c['mean']:.4f} [{c['min']:.4f}, {c['max']:.4f}], "
        f"PGD acc mean {p['mean']:.4f}"
    )
assert all(math.isfinite(s.clean_acc) for s in samples)
