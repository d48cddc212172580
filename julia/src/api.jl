# Entry points for the Python bridge: plain arrays in (already in Flux layout,
# labels 1-based), plain CPU arrays out. Python's convert.py does the layouts.

_backend(b) = Symbol(b)
# Untyped: models (a Flux.Chain is no AbstractArray) go through it as well as arrays.
_dev(x, backend) = to_device(x, _backend(backend))

"""
    api_model(w1, b1, …, w14, b14; backend="cpu") -> Flux.Chain

Returns CNN4 built from the 12 parameter arrays (order `PARAM_NAMES`) on `backend`.
"""
api_model(ps::Vararg{AbstractArray, 12}; backend = "cpu") = _dev(cnn4(ps...), backend)

"""
    api_bounds(model, x, eps, spec; lam=spec.lam, backend="cpu") -> (lower, upper)

Returns the logit bounds as CPU matrices `(K, B)`.
"""
function api_bounds(model, x, eps::Real, spec::RadiusSpec; lam = spec.lam, backend = "cpu")
    z = interval_bounds(model, _dev(x, backend), eps, spec; lam = lam)
    return Array(lower(z)), Array(upper(z))
end

"""
    api_worst_case_loss(model, x, y, eps, spec; lam, margin=false, backend="cpu") -> Float64

Returns the mean worst-case cross-entropy of the batch.
"""
function api_worst_case_loss(
    model,
    x,
    y,
    eps::Real,
    spec::RadiusSpec;
    backend = "cpu",
    kw...,
)
    loss = worst_case_loss(model, _dev(x, backend), _dev(y, backend), eps, spec; kw...)
    return Float64(loss)
end

"""
    api_loss_and_gradients(model, x, y, eps, spec; lam, kappa, margin, backend) -> (loss, grads)

Returns the training loss and its gradient as 12 CPU arrays (order `PARAM_NAMES`).
"""
function api_loss_and_gradients(
    model,
    x,
    y,
    eps::Real,
    spec::RadiusSpec;
    backend = "cpu",
    kw...,
)
    loss, grad = loss_and_gradient(
        model,
        _dev(x, backend),
        _dev(y, backend),
        eps,
        spec;
        kw...,
    )
    return Float64(loss), cnn4_parameters(grad, model)
end

"""
    api_margin_lower_bounds(model, x, y, eps, spec; lam, backend) -> Matrix

Returns the margin lower bounds `(K, B)` on the CPU, 0 at the true class.
"""
function api_margin_lower_bounds(
    model,
    x,
    y,
    eps::Real,
    spec::RadiusSpec;
    backend = "cpu",
    kw...,
)
    return Array(margin_lower_bounds(
        model,
        _dev(x, backend),
        _dev(y, backend),
        eps,
        spec;
        kw...,
    ))
end

"""
    api_verified(model, x, y, eps, spec; lam, backend) -> Vector{Bool}

Returns, per sample, whether the box and ball are verified (a dense Bool
vector, which crosses to numpy without a copy loop).
"""
function api_verified(model, x, y, eps::Real, spec::RadiusSpec; backend = "cpu", kw...)
    return Vector{Bool}(verified(
        model,
        _dev(x, backend),
        _dev(y, backend),
        eps,
        spec;
        kw...,
    ))
end

"""
    api_trainer(model, spec; optimiser="sgd", lr, momentum=0.9, weight_decay=0.0,
                kappa=0.5, margin=false) -> APPTrainer

Returns a trainer holding `model` and a fresh optimiser state.
"""
function api_trainer(
    model,
    spec::RadiusSpec;
    optimiser = "sgd",
    lr::Real,
    momentum::Real = 0.9,
    weight_decay::Real = 0.0,
    kappa::Real = 0.5,
    margin::Bool = false,
)
    rule = make_optimiser(
        optimiser;
        lr = lr,
        momentum = momentum,
        weight_decay = weight_decay,
    )
    return APPTrainer(model, rule, spec; kappa = kappa, margin = margin)
end

"""
    api_step!(t::APPTrainer, x, y, eps; lam=t.spec.lam, kappa=t.kappa, lr=nothing, backend="cpu")
        -> (loss, worst, clean)

Returns the loss of one APP step and its two terms as Float64 (`clean` is
`nothing` where κ = 0 left it uncomputed), the values PyTorch's epoch logs;
`lr`, when given, sets the learning rate first (the Python side owns the
schedule, and the ramp of `lam` and `kappa`). A non-finite loss comes back as
it is, with the trainer unchanged.
"""
function api_step!(
    t::APPTrainer,
    x,
    y,
    eps::Real;
    lam = t.spec.lam,
    kappa = t.kappa,
    lr = nothing,
    backend = "cpu",
)
    lr === nothing || Optimisers.adjust!(t.opt_state, lr)
    parts = app_step_parts!(
        t,
        _dev(x, backend),
        _dev(y, backend),
        eps;
        lam = lam,
        kappa = kappa,
    )
    return _float(parts.loss), _float(parts.worst), _float(parts.clean)
end

_float(v::Real) = Float64(v)
_float(::Nothing) = nothing

"""
    api_parameters(t) -> NTuple{12,Array}

Returns the current parameters of a trainer or model as CPU arrays.
"""
api_parameters(t::APPTrainer) = cnn4_parameters(t.model)
api_parameters(model::Flux.Chain) = cnn4_parameters(model)

"""
    api_optimiser_state(t::APPTrainer) -> (arrays, step)

Returns `optimiser_state(t)` flattened: the state arrays slot by slot, 12 per
slot in `PARAM_NAMES` order (CPU, Flux layout), and Adam's step count.
"""
function api_optimiser_state(t::APPTrainer)
    slots, step = optimiser_state(t)
    return Tuple(a for slot in slots for a in slot), step
end

"""
    api_restore_optimiser_state!(t::APPTrainer, step, arrays...) -> t

Returns `t` after `restore_optimiser_state!` with the arrays of `api_optimiser_state`.
"""
function api_restore_optimiser_state!(
    t::APPTrainer,
    step::Integer,
    arrays::AbstractArray...,
)
    n = length(PARAM_NAMES)
    length(arrays) % n == 0 ||
        throw(DimensionMismatch("expected $n state arrays per slot; got $(length(arrays))"))
    slots = ntuple(j -> arrays[(n * (j - 1) + 1):(n * j)], length(arrays) ÷ n)
    return restore_optimiser_state!(t, slots, step)
end
