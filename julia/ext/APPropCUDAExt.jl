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

end # module APPropCUDAExt
