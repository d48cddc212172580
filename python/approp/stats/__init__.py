"""Statistics behind every reported number.

- intervals: Wilson intervals of accuracies and attack rates, Newcombe's interval of a
  difference, the crossed bootstrap of a mean over directions and points;
- paired: Newcombe's interval of a difference between two models scored on the same points;
- binomial: exact one-sided Clopper–Pearson bounds and the δ-spending of sequential tests;
- extreme_value: the reverse Weibull fitted to block maxima (an estimate, not a bound).
"""
