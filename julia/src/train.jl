# One APP training step and an epoch over a batch iterator.

"""
    TorchMomentum(eta, rho)

Returns the rule of PyTorch's SGD with momentum (no dampening, no Nesterov):
`v ← ρ·v + g`, `θ ← θ - η·v`. Optimisers' own `Momentum` keeps `η·v`
instead, which takes different steps once the learning rate is scheduled.
"""
struct TorchMomentum <: Optimisers.AbstractRule
    eta::Float64
    rho::Float64
end

Optimisers.init(::TorchMomentum, x::AbstractArray) = zero(x)

function Optimisers.apply!(o::TorchMomentum, v, x::AbstractArray{T}, dx) where {T}
    v .= T(o.rho) .* v .+ dx
    return v, T(o.eta) .* v
end

"""
    TorchAdam(eta, beta=(0.9, 0.999), epsilon=1e-8)

Returns the rule of PyTorch's Adam: `m ← β₁·m + (1-β₁)·g`, `v ← β₂·v + (1-β₂)·g²`,
`θ ← θ - η/(1-β₁ᵗ) · m / (√v/√(1-β₂ᵗ) + ϵ)`. The bias corrections are computed in
Float64 from the integer step `t`, as PyTorch computes them in Python floats;
Optimisers' own `Adam` keeps β in the parameter's eltype and builds βᵗ by repeated
products, which in Float32 moves each step by about 1e-5 relative. The state
`(m, v, t)` is PyTorch's `(exp_avg, exp_avg_sq, step)`, so a run can save and
restore it (`optimiser_state`, `restore_optimiser_state!`).
"""
struct TorchAdam <: Optimisers.AbstractRule
    eta::Float64
    beta::Tuple{Float64, Float64}
    epsilon::Float64
end

TorchAdam(eta::Real) = TorchAdam(eta, (0.9, 0.999), 1.0e-8)
TorchAdam(eta::Real, beta::Tuple{Real, Real}) = TorchAdam(eta, beta, 1.0e-8)

Optimisers.init(::TorchAdam, x::AbstractArray) = (zero(x), zero(x), 0)

function Optimisers.apply!(o::TorchAdam, state, x::AbstractArray{T}, dx) where {T}
    m, v, t = state
    t += 1
    β1, β2 = o.beta
    # dx may be WeightDecay's lazy Broadcasted (dx + λx); it is read twice, fused each time.
    m .= T(β1) .* m .+ T(1 - β1) .* dx
    v .= T(β2) .* v .+ T(1 - β2) .* abs2.(dx)
    step = T(o.eta / (1 - β1^t)) # PyTorch: lr / bias_correction1
    root = T(sqrt(1 - β2^t))     # PyTorch: bias_correction2 ** 0.5
    return (m, v, t), step .* m ./ (sqrt.(v) ./ root .+ T(o.epsilon))
end

"""
    make_optimiser(name; lr, momentum=0.9, weight_decay=0.0) -> Optimisers.AbstractRule

Returns the Optimisers.jl rule matching PyTorch's: `"sgd"` is SGD with
momentum as PyTorch computes it (`TorchMomentum`), `"adam"` is PyTorch's Adam
(`TorchAdam`); weight decay is the L2 term added to the gradient first, as
PyTorch's `weight_decay` does.
"""
function make_optimiser(
    name::Union{Symbol, AbstractString};
    lr::Real,
    momentum::Real = 0.9,
    weight_decay::Real = 0.0,
)
    n = Symbol(name)
    rule = if n === :sgd
        momentum > 0 ? TorchMomentum(lr, momentum) : Optimisers.Descent(lr)
    elseif n === :adam
        TorchAdam(lr)
    else
        throw(ArgumentError("optimiser must be \"sgd\" or \"adam\"; got \"$name\""))
    end
    weight_decay > 0 || return rule
    return Optimisers.OptimiserChain(Optimisers.WeightDecay(weight_decay), rule)
end

"""
    loss_and_gradient(model, x, y, eps, spec; lam, kappa, margin) -> (loss, grad)

Returns the training loss and its Zygote gradient with respect to the
midpoint parameters (the gradient flows through the radius r(θ) too).
"""
function loss_and_gradient(model, x, y, eps::Real, spec::RadiusSpec; kw...)
    parts, grad = parts_and_gradient(model, x, y, eps, spec; kw...)
    return parts.loss, grad
end

