using APProp
using Flux: Flux
using NNlib: NNlib
using Optimisers: Optimisers
using Random: Random
using Test

const RNG = Random.MersenneTwister(20240917)

"Returns 12 random CNN4 parameter arrays (width 1) in Float64, small enough to stay finite."
function random_params(rng = RNG; T = Float64)
    shapes = [
        (3, 3, 3, 32),
        (32,),
        (3, 3, 32, 32),
        (32,),
        (3, 3, 32, 64),
        (64,),
        (3, 3, 64, 64),
        (64,),
        (256, 4096),
        (256,),
        (10, 256),
        (10,),
    ]
    return Tuple(T(0.05) .* randn(rng, T, s) for s in shapes)
end

random_images(rng, B; T = Float64) = rand(rng, T, 32, 32, 3, B)

"Returns a copy of `model` with every trainable array replaced by a sample of its box."
function sample_network(rng, model, spec; corner = false)
    ps = APProp.cnn4_parameters(model)
    sampled = map(ps) do θ
        r = param_radius(spec, θ)
        u = corner ? rand(rng, (-1, 1), size(θ)) : 2 .* rand(rng, size(θ)) .- 1
        θ .+ r .* u
    end
    return cnn4(sampled...)
end

function sample_ball(rng, x, eps)
    ball = input_ball(x, eps)
    return lower(ball) .+ (upper(ball) .- lower(ball)) .* rand(rng, size(x))
end

