"""approp: Adversarial Parameter Propagation.

Interval bounds on a network's output over a box of parameters and a ball of
inputs, and training of the midpoint network on the worst case they allow.
The PyTorch engine is always available; the Julia engine (`approp.julia`)
is imported only when asked for.
"""

__version__ = "0.1.0"
