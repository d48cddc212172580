"""Hardware faults in the deployed int8 weights: random bit errors and the bit-flip attack.

- bits: the int8 storage of a model's weights, random bit flips, the progressive bit-flip attack;
- run: `approp faults` — accuracy against the bit error rate, its statistical certificate, the
  attack's flips to chance and per point, resumably;
- report: its tables (Markdown, CSV) and plot, for one model or several.
"""
