"""Attacks on inputs (PGD, AutoAttack) and on parameters (relative L∞ box)."""

from .autoattack import STANDARD_ATTACKS, AutoAttackResult, CascadeState, autoattack
from .parameter import ParamAttackRow, attack_box, parameter_attack, relative_box
from .pgd import pgd_accuracy, pgd_attack, pgd_correct

__all__ = [
    "STANDARD_ATTACKS",
    "AutoAttackResult",
    "CascadeState",
    "ParamAttackRow",
    "attack_box",
    "autoattack",
    "parameter_attack",
    "pgd_accuracy",
    "pgd_attack",
    "pgd_correct",
    "relative_box",
]
