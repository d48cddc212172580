# CNN4 as a Flux model, built from arrays that Python hands over.

"CIFAR-10 per-channel mean, the constants of the model's first layer."
const CIFAR10_MEAN = (0.4914f0, 0.4822f0, 0.4465f0)
"CIFAR-10 per-channel standard deviation."
const CIFAR10_STD = (0.2471f0, 0.2435f0, 0.2616f0)

"""
    Normalize(mean, std)

Returns the layer `x -> (x .- mean) ./ std` over the channel dimension of
WHCN images; `mean` and `std` are constants, not trained parameters.
"""
struct Normalize{V <: AbstractVector}
    mean::V
    std::V
end

# `@layer`, not `@functor`: Flux 0.14.13+ calls `depwarn` for `@functor` types on
# every `Flux.params` walk and `show`. Neither mean nor std is trained.
Flux.@layer Normalize
Optimisers.trainable(::Normalize) = (;)

_channel(v::AbstractVector) = reshape(v, 1, 1, :, 1)

(n::Normalize)(x::AbstractArray{T, 4}) where {T} = (x .- T.(_channel(n.mean))) ./
    T.(_channel(n.std))

"Julia indices of CNN4's affine layers in the Chain (PyTorch `layers.k` is `k + 1`)."
const AFFINE_LAYERS = (2, 4, 7, 9, 13, 15)

"PyTorch state-dict names in the order `cnn4` takes and `cnn4_parameters` returns."
const PARAM_NAMES = Tuple(
    "layers.$(k - 1).$(p)"
    for k in AFFINE_LAYERS
    for p in ("weight", "bias")
)

"""
    cnn4(w1, b1, w3, b3, w6, b6, w8, b8, w12, b12, w14, b14) -> Flux.Chain

Returns CNN4 with the given parameters, in the order of `PARAM_NAMES`.
Convolution weights come as `(kW, kH, Cin, Cout)` and are used as
cross-correlation (`Flux.CrossCor`), exactly like PyTorch's `Conv2d`, so no
kernel flip is needed: Python's convert.py only permutes axes. Dense weights
come as `(out, in)`; the flatten order of WHCN `(W, H, C)` features equals
PyTorch's `c·H·W + h·W + w`, so the first dense weight needs no permutation.
The element type follows the arrays (Float32 or Float64).
"""
function cnn4(ps::Vararg{AbstractArray, 12})
    a = map(p -> Array(p), ps)
    T = eltype(a[1])
    a = map(p -> convert(Array{T}, p), a)
    conv(i) = Flux.CrossCor(a[i], a[i + 1]; pad = 1)
    dense(i) = Flux.Dense(a[i], a[i + 1])
    norm = Normalize(collect(T, CIFAR10_MEAN), collect(T, CIFAR10_STD))
    return Flux.Chain(
        norm,    # 1  (W, H, 3, B)
        conv(1), # 2  (32, 32, c1, B)
        NNlib.relu,
        conv(3), # 4
        NNlib.relu,
        Flux.MaxPool((2, 2)), # 6  (16, 16, c1, B)
        conv(5),              # 7  (16, 16, c2, B)
        NNlib.relu,
        conv(7), # 9
        NNlib.relu,
        Flux.MaxPool((2, 2)), # 11 (8, 8, c2, B)
        Flux.flatten,         # 12 (64·c2, B)
        dense(9),             # 13 (256w, B)
        NNlib.relu,
        dense(11), # 15 (10, B)
    )
end

"""
    cnn4_parameters(model) -> NTuple{12,Array}

Returns the parameters of CNN4 `model` (or of a gradient of it with the same
structure) as CPU arrays in the order of `PARAM_NAMES`; a missing gradient
(`nothing`) becomes zeros of the parameter's shape.
"""
function cnn4_parameters(model, like = model)
    layers = _layers(model)
    ref = _layers(like)
    return Tuple(
        _cpu_or_zeros(_field(layers[k], p), _field(ref[k], p))
        for k in AFFINE_LAYERS
        for p in (:weight, :bias)
    )
end

_layers(m::Flux.Chain) = m.layers
_layers(g::NamedTuple) = g.layers
_layers(::Nothing) = throw(ArgumentError("the gradient holds no layers"))

_field(::Nothing, ::Symbol) = nothing
_field(layer, p::Symbol) = getproperty(layer, p)

_cpu_or_zeros(g, ref) = Array(Flux.cpu(g))
_cpu_or_zeros(::Nothing, ref) = zeros(eltype(ref), size(ref))
