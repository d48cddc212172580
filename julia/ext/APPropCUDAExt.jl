"""
    APPropCUDAExt

Returns nothing; loaded by Julia when CUDA and cuDNN are both loaded next to
APProp. It places models and arrays on the GPU; the interval rules are
broadcasts, `NNlib.conv` and `batched_mul`, which CUDA.jl and cuDNN implement
for `CuArray`, so the same code runs there.
"""
module APPropCUDAExt

using APProp: APProp
using CUDA: CUDA
# cuDNN is a trigger of this extension (Flux's convolutions on CuArray need it
# loaded); nothing here calls it by name.
using Flux: Flux

APProp.backend_available(::Val{:cuda}) = CUDA.functional()

function APProp.to_device(x, ::Val{:cuda})
    CUDA.functional() ||
        throw(ArgumentError("CUDA.jl is loaded but no functional GPU was found"))
    # CuArray, not `cu`: `cu` would turn Float64 into Float32.
    return Flux.fmap(CUDA.CuArray, x; exclude = a -> a isa AbstractArray{<:Number})
end

function APProp.select_device!(::Val{:cuda}, index::Integer)
    CUDA.functional() ||
        throw(ArgumentError("CUDA.jl is loaded but no functional GPU was found"))
    n = length(CUDA.devices())
    0 <= index < n ||
        throw(ArgumentError(
            "cuda:$index does not exist: CUDA.jl sees $n device(s), cuda:0 to cuda:$(n - 1)",
        ))
    # 0-based ordinal (CuDevice(ordinal)), as torch's cuda:N; device! also sets the
    # default for tasks started later, so every call from Python lands on it.
    CUDA.device!(index)
    return index
end

end # module APPropCUDAExt
