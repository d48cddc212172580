# The optimiser state of an APPTrainer as plain arrays, so that a run can save it
# with its checkpoint and a resumed run can continue with it (as PyTorch's does).

"""
    optimiser_state(t::APPTrainer) -> (slots, step)

Returns the optimiser state of `t` as PyTorch keeps it: `slots` holds one
`NTuple{12,Array}` (CPU arrays, Flux layout, order `PARAM_NAMES`) per state
tensor — `(momentum_buffer,)` for `TorchMomentum`, `(exp_avg, exp_avg_sq)` for
`TorchAdam`, none for `Descent` — and `step` is Adam's step count (else 0).
`WeightDecay`, first in the chain `make_optimiser` builds, keeps no state.
"""
function optimiser_state(t::APPTrainer)
    parts = map(l -> _slots(_last_rule(l.rule, l.state)...), _state_leaves(t.opt_state))
    nslots = length(first(parts)[1])
    slots = ntuple(i -> map(p -> Array(Flux.cpu(p[1][i])), parts), nslots)
    return slots, first(parts)[2]
end

"""
    restore_optimiser_state!(t::APPTrainer, slots, step) -> t

Returns `t` with the optimiser state that `optimiser_state` gave (arrays in Flux
layout, order `PARAM_NAMES`, any element type or array wrapper: they are
converted to dense arrays of the state's eltype and copied into its own arrays,
on the CPU or the GPU) and Adam's step count `step` (≥ 0). A wrong number of
slots or arrays, or a shape that does not match its parameter, throws a
`DimensionMismatch`, a bad `step` an `ArgumentError` or `InexactError`, and an
array that cannot be converted its conversion error — all before any state is
written, so a failed restore leaves `t` as it was.
"""
function restore_optimiser_state!(t::APPTrainer, slots, step::Integer)
    n = Int(step) # a BigInt beyond Int throws here, before anything is written
    n >= 0 || throw(ArgumentError("Adam's step count must be ≥ 0; got $step"))
    leaves = _state_leaves(t.opt_state)
    all(s -> length(s) == length(leaves), slots) ||
        throw(DimensionMismatch(
            "each state slot needs $(length(leaves)) arrays, one per parameter",
        ))
    # Check and convert everything first, write after: no half-restored state.
    sources = map(enumerate(leaves)) do (i, leaf)
        held, _ = _slots(_last_rule(leaf.rule, leaf.state)...)
        _nslots(slots, length(held))
        map((dest, s) -> _converted(dest, s[i]), held, Tuple(slots))
    end
    for (leaf, src) in zip(leaves, sources)
        # Leaf is mutable; the new state has the type of the old one (same arrays, an Int).
        leaf.state = _restore(leaf.rule, leaf.state, src, n)
    end
    return t
end

# The 12 Optimisers.Leaf of CNN4's parameters: the state tree mirrors the Chain
# (`(layers = (…),)`, each affine layer `(weight = Leaf, bias = Leaf, …)`).
_state_leaves(tree) = Tuple(
    _field(_layers(tree)[k], p)
    for k in AFFINE_LAYERS
    for p in (:weight, :bias)
)

# make_optimiser's chains are (WeightDecay, rule): the last rule holds the state.
_last_rule(rule, state) = (rule, state)
_last_rule(rule::Optimisers.OptimiserChain, state) = (last(rule.opts), last(state))

_slots(::Optimisers.Descent, ::Nothing) = ((), 0)
_slots(::TorchMomentum, v) = ((v,), 0)
_slots(::TorchAdam, state) = ((state[1], state[2]), state[3])

function _restore(rule::Optimisers.OptimiserChain, state, slots, step)
    return (Base.front(state)..., _restore(last(rule.opts), last(state), slots, step))
end

# `slots` here are already checked and converted (restore_optimiser_state!), `step` an Int ≥ 0.
_restore(::Optimisers.Descent, ::Nothing, slots, step) = nothing
_restore(::TorchMomentum, v, slots, step) = copyto!(v, slots[1])
_restore(::TorchAdam, state, slots, step) = (
    copyto!(state[1], slots[1]),
    copyto!(state[2], slots[2]),
    step,
)

function _nslots(slots, n)
    length(slots) == n ||
        throw(DimensionMismatch(
            "the optimiser keeps $n state array(s) per parameter; got $(length(slots))",
        ))
    return nothing
end

function _check_size(dest, src)
    size(dest) == size(src) ||
        throw(DimensionMismatch(
            "optimiser state of size $(size(src)) for a parameter of size $(size(dest))",
        ))
    return nothing
end

function _converted(dest, src)
    _check_size(dest, src)
    # A dense Array of dest's eltype: CUDA.jl uploads it with one copy; a non-Array source
    # (a PyArray, a view) would otherwise go through Base's element-by-element copyto!,
    # which a CuArray refuses.
    return convert(Array{eltype(dest)}, src)
end