@testset "APProp" begin
    @testset "intervals" begin
        lo, hi = [-1.0, 0.5], [2.0, 0.5]
        x = from_bounds(lo, hi)
        @test lower(x) ≈ lo && upper(x) ≈ hi
        @test all(x.r .>= 0)
        ball = input_ball([-0.2, 0.0, 0.5, 0.99, 1.3], 0.05)
        @test lower(ball) ≈ [0.0, 0.0, 0.45, 0.94, 0.95]
        @test upper(ball) ≈ [0.05, 0.05, 0.55, 1.0, 1.0]
        @test input_ball([0.3], 0.0).r == [0.0]
        @test_throws ArgumentError input_ball([0.3], -0.1)
    end

    @testset "radius" begin
        θ = [-0.5 0.0; 0.1 2.0]
        b = [-0.5, 0.0]
        @test param_radius(RadiusSpec(:abs; lam = 0.1), θ) ≈ 0.1 .* abs.(θ)
        @test param_radius(RadiusSpec(:const; lam = 0.1), θ) ≈ fill(0.1, 2, 2)
        tanh_r = param_radius(RadiusSpec(:tanh; lam = 0.1), θ)
        @test tanh_r ≈ 0.1 .* tanh.(100 .* θ.^2) ./ 10
        @test all(tanh_r .>= 0) && tanh_r[1, 2] == 0
        @test param_radius(RadiusSpec(:abs; lam = 0.1, perturb_weights = false), θ) ==
            zero(θ)
        @test param_radius(RadiusSpec(:abs; lam = 0.1, perturb_biases = false), b) ==
            zero(b)
        @test param_radius(RadiusSpec("const"; lam = 0.0), θ) == zero(θ)
        @test_throws ArgumentError RadiusSpec(:cube)
        @testset "gradient of |θ| at 0 is 0, as in PyTorch" begin
            g = Flux.gradient(t -> sum(param_radius(RadiusSpec(:abs; lam = 1.0), t)), b)[1]
            @test g ≈ [-1.0, 0.0]
        end
        @testset "clamp" begin
            m = Flux.Chain(Flux.Dense([3.0 -4.0], [0.5]))
            clamp_params!(m, 1.0)
            @test m.layers[1].weight == [1.0 -1.0]
        end
        @testset "Normalize is a Flux.@layer, and the clamp leaves its constants" begin
            norm = Normalize([0.5, 0.5], [0.25, 0.25])
            # @layer defines this method in APProp; with @functor, Flux's generic one
            # runs and calls depwarn on every walk.
            @test which(Flux._check_new_macro, Tuple{typeof(norm)}).module === APProp
            m = Flux.Chain(norm, Flux.Dense([3.0 -4.0], [0.5]))
            clamp_params!(m, 0.1)
            @test norm.mean == [0.5, 0.5] && norm.std == [0.25, 0.25]
            @test m.layers[2].weight == [0.1 -0.1] && m.layers[2].bias == [0.1]
        end
    end

    @testset "rules" begin
        spec = RadiusSpec(:abs; lam = 0.05)
        @testset "unsupported layer names its type" begin
            err = try
                propagate(Flux.BatchNorm(3), Interval(zeros(2), zeros(2)), spec)
            catch e
                e
            end
            @test err isa UnsupportedLayerError
            @test occursin("BatchNorm", sprint(showerror, err))
            @test_throws ArgumentError propagate(
                Flux.Dense(2 => 2, NNlib.relu),
                Interval(zeros(2, 1), zeros(2, 1)),
                spec,
            )
        end
        @testset "dense multiplies W·x (out, in and B all differ)" begin
            rng = Random.MersenneTwister(2)
            W, b = randn(rng, 4, 6), randn(rng, 4)
            layer = Flux.Dense(W, b)
            xc, xr = randn(rng, 6, 3), 0.1 .* rand(rng, 6, 3)
            point = propagate(layer, Interval(xc, zero(xc)), RadiusSpec(:abs; lam = 0.0))
            @test size(point.c) == (4, 3)
            @test point.c ≈ layer(xc)
            @test all(iszero, point.r)
            y = propagate(layer, Interval(xc, xr), RadiusSpec(:abs; lam = 0.1))
            # r = |W|·x_r + λ|W|·(|x_c| + x_r) + λ|b|
            @test y.r ≈ abs.(W) * xr .+ 0.1 .* abs.(W) * (abs.(xc) .+ xr) .+ 0.1 .* abs.(b)
        end
        @testset "|W| and |x_c| have PyTorch's gradient, 0 at 0" begin
            @test Flux.gradient(v -> sum(APProp.torch_abs(v)), [-2.0, 0.0, 3.0])[1] ==
                [-1.0, 0.0, 1.0]
            layer = Flux.Dense([0.0 1.0; -1.0 0.0], [0.0, 0.0])
            x = Interval([1.0 2.0; 0.0 -1.0], fill(0.5, 2, 2))
            # lam = 0: y_r = |W|·x_r, so ∂Σy_r/∂W = sign(W) .* Σ_b x_r[j, b].
            g = Flux.gradient(
                m -> sum(propagate(m, x, RadiusSpec(:abs; lam = 0.0)).r),
                layer,
            )
            @test g[1].weight == [0.0 1.0; -1.0 0.0]
            # lam = 0.1: y_r has λ|W|·|x_c|, whose ∂/∂x_c is λ·|W|ᵀ·1 .* sign(x_c).
            s = RadiusSpec(:abs; lam = 0.1)
            gc = Flux.gradient(c -> sum(propagate(layer, Interval(c, x.r), s).r), x.c)[1]
            @test gc ≈ 0.1 .* (abs.(layer.weight)' * ones(2, 2)) .* sign.(x.c)
            @test gc[2, 1] == 0
        end
        @testset "dense and crosscor are sound (sampled)" begin
            rng = Random.MersenneTwister(1)
            dense = Flux.Dense(randn(rng, 4, 6), randn(rng, 4))
            conv = Flux.CrossCor(randn(rng, 3, 3, 2, 3), randn(rng, 3); pad = 1)
            for (layer, shape) in ((dense, (6, 5)), (conv, (5, 5, 2, 2)))
                x = Interval(randn(rng, shape...), 0.1 .* rand(rng, shape...))
                y = propagate(layer, x, spec)
                for _ in 1:50
                    ps = map(
                        p -> p .+ param_radius(spec, p) .* (2 .* rand(rng, size(p)) .- 1),
                        (layer.weight, layer.bias),
                    )
                    l2 = layer isa Flux.Dense ?
                        Flux.Dense(ps...) :
                        Flux.CrossCor(ps...; pad = 1)
                    xs = x.c .+ x.r .* (2 .* rand(rng, shape...) .- 1)
                    out = l2(xs)
                    @test all(lower(y) .- 1.0e-10 .<= out .<= upper(y) .+ 1.0e-10)
                end
            end
        end
        @testset "crosscor equals PyTorch's unflipped correlation" begin
            w = reshape(Float64.(1:9), 3, 3, 1, 1)
            x = zeros(3, 3, 1, 1)
            x[1, 1] = 1.0 # a single pixel at (w=1, h=1)
            layer = Flux.CrossCor(w, [0.0]; pad = 1)
            # The output at the centre (2, 2) sees the pixel through kernel tap (1, 1).
            @test layer(x)[2, 2, 1, 1] == w[1, 1, 1, 1]
        end
    end

    @testset "CNN4 bounds" begin
        model = cnn4(random_params()...)
        x = random_images(RNG, 3)
        y = [1, 5, 10]
        @testset "collapse to the forward pass at eps = lam = 0" begin
            for kind in (:abs, :const, :tanh)
                z = interval_bounds(model, x, 0.0, RadiusSpec(kind; lam = 0.0))
                @test z.c ≈ model(x) rtol = 1.0e-10
                @test all(iszero, z.r)
            end
        end
        @testset "sound for sampled networks and inputs ($kind)" for kind in (
                :abs,
                :const,
                :tanh,
            )
            spec = RadiusSpec(kind; lam = kind === :const ? 1.0e-3 : 0.02)
            eps = 2 / 255
            z = interval_bounds(model, x, eps, spec)
            mlo = margin_lower_bounds(model, x, y, eps, spec)
            for trial in 1:12
                net = sample_network(RNG, model, spec; corner = isodd(trial))
                out = net(sample_ball(RNG, x, eps))
                @test all(lower(z) .- 1.0e-9 .<= out .<= upper(z) .+ 1.0e-9)
                margins = out[CartesianIndex.(y, 1:3)]' .- out
                @test all(mlo .- 1.0e-9 .<= margins)
            end
        end
        @testset "margin bounds are at least as tight as logit bounds" begin
            spec = RadiusSpec(:abs; lam = 0.01)
            z = interval_bounds(model, x, 0.01, spec)
            naive = lower(z)[CartesianIndex.(y, 1:3)]' .- upper(z)
            mlo = margin_lower_bounds(model, x, y, 0.01, spec)
            own = (1:10) .== y'
            @test all((mlo .>= naive .- 1.0e-9) .| own)
        end
        @testset "widening is monotone in eps and lam" begin
            spec = RadiusSpec(:tanh; lam = 0.01)
            radii = [interval_bounds(model, x, e, spec).r for e in (0.0, 0.002, 0.01)]
            @test all(radii[1] .<= radii[2] .+ 1.0e-12) &&
                all(radii[2] .<= radii[3] .+ 1.0e-12)
            radii = [
                interval_bounds(model, x, 0.002, spec; lam = l).r
                for l in (0.0, 0.01, 0.05)
            ]
            @test all(radii[1] .<= radii[2] .+ 1.0e-12) &&
                all(radii[2] .<= radii[3] .+ 1.0e-12)
        end
    end

    @testset "loss and verification" begin
        @testset "onehot_mask is a dense Matrix{Bool}, not a BitMatrix" begin
            mask = APProp.onehot_mask([2, 1, 3, 2], 3, zeros(3, 4))
            @test mask isa Matrix{Bool}
            @test mask == Bool[0 1 0 0; 1 0 0 1; 0 0 1 0]
            @test APProp.onehot_mask([3], 3, zeros(Float32, 3, 1)) isa Matrix{Bool}
        end
        model = cnn4(random_params()...)
        x = random_images(RNG, 4)
        y = [2, 3, 4, 7]
        spec = RadiusSpec(:abs; lam = 0.01)
        clean = Flux.logitcrossentropy(model(x), Flux.onehotbatch(y, 1:10))
        @test worst_case_loss(model, x, y, 0.0, RadiusSpec(:abs; lam = 0.0)) ≈ clean
        worst = worst_case_loss(model, x, y, 0.01, spec)
        @test worst >= clean
        @test worst_case_loss(model, x, y, 0.01, spec; margin = true) <= worst + 1.0e-9
        mix = training_loss(model, x, y, 0.01, spec; kappa = 0.25)
        @test mix ≈ 0.75 * worst + 0.25 * clean
        @testset "training_loss_parts gives the terms PyTorch's epoch logs" begin
            parts = training_loss_parts(model, x, y, 0.01, spec; kappa = 0.25)
            @test parts.loss ≈ mix && parts.worst ≈ worst && parts.clean ≈ clean
            @test training_loss_parts(model, x, y, 0.01, spec; kappa = 0.0).clean ===
                nothing
            warm = training_loss_parts(model, x, y, 0.0, RadiusSpec(:abs; lam = 0.0))
            @test warm.loss == warm.worst == warm.clean && warm.clean ≈ clean
        end
        @testset "margin loss gradient adds up repeated labels (finite differences)" begin
            # W[y, :] and b[y] with y repeating, as in every real batch: the pullback of
            # getindex must sum the duplicates' contributions.
            rng = Random.MersenneTwister(3)
            net = Flux.Chain(
                Flux.Dense(randn(rng, 6, 5), randn(rng, 6)),
                NNlib.relu,
                Flux.Dense(randn(rng, 4, 6), randn(rng, 4)),
            )
            xs, ys = rand(rng, 5, 5), [2, 2, 4, 1, 2]
            s = RadiusSpec(:abs; lam = 0.05)
            f(m) = worst_case_loss(m, xs, ys, 0.01, s; margin = true)
            g = Flux.gradient(f, net)[1]
            for (k, p) in ((3, :weight), (3, :bias), (1, :weight))
                θ = getfield(net.layers[k], p)
                fd = map(eachindex(θ)) do i
                    old = θ[i]
                    θ[i] = old + 1.0e-6
                    up = f(net)
                    θ[i] = old - 1.0e-6
                    down = f(net)
                    θ[i] = old
                    (up - down) / 2.0e-6
                end
                @test vec(getfield(g.layers[k], p)) ≈ fd rtol = 1.0e-5 atol = 1.0e-8
            end
        end
        @testset "warm-up (eps = lam = 0) runs only the forward pass" begin
            # softplus has no interval rule: the loss can only come from the plain forward pass.
            rng = Random.MersenneTwister(4)
            net = Flux.Chain(Flux.Dense(randn(rng, 4, 5), randn(rng, 4)), NNlib.softplus)
            xs, ys = rand(rng, 5, 3), [1, 4, 4]
            point = RadiusSpec(:abs; lam = 0.0)
            ce = Flux.logitcrossentropy(net(xs), Flux.onehotbatch(ys, 1:4))
            for margin in (false, true)
                @test training_loss(net, xs, ys, 0.0, point; margin = margin) ≈ ce
            end
            @test training_loss(model, x, y, 0.0, point; kappa = 0.3) ≈ clean
            @test_throws UnsupportedLayerError training_loss(net, xs, ys, 0.01, point)
        end
        pred = vec(map(c -> c[1], argmax(model(x); dims = 1)))
        v0 = verified(model, x, y, 0.0, RadiusSpec(:abs; lam = 0.0))
        @test v0 == (pred .== y)
        @test all(verified(model, x, y, 0.01, spec) .<= v0)
    end

    @testset "training" begin
        params = random_params(; T = Float32)
        x = random_images(RNG, 8; T = Float32)
        y = rand(RNG, 1:10, 8)
        spec = RadiusSpec(:tanh; lam = 0.01, clamp = 0.08)
        @testset "one SGD step is θ - lr·∇loss, then the clamp" begin
            model = cnn4(params...)
            loss, grad = APProp.loss_and_gradient(model, x, y, 0.01f0, spec; kappa = 0.5)
            g = APProp.cnn4_parameters(grad, model)
            t = APPTrainer(model, make_optimiser("sgd"; lr = 0.1, momentum = 0.9), spec)
            @test app_step!(t, x, y, 0.01f0) ≈ loss
            new = APProp.cnn4_parameters(t.model)
            expected = map((p, d) -> clamp.(p .- 0.1f0 .* d, -0.08f0, 0.08f0), params, g)
            @test all(map(
                (a, b) -> isapprox(a, b; rtol = 1.0e-5, atol = 1.0e-7),
                new,
                expected,
            ))
            @test all(p -> all(abs.(p) .<= 0.08f0), new)
        end
        @testset "a non-finite loss is returned and changes nothing" begin
            t = APPTrainer(cnn4(params...), make_optimiser("sgd"; lr = 0.1), spec)
            bad = copy(x)
            bad[1] = NaN32
            loss = app_step!(t, bad, y, 0.01f0) # no DomainError
            @test isnan(loss)
            @test all(map(==, APProp.cnn4_parameters(t.model), params))
            @test t.steps == 0
            @test isnan(app_epoch!(
                t,
                [(bad, y), (x, y)];
                schedule = i -> (0.01f0, spec.lam),
            ))
            @test t.steps == 0
            @test isfinite(app_step!(t, x, y, 0.01f0)) && t.steps == 1
        end
        @testset "TorchMomentum keeps PyTorch's velocity" begin
            st = Optimisers.setup(TorchMomentum(0.5, 0.9), [1.0])
            st, p = Optimisers.update(st, [1.0], [2.0]) # v = 2, p = 1 - 0.5·2
            st, p = Optimisers.update(st, p, [1.0])     # v = 0.9·2 + 1 = 2.8
            @test p ≈ [0.0 - 0.5 * 2.8]
        end
        @testset "TorchAdam takes PyTorch's first step" begin
            st = Optimisers.setup(TorchAdam(0.1), [1.0])
            st, p = Optimisers.update(st, [1.0], [2.0]) # m = 0.2, v = 0.004, t = 1
            @test p ≈ [1.0 - 0.1 / 0.1 * 0.2 / (sqrt(0.004) / sqrt(0.001) + 1.0e-8)]
            @test st.state[3] == 1
        end
        @testset "a restored optimiser state continues like the original ($name)" for name in (
                "sgd",
                "adam",
            )
            rule() = make_optimiser(name; lr = 1.0e-3, weight_decay = 5.0e-4)
            t = APPTrainer(cnn4(params...), rule(), spec)
            app_step!(t, x, y, 0.01f0)
            app_step!(t, x, y, 0.01f0)
            slots, step = optimiser_state(t)
            @test length(slots) == (name == "adam" ? 2 : 1)
            @test step == (name == "adam" ? 2 : 0)
            resumed = APPTrainer(cnn4(APProp.cnn4_parameters(t.model)...), rule(), spec)
            restore_optimiser_state!(resumed, slots, step)
            app_step!(t, x, y, 0.01f0)
            app_step!(resumed, x, y, 0.01f0)
            @test all(map(
                (a, b) -> isapprox(a, b; rtol = 1.0e-6),
                APProp.cnn4_parameters(resumed.model),
                APProp.cnn4_parameters(t.model),
            ))
            @test_throws DimensionMismatch restore_optimiser_state!(resumed, (), 0)
            # A shape error in the last parameter's slot is found before anything is written.
            before, before_step = optimiser_state(resumed)
            bad = map(s -> (s[1:(end - 1)]..., zeros(Float32, 3)), slots)
            @test_throws DimensionMismatch restore_optimiser_state!(resumed, bad, step + 5)
            after, after_step = optimiser_state(resumed)
            @test after == before && after_step == before_step
            # Float64 arrays (another eltype than the state's) are converted on the way in.
            restore_optimiser_state!(
                resumed,
                map(s -> map(a -> Float64.(a), s), slots),
                step,
            )
            @test first(optimiser_state(resumed)) == slots
            # Arrays that are not Arrays (as a PyArray with reversed strides) are made dense first
            # (on the CPU copyto! would take them anyway; a CuArray state would refuse them).
            rev(a) = (
                p = ntuple(k -> ndims(a) + 1 - k, ndims(a));
                PermutedDimsArray(permutedims(a, p), p)
            )
            restore_optimiser_state!(resumed, map(s -> map(rev, s), slots), step)
            @test optimiser_state(resumed) == (slots, step)
            # A bad step, a slot with too few arrays or an array that cannot be converted is
            # refused before anything is written: arrays and step stay as they were.
            @test_throws ArgumentError restore_optimiser_state!(resumed, slots, -1)
            @test_throws InexactError restore_optimiser_state!(resumed, slots, big(2)^70)
            @test_throws DimensionMismatch restore_optimiser_state!(
                resumed,
                map(s -> s[1:2], slots),
                step,
            )
            unconvertible = map(
                s -> (s[1:(end - 1)]..., fill(missing, size(s[end]))),
                slots,
            )
            @test_throws MethodError restore_optimiser_state!(resumed, unconvertible, step)
            @test optimiser_state(resumed) == (slots, step)
        end
        @testset "TorchAdam's documented constructors" begin
            @test TorchAdam(1.0e-3, (0.9, 0.99)) == TorchAdam(1.0e-3, (0.9, 0.99), 1.0e-8)
            @test TorchAdam(1.0e-3).beta == (0.9, 0.999)
        end
        @testset "an epoch lowers the worst-case loss on a fixed batch" begin
            t = APPTrainer(cnn4(params...), make_optimiser("adam"; lr = 1.0e-3), spec)
            before = worst_case_loss(t.model, x, y, 0.01f0, spec)
            app_epoch!(t, [(x, y) for _ in 1:5]; schedule = i -> (0.01f0, spec.lam))
            @test worst_case_loss(t.model, x, y, 0.01f0, spec) < before
            @test t.steps == 5
        end
    end

    @testset "bridge entry points (what Python calls)" begin
        params = random_params()
        x = random_images(RNG, 2)
        y = [3, 7]
        spec = RadiusSpec("abs"; lam = 0.01)
        model = APProp.api_model(params...; backend = "cpu")
        @test model isa Flux.Chain
        lo, hi = APProp.api_bounds(model, x, 0.01, spec; lam = 0.01, backend = "cpu")
        @test size(lo) == (10, 2) && all(lo .<= hi)
        loss, grads = APProp.api_loss_and_gradients(
            model,
            x,
            y,
            0.01,
            spec;
            lam = 0.01,
            kappa = 0.5,
            margin = false,
            backend = "cpu",
        )
        @test loss isa Float64 && isfinite(loss)
        @test map(size, grads) == map(size, params)
        @test APProp.api_verified(model, x, y, 0.0, spec; lam = 0.0) isa Vector{Bool}
        # engine.py's _labelled passes lam, backend and (for the loss) margin.
        wl = APProp.api_worst_case_loss(
            model,
            x,
            y,
            0.01,
            spec;
            lam = 0.01,
            margin = true,
            backend = "cpu",
        )
        @test wl isa Float64 && wl ≈ worst_case_loss(model, x, y, 0.01, spec; margin = true)
        mlo = APProp.api_margin_lower_bounds(
            model,
            x,
            y,
            0.01,
            spec;
            lam = 0.01,
            backend = "cpu",
        )
        @test mlo isa Matrix{Float64} && size(mlo) == (10, 2)
        @test mlo[3, 1] == 0 && mlo[7, 2] == 0 # 0 at the true class
        t = APProp.api_trainer(
            model,
            spec;
            optimiser = "sgd",
            lr = 0.1,
            weight_decay = 5.0e-4,
        )
        loss, worst, clean = APProp.api_step!(t, x, y, 0.01; lam = 0.01, lr = 0.05)
        @test isfinite(loss) && worst isa Float64 && clean isa Float64
        @test loss ≈ 0.5 * worst + 0.5 * clean # the trainer's kappa
        @test APProp.api_step!(t, x, y, 0.01; lam = 0.01, kappa = 0.0)[3] === nothing
        @test t.opt_state.layers[13].weight.rule.opts[2].eta ==
            0.05 # the lr reached the rule
        @test map(size, APProp.api_parameters(t)) == map(size, params)
    end

    @testset "devices" begin
        @test backend_available(:cpu)
        @test to_device([1.0], :cpu) == [1.0]
        if !backend_available(:cuda)
            @test_throws ArgumentError to_device([1.0], :cuda)
        end
    end
end
