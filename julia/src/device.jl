# Device placement: the CPU here; CUDA comes from the APPropCUDAExt extension.

"""
    backend_available(backend::Symbol) -> Bool

Returns whether arrays can be placed on `backend` (`:cpu` always; `:cuda`
once `using CUDA, cuDNN` has loaded the extension and a GPU is functional).
"""
backend_available(backend::Symbol) = backend_available(Val(backend))
backend_available(::Val{:cpu}) = true
backend_available(::Val) = false

"""
    to_device(x, backend::Symbol) -> same structure on the device

Returns `x` (an array or a model) moved to `backend`.
"""
to_device(x, backend::Symbol) = to_device(x, Val(backend))
to_device(x, ::Val{:cpu}) = Flux.cpu(x)
to_device(x, ::Val{B}) where {B} = throw(_not_loaded(B))

_not_loaded(B) = ArgumentError(
    "backend :$B is not loaded; for :cuda run `using CUDA, cuDNN` " *
        "(both are in the pinned environment) on a machine with an NVIDIA GPU",
)

"""
    select_device!(backend::Symbol, index::Integer) -> index

Returns `index` after making device `index` (0-based, PyTorch's `cuda:N`) the one
`backend` places arrays on: CUDA.jl's `device!` once the extension is loaded. A
device that does not exist throws an `ArgumentError` naming it; the CPU has only 0.
"""
select_device!(backend::Symbol, index::Integer) = select_device!(Val(backend), index)
function select_device!(::Val{:cpu}, index::Integer)
    index == 0 || throw(ArgumentError("the CPU backend has no device $index"))
    return index
end
select_device!(::Val{B}, ::Integer) where {B} = throw(_not_loaded(B))
