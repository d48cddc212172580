"""
    APProp

Adversarial Parameter Propagation in Julia: interval bounds of a network's
output over a box of parameters B∞(θ, r(θ)) and a ball of inputs B∞(x, ε),
the worst-case loss those bounds give, and training of the midpoint network
on it. Arrays use Flux's layouts: images are WHCN `(W, H, C, B)`, dense
inputs `(features, B)`, logits `(K, B)`.
"""
module APProp

using ChainRulesCore: ChainRulesCore
using Flux: Flux
using NNlib: NNlib
using Optimisers: Optimisers
using Zygote: Zygote

export Interval, lower, upper, from_bounds, input_ball
export RadiusSpec, param_radius, clamp_params!
export Normalize, propagate, interval_bounds, UnsupportedLayerError
export cnn4, cnn4_parameters, CIFAR10_MEAN, CIFAR10_STD
export worst_case_logits, worst_case_loss, margin_lower_bounds, verified, training_loss
export training_loss_parts
export make_optimiser,
    TorchMomentum,
    TorchAdam,
    app_step!,
    app_step_parts!,
    app_epoch!,
    APPTrainer
export optimiser_state, restore_optimiser_state!
export backend_available, to_device, select_device!

include("intervals.jl")
include("radius.jl")
include("model.jl")
include("rules.jl")
include("loss.jl")
include("train.jl")
include("optstate.jl")
include("device.jl")
include("api.jl")

end # module APProp
