# One interval propagation rule per layer kind of CNN4.
#
# A rule `propagate(layer, x::Interval, spec::RadiusSpec) -> Interval` must be
# sound: for every parameter in the layer's box and every input in `x`, the
# layer's output lies in the returned interval.

"""
    UnsupportedLayerError(layer)

Returns the error thrown for a layer that has no interval rule; its message
names the layer's type.
"""
struct UnsupportedLayerError <: Exception
    layer::Any
end

function Base.showerror(io::IO, e::UnsupportedLayerError)
    print(
        io,
        "UnsupportedLayerError: no interval rule for layer of type ",
        typeof(e.layer),
        "; supported: Normalize, CrossCor (identity activation), Dense (identity ",
        "activation), relu, MaxPool, Flux.flatten",
    )
end

"""
    propagate(layer, x::Interval, spec::RadiusSpec) -> Interval

Returns the interval image of `x` through `layer` over the layer's parameter
box; a layer kind without a rule throws `UnsupportedLayerError`.
"""
propagate(layer, x::Interval, spec::RadiusSpec) = throw(UnsupportedLayerError(layer))

propagate(chain::Flux.Chain, x::Interval, spec::RadiusSpec) = _propagate(
    chain.layers,
    x,
    spec,
)

# Recursion over the layer tuple (as Flux's own Chain does) keeps Zygote fast.
_propagate(::Tuple{}, x::Interval, spec::RadiusSpec) = x
_propagate(layers::Tuple, x::Interval, spec::RadiusSpec) = _propagate(
    Base.tail(layers),
    propagate(first(layers), x, spec),
    spec,
)

"""
    affine(op, x::Interval, W, b, spec) -> Interval

Returns the image of `x` under `y = op(x, W) .+ b` with W and b in their
boxes: `y_c = op(x_c, W_c) + b_c`,
`y_r = op(x_r, |W_c|) + op(|x_c| + x_r, W_r) + b_r`. `b` is a vector over the
output channel, already shaped to broadcast (`bshape`).
"""
function affine(
    op,
    x::Interval,
    W::AbstractArray,
    b::AbstractVector,
    bshape,
    spec::RadiusSpec,
)
    Wr = param_radius(spec, W)
    br = param_radius(spec, b)
    yc = op(x.c, W) .+ reshape(b, bshape)
    yr = op(x.r, torch_abs(W)) .+ op(torch_abs(x.c) .+ x.r, Wr) .+ reshape(br, bshape)
    return Interval(yc, yr)
end

_check_identity(layer) = layer.σ === identity ||
    throw(ArgumentError(
        "interval rule for $(nameof(typeof(layer))) needs identity activation " *
            "(put the activation in its own Chain entry); got $(layer.σ)",
    ))

function propagate(layer::Flux.CrossCor, x::Interval, spec::RadiusSpec)
    _check_identity(layer)
    layer.bias isa AbstractVector ||
        throw(ArgumentError("CrossCor rule needs a bias vector; got $(typeof(layer.bias))"))
    # flipped = true: cross-correlation, the operation PyTorch's Conv2d computes.
    op(inp, w) = NNlib.conv(
        inp,
        w;
        stride = layer.stride,
        pad = layer.pad,
        dilation = layer.dilation,
        flipped = true,
    )
    return affine(op, x, layer.weight, layer.bias, (1, 1, :, 1), spec)
end

function propagate(layer::Flux.Dense, x::Interval, spec::RadiusSpec)
    _check_identity(layer)
    layer.bias isa AbstractVector ||
        throw(ArgumentError("Dense rule needs a bias vector; got $(typeof(layer.bias))"))
    # Flux's Dense computes W * x: x is (in, B), W is (out, in).
    return affine((inp, w) -> w * inp, x, layer.weight, layer.bias, (:, 1), spec)
end

# ReLU and max-pooling are monotone: map both ends.
propagate(::typeof(NNlib.relu), x::Interval, ::RadiusSpec) = map_monotone(NNlib.relu, x)

propagate(layer::Flux.MaxPool, x::Interval, ::RadiusSpec) = map_monotone(layer, x)

propagate(::typeof(Flux.flatten), x::Interval, ::RadiusSpec) = Interval(
    Flux.flatten(x.c),
    Flux.flatten(x.r),
)

# A positive diagonal affine map: the center maps, the radius scales by 1/std.
function propagate(
    layer::Normalize,
    x::Interval{<:AbstractArray{T}},
    ::RadiusSpec,
) where {T}
    return Interval(layer(x.c), x.r ./ T.(_channel(layer.std)))
end

"""
    interval_bounds(model, x, eps, spec; lam=spec.lam) -> Interval

Returns the logit interval `(K, B)` valid for every parameter vector in the
box B∞(θ, r(θ)) and every input in B∞(x, ε) ∩ [0, 1]; `x` is WHCN in [0, 1].
At `eps = 0` and `lam = 0` it collapses to the forward pass.
"""
function interval_bounds(
    model,
    x::AbstractArray,
    eps::Real,
    spec::RadiusSpec;
    lam = spec.lam,
)
    return propagate(model, input_ball(x, eps), with_lam(spec, lam))
end