"""
    parts_and_gradient(model, x, y, eps, spec; lam, kappa, margin) -> ((loss, worst, clean), grad)

Returns `training_loss_parts` and the gradient of its `loss` (Zygote
differentiates the first field of a returned NamedTuple and passes the rest).
"""
function parts_and_gradient(model, x, y, eps::Real, spec::RadiusSpec; kw...)
    parts, grads = Zygote.withgradient(
        m -> training_loss_parts(m, x, y, eps, spec; kw...),
        model,
    )
    return parts, grads[1]
end

"""
    app_step!(model, opt_state, x, y, eps, spec; lam, kappa, margin) -> loss

Returns the batch's training loss after one APP step: gradient of the loss,
optimiser update of `model` in place, then the range clamp if `spec.clamp`
is set. A non-finite loss is returned with `model` and `opt_state` left as
they were: the caller stops the run (Python raises `TrainingDiverged` and
keeps the last good checkpoint); an exception would reach Python as a bare
`JuliaError` instead.
"""
app_step!(model, opt_state, x, y, eps::Real, spec::RadiusSpec; kw...) = app_step_parts!(
    model,
    opt_state,
    x,
    y,
    eps,
    spec;
    kw...,
).loss

"""
    app_step_parts!(model, opt_state, x, y, eps, spec; lam, kappa, margin) -> (loss, worst, clean)

Returns what `app_step!` does, with the loss's two terms (`training_loss_parts`).
"""
function app_step_parts!(model, opt_state, x, y, eps::Real, spec::RadiusSpec; kw...)
    parts, grad = parts_and_gradient(model, x, y, eps, spec; kw...)
    isfinite(parts.loss) || return parts
    Optimisers.update!(opt_state, model, grad)
    spec.clamp === nothing || clamp_params!(model, spec.clamp)
    return parts
end

"""
    APPTrainer(model, rule, spec; kappa=0.5, margin=false)

Returns a training state: the model, its optimiser state for `rule`, the
radius spec and the loss settings, so that steps and epochs can continue.
"""
mutable struct APPTrainer{M, S}
    model::M
    opt_state::S
    spec::RadiusSpec
    kappa::Float64
    margin::Bool
    steps::Int
end

function APPTrainer(model, rule, spec::RadiusSpec; kappa::Real = 0.5, margin::Bool = false)
    return APPTrainer(model, Optimisers.setup(rule, model), spec, Float64(kappa), margin, 0)
end

"""
    app_step!(t::APPTrainer, x, y, eps; lam=t.spec.lam, kappa=t.kappa) -> loss

Returns the loss of one APP step on the batch `(x, y)` with the trainer's settings;
`lam` and `kappa` override them for this step (the Python side ramps both).
`t.steps` counts the steps applied: a non-finite loss applies none.
"""
app_step!(t::APPTrainer, x, y, eps::Real; kw...) = app_step_parts!(t, x, y, eps; kw...).loss

"""
    app_step_parts!(t::APPTrainer, x, y, eps; lam=t.spec.lam, kappa=t.kappa) -> (loss, worst, clean)

Returns what `app_step!(t, …)` does, with the loss's two terms.
"""
function app_step_parts!(t::APPTrainer, x, y, eps::Real; lam = t.spec.lam, kappa = t.kappa)
    parts = app_step_parts!(
        t.model,
        t.opt_state,
        x,
        y,
        eps,
        t.spec;
        lam = lam,
        kappa = kappa,
        margin = t.margin,
    )
    isfinite(parts.loss) && (t.steps += 1)
    return parts
end

"""
    app_epoch!(t::APPTrainer, batches; schedule=i -> (eps, lam), prepare=identity) -> mean loss

Returns the mean training loss over one pass of `batches`. Each item goes
through `prepare` (the Python bridge converts arrays there) to give `(x, y)`;
`schedule(i)` gives the ramped `(eps, lam)` of the i-th batch of the epoch.
The first non-finite batch loss ends the epoch and is returned.
"""
function app_epoch!(t::APPTrainer, batches; schedule, prepare = identity)
    total, n = 0.0, 0
    for (i, item) in enumerate(batches)
        x, y = prepare(item)
        eps, lam = schedule(i)
        loss = app_step!(t, x, y, eps; lam = lam)
        isfinite(loss) || return loss
        total += loss
        n += 1
    end
    n > 0 || throw(ArgumentError("app_epoch! got no batches"))
    return total / n
end
