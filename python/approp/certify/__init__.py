"""Certificates about a trained network's parameter neighbourhood.

- parameter: the certified-λ curve in the relative box [θ − λ|θ|, θ + λ|θ|] and λ* per point;
- quantise: certificates that no round-to-nearest weight quantisation changes a prediction,
  beside PyTorch's really quantised network (deployment grid int8, PyTorch's int8:torch);
- quant_margin: per point the certified fraction of the half-step and the fewest bits certified;
- deploy: a quantiser without torch.ao (both tie rules) and the ONNX graph run in ONNX Runtime;
- sources: the models (run directories, your own traced nn.Module) and points they apply to;
- run: `approp certify` and the evaluate stage, results as JSON and Markdown;
- statistical: sequential Clopper–Pearson certificates of p(x) ≤ p₀ over networks drawn
  uniformly from the box (approp.boxes: the draws); statistical_views: the three views of a
  point's worst margin (bound, extreme-value estimate, attack); statistical_plot: their picture.
"""
