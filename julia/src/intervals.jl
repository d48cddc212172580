# Intervals in midpoint-radius form (Rump): ⟨c, r⟩ = [c - r, c + r], r ≥ 0.

"""
    Interval(c, r)

Returns the box of arrays with center `c` and radius `r` (same shape, `r ≥ 0`).
"""
struct Interval{A <: AbstractArray}
    c::A
    r::A
end

"""
    lower(x::Interval) -> AbstractArray

Returns the lower end `c - r`.
"""
lower(x::Interval) = x.c .- x.r

"""
    upper(x::Interval) -> AbstractArray

Returns the upper end `c + r`.
"""
upper(x::Interval) = x.c .+ x.r

"""
    from_bounds(lo, hi) -> Interval

Returns the interval `[lo, hi]` in midpoint-radius form.
"""
from_bounds(lo::AbstractArray, hi::AbstractArray) = Interval(
    (hi .+ lo) ./ 2,
    (hi .- lo) ./ 2,
)

"""
    map_monotone(f, x::Interval) -> Interval

Returns `f` applied to both ends of `x`; sound for every elementwise
nondecreasing `f` (ReLU, max-pooling).
"""
map_monotone(f, x::Interval) = from_bounds(f(lower(x)), f(upper(x)))

"""
    input_ball(x, eps) -> Interval

Returns B∞(x, ε) ∩ [0, 1] for images `x` on the [0, 1] pixel scale; `x` is
clipped to [0, 1] first. At `eps == 0` the radius is exactly zero.
"""
function input_ball(x::AbstractArray{T}, eps::Real) where {T}
    eps < 0 && throw(ArgumentError("eps must be >= 0; got $eps"))
    xc = clamp.(x, zero(T), one(T))
    iszero(eps) && return Interval(xc, zero(xc))
    e = T(eps)
    return from_bounds(max.(xc .- e, zero(T)), min.(xc .+ e, one(T)))
end
