# The specification layer: worst-case logits and loss, margin bounds, verification.

"""
    onehot_mask(y, K, like) -> AbstractMatrix{Bool}

Returns the `(K, B)` mask with `true` at `(y[b], b)`, on the device of `like`.
Labels are 1-based class indices.
"""
function onehot_mask(y::AbstractVector{<:Integer}, K::Integer, like::AbstractArray)
    return ChainRulesCore.ignore_derivatives() do
        # A dense Matrix{Bool}: `.==` would give a BitMatrix, which is not an
        # `Array` (no `_like` method) and which a copy to a CuArray would read
        # element by element.
        labels = collect(y)
        mask = Bool[k == l for k in 1:K, l in labels]
        _like(like, mask)
    end
end

_like(::Array, a::Array) = a
_like(ref::AbstractArray, a::Array) = copyto!(similar(ref, eltype(a), size(a)), a)

"""
    margin_lower_bounds(model, x, y, eps, spec; lam=spec.lam) -> AbstractMatrix

Returns lower bounds of the margins `z_y - z_j`, shape `(K, B)`, with 0 at
`j = y`. The last Dense layer is merged with the specification `e_y - e_j`:
its row difference has center `W_c[y] - W_c[j]` and radius
`W_r[y] + W_r[j]`, bias `b_c[y] - b_c[j]` with radius `b_r[y] + b_r[j]`.
"""
function margin_lower_bounds(
    model::Flux.Chain,
    x,
    y,
    eps::Real,
    spec::RadiusSpec;
    lam = spec.lam,
)
    last = model.layers[end]
    last isa Flux.Dense ||
        throw(ArgumentError("margin bounds need a final Dense layer; got $(typeof(last))"))
    _check_identity(last)
    s = with_lam(spec, lam)
    h = _propagate(Base.front(model.layers), input_ball(x, eps), s) # (H, B)
    W, b = last.weight, last.bias
    Wr, br = param_radius(s, W), param_radius(s, b)
    K, H = size(W)
    B = size(h.c, 2)
    # Row differences for every sample and class: (K, H, B).
    D = reshape(permutedims(W[y, :]), 1, H, B) .- reshape(W, K, H, 1)
    Dr = reshape(permutedims(Wr[y, :]), 1, H, B) .+ reshape(Wr, K, H, 1)
    col(v) = reshape(v, H, 1, B)
    center = reshape(NNlib.batched_mul(D, col(h.c)), K, B)
    rad = NNlib.batched_mul(torch_abs(D), col(h.r)) .+
        NNlib.batched_mul(Dr, col(torch_abs(h.c) .+ h.r))
    center = center .+ reshape(b[y], 1, B) .- b
    rad = reshape(rad, K, B) .+ reshape(br[y], 1, B) .+ br
    own = onehot_mask(y, K, center)
    return ifelse.(own, zero(eltype(center)), center .- rad)
end

"""
    worst_case_logits(model, x, y, eps, spec; lam=spec.lam, margin=false) -> AbstractMatrix

Returns logits `(K, B)` no better for the true class than any network and
input in the box: `z̃_y = lower_y`, `z̃_j = upper_j`. With `margin = true`:
`z̃_j = -lower(z_y - z_j)` and `z̃_y = 0` (tighter bounds).
"""
function worst_case_logits(
    model,
    x,
    y,
    eps::Real,
    spec::RadiusSpec;
    lam = spec.lam,
    margin = false,
)
    margin && return .-margin_lower_bounds(model, x, y, eps, spec; lam = lam)
    z = interval_bounds(model, x, eps, spec; lam = lam)
    own = onehot_mask(y, size(z.c, 1), z.c)
    return ifelse.(own, lower(z), upper(z))
end

"""
    cross_entropy(logits, y) -> Real

Returns the mean cross-entropy of logits `(K, B)` against 1-based labels `y`.
"""
function cross_entropy(logits::AbstractMatrix, y::AbstractVector{<:Integer})
    own = onehot_mask(y, size(logits, 1), logits)
    return Flux.logitcrossentropy(logits, own)
end

"""
    worst_case_loss(model, x, y, eps, spec; lam=spec.lam, margin=false) -> Real

Returns the mean cross-entropy of the worst-case logits, an upper bound on the
loss of every network and input in the box.
"""
function worst_case_loss(
    model,
    x,
    y,
    eps::Real,
    spec::RadiusSpec;
    lam = spec.lam,
    margin = false,
)
    return cross_entropy(
        worst_case_logits(model, x, y, eps, spec; lam = lam, margin = margin),
        y,
    )
end

"""
    training_loss(model, x, y, eps, spec; lam=spec.lam, kappa=0.5, margin=false) -> Real

Returns APP's training loss `(1 - κ)·L_worst + κ·L_clean`, where `L_clean` is
the cross-entropy of the midpoint network's plain forward pass on `x`; see
`training_loss_parts`.
"""
training_loss(args...; kw...) = training_loss_parts(args...; kw...).loss

"""
    training_loss_parts(model, x, y, eps, spec; lam=spec.lam, kappa=0.5, margin=false)
        -> (loss, worst, clean)

Returns the training loss with its two terms, the values PyTorch's APP
strategy logs: `clean` is `nothing` where it is not computed (κ = 0). At
`eps = lam = 0` (warm-up) the box and ball are points, `L_worst = L_clean`
(cross-entropy is shift-invariant, so with `margin` too), and only the
forward pass runs, as in PyTorch's APP strategy: the interval pass would cost
about three forward passes for the same loss and gradient.
"""
function training_loss_parts(
    model,
    x,
    y,
    eps::Real,
    spec::RadiusSpec;
    lam = spec.lam,
    kappa::Real = 0.5,
    margin::Bool = false,
)
    if iszero(eps) && iszero(lam)
        clean = cross_entropy(model(x), y)
        return (loss = clean, worst = clean, clean = clean)
    end
    worst = worst_case_loss(model, x, y, eps, spec; lam = lam, margin = margin)
    iszero(kappa) && return (loss = worst, worst = worst, clean = nothing)
    k = oftype(worst, kappa)
    clean = cross_entropy(model(x), y)
    return (loss = (1 - k) * worst + k * clean, worst = worst, clean = clean)
end

"""
    verified(model, x, y, eps, spec; lam=spec.lam) -> Vector{Bool}

Returns, per sample, whether every network in the box classifies every input
of the ball correctly (all margin lower bounds `> 0` for `j ≠ y`).
"""
function verified(model, x, y, eps::Real, spec::RadiusSpec; lam = spec.lam)
    lo = margin_lower_bounds(model, x, y, eps, spec; lam = lam)
    own = onehot_mask(y, size(lo, 1), lo)
    return vec(Array(all((lo .> 0) .| own; dims = 1)))
end
