# Radius functions r(θ) ≥ 0 of the parameter box B∞(θ, r(θ)), and the range clamp.

"""
    RadiusSpec(kind; lam=0.01, s=100.0, m=10.0, perturb_weights=true,
               perturb_biases=true, clamp=nothing)

Returns the description of the parameter box, elementwise radius by `kind`:
`:abs` r = λ|θ|, `:const` r = λ, `:tanh` r = λ·tanh(s·θ²)/m. Weights are the
arrays with two or more dimensions, biases the vectors; an excluded kind gets
radius zero. `clamp`, when set, bounds every parameter to [-clamp, clamp]
after each optimiser step.
"""
struct RadiusSpec
    kind::Symbol
    lam::Float64
    s::Float64
    m::Float64
    perturb_weights::Bool
    perturb_biases::Bool
    clamp::Union{Nothing, Float64}
    function RadiusSpec(kind, lam, s, m, perturb_weights, perturb_biases, clamp)
        kind in (:abs, :const, :tanh) ||
            throw(ArgumentError("radius kind must be :abs, :const or :tanh; got :$kind"))
        lam >= 0 || throw(ArgumentError("radius lam must be >= 0; got $lam"))
        m > 0 || throw(ArgumentError("radius m must be > 0; got $m"))
        c = clamp === nothing ? nothing : Float64(clamp)
        return new(kind, lam, s, m, perturb_weights, perturb_biases, c)
    end
end

function RadiusSpec(
    kind::Union{Symbol, AbstractString};
    lam::Real = 0.01,
    s::Real = 100.0,
    m::Real = 10.0,
    perturb_weights::Bool = true,
    perturb_biases::Bool = true,
    clamp::Union{Nothing, Real} = nothing,
)
    return RadiusSpec(Symbol(kind), lam, s, m, perturb_weights, perturb_biases, clamp)
end

"""
    with_lam(spec::RadiusSpec, lam) -> RadiusSpec

Returns `spec` with λ replaced (the ε/λ ramp of training uses it).
"""
function with_lam(spec::RadiusSpec, lam::Real)
    return RadiusSpec(
        spec.kind,
        lam,
        spec.s,
        spec.m,
        spec.perturb_weights,
        spec.perturb_biases,
        spec.clamp,
    )
end

"""
    is_perturbed(spec::RadiusSpec, θ::AbstractArray) -> Bool

Returns whether the box perturbs `θ` (weights: `ndims ≥ 2`; biases: vectors).
"""
is_perturbed(spec::RadiusSpec, θ::AbstractArray) = ndims(θ) >= 2 ?
    spec.perturb_weights :
    spec.perturb_biases

"""
    torch_abs(x::AbstractArray) -> AbstractArray

Returns `abs.(x)`, whose gradient is `Δ .* sign.(x)`: 0 at 0, as PyTorch's
`abs` backward gives. A plain `abs.` would not: Zygote differentiates that
broadcast with ForwardDiff, whose `abs` derivative (DiffRules:
`signbit(x) ? -1 : 1`) is +1 at +0.0. Used wherever the two engines must
give the same gradient (radius, affine rule, margin bounds).
"""
torch_abs(x::AbstractArray) = abs.(x)

function ChainRulesCore.rrule(::typeof(torch_abs), x::AbstractArray)
    function torch_abs_pullback(Δ)
        Δ isa ChainRulesCore.AbstractZero && return (ChainRulesCore.NoTangent(), Δ)
        return (ChainRulesCore.NoTangent(), ChainRulesCore.unthunk(Δ) .* sign.(x))
    end
    return torch_abs(x), torch_abs_pullback
end

"""
    param_radius(spec::RadiusSpec, θ) -> AbstractArray

Returns the elementwise radius r(θ) ≥ 0, differentiable in θ (d|θ|/dθ = sign θ,
so 0 at θ = 0, as in PyTorch); zeros where `θ` is not perturbed or λ = 0.
"""
function param_radius(spec::RadiusSpec, θ::AbstractArray{T}) where {T}
    (is_perturbed(spec, θ) && spec.lam > 0) || return zero(θ)
    lam = T(spec.lam)
    if spec.kind === :abs
        return lam .* torch_abs(θ)
    elseif spec.kind === :const
        return zero(θ) .+ lam
    else
        s, m = T(spec.s), T(spec.m)
        return lam .* tanh.(s .* θ.^2) ./ m
    end
end

"""
    clamp_params!(model, c) -> model

Returns `model` after clamping every trainable array to [-c, c] in place
(`Optimisers.trainables`: the explicit walk, where `Flux.params` is the
implicit-parameter API that Flux 0.15 removes).
"""
function clamp_params!(model, c::Real)
    for θ in Optimisers.trainables(model)
        T = eltype(θ)
        clamp!(θ, -T(c), T(c))
    end
    return model
end
