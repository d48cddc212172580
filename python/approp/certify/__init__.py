"""Certificates about a trained network's parameter neighbourhood.

- statistical: sequential Clopper–Pearson certificates of p(x) ≤ p₀ over networks drawn
  uniformly from the box (sampling: the draws); statistical_views: the three views of a
  point's worst margin (bound, extreme-value estimate, attack).
"""
