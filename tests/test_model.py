"""Random25DUNet: M → U → F → R → T."""

import pytest
import torch

from vol25d.geometry import default_detector, random_directions
from vol25d.model import ModelConfig, Random25DUNet, conv3x3x3

SMALL = dict(channels=(4, 8, 16), strides=(2, 2), num_res_units=1, directions=8, views=3, reconstruction="seed")


def drawn(model: Random25DUNet, seed: int = 0) -> torch.Tensor:
    """The p directions of one training step, as training draws them."""
    return random_directions(model.config.directions, model.config.views, torch.Generator().manual_seed(seed))


def test_output_shape_any_size_at_least_8():
    model = Random25DUNet(2, 3, **SMALL)
    for shape in [(8, 8, 8), (9, 13, 10), (12, 8, 11)]:
        x = torch.rand(2, 2, *shape)
        model.train()
        assert model(x, drawn(model)).shape == (2, 3, *shape)
        model.eval()
        with torch.no_grad():
            out = model(x)
        assert out.shape == (2, 3, *shape)
        assert torch.all((out >= 0) & (out <= 1))


def test_training_draws_p_directions_reproducibly():
    model = Random25DUNet(1, 1, **SMALL)
    generator = torch.Generator().manual_seed(7)
    first = [random_directions(8, 3, generator) for _ in range(3)]
    generator.manual_seed(7)
    again = [random_directions(8, 3, generator) for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert all(a.numel() == 3 and torch.equal(a, a.sort().values) for a in first)
    assert all(set(a.tolist()) <= set(model.angles.tolist()) for a in first)
    assert not all(torch.equal(first[0], a) for a in first[1:])


def test_a_training_step_must_pass_its_directions():
    model = Random25DUNet(1, 1, **SMALL).train()
    with pytest.raises(ValueError, match="random_directions"):
        model(torch.rand(1, 1, 8, 8, 8))


def test_eval_chunks_give_the_same_result_as_one_pass():
    torch.manual_seed(0)
    x = torch.rand(1, 1, 10, 12, 12)
    chunked = Random25DUNet(1, 2, view_chunk=3, **SMALL).eval()
    whole = Random25DUNet(1, 2, view_chunk=8, **SMALL).eval()
    whole.load_state_dict(chunked.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(chunked(x), whole(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("reconstruction", ["seed", "image"])
def test_all_views_then_segment_from_views_is_the_eval_forward(reconstruction):
    """Path 2's two steps (U's views of all m directions, cached; T ∘ R ∘ F of them) give what inference gives."""
    torch.manual_seed(0)
    model = Random25DUNet(1, 2, view_chunk=3, **dict(SMALL, reconstruction=reconstruction)).eval()
    x = torch.rand(1, 1, 10, 12, 12)
    with torch.no_grad():
        probabilities, image_views = model.all_view_probabilities(x)
        bins = default_detector(12, 12)
        assert probabilities.shape == (1, 2, 8, 10, bins) and probabilities.dtype == torch.float32
        assert (image_views is None) == (reconstruction == "seed")
        if image_views is not None:
            assert image_views.shape == (1, 1, 8, 10, bins)
        torch.testing.assert_close(model.segment_from_views(probabilities, x, image_views), model(x),
                                   atol=1e-5, rtol=1e-4)


def test_forward_is_the_method_step_by_step():
    torch.manual_seed(0)
    model = Random25DUNet(1, 1, **SMALL).eval()
    x = torch.rand(1, 1, 8, 10, 10)
    angles = model.angles
    with torch.no_grad():
        views = model.projections(x, angles)
        probabilities = model.view_probabilities(views)
        volume = model.reconstruct(probabilities, angles, (10, 10))
        torch.testing.assert_close(model(x), model.head(volume, x), atol=1e-5, rtol=1e-4)
    assert views.shape == (1, 1, 8, 8, 16)  # ⌈√200⌉ = 15, made even like H


def test_sum_projection_and_softmax_options():
    model = Random25DUNet(1, 2, projection="sum", activation="softmax", head_norm="instance", **SMALL).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 1, 8, 8, 8))
    assert torch.all(out.sum(1) <= 1 + 1e-5)


def test_gradients_reach_unet_filtration_and_head():
    model = Random25DUNet(1, 1, **SMALL).train()
    model(torch.rand(1, 1, 8, 8, 8), drawn(model)).mean().backward()
    for name in ("unet", "filtration", "head"):
        grads = [p.grad for p in getattr(model, name).parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name


def test_freeze_unet_keeps_filtration_and_head_trainable():
    model = Random25DUNet(1, 1, **SMALL)
    model.freeze_unet()
    model.train()
    assert not model.unet.training
    model(torch.rand(1, 1, 8, 8, 8), drawn(model)).mean().backward()
    assert all(p.grad is None for p in model.unet.parameters())
    assert model.filtration.kernel.grad is not None


@pytest.mark.parametrize("reconstruction", ["seed", "image"])
def test_activation_checkpointing_gives_the_same_gradients(reconstruction):
    torch.manual_seed(0)
    x = torch.rand(1, 1, 8, 8, 8)
    settings = dict(SMALL, reconstruction=reconstruction)
    plain = Random25DUNet(1, 1, **settings)
    checkpointed = Random25DUNet(1, 1, checkpoint_views=1, **settings)
    checkpointed.load_state_dict(plain.state_dict())
    for model in (plain, checkpointed):
        model.train()(x, drawn(model, 3)).sum().backward()
    for mine, theirs in zip(checkpointed.parameters(), plain.parameters()):  # summed in another order: float32
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-5, atol=1e-4)


def test_training_step_keeps_no_per_view_copy_of_the_volume():
    """No tensor saved for backward is as large as p × D × H × W: M keeps nothing, R and F keep views."""
    torch.manual_seed(0)
    p, depth, height, width = 8, 8, 64, 64
    model = Random25DUNet(1, 1, directions=32, views=p).train()
    x = torch.rand(1, 1, depth, height, width)
    weights = {param.data_ptr() for param in model.parameters()}
    sizes = []

    def pack(tensor):
        if tensor.data_ptr() not in weights:  # the weights are kept anyway; activations are what count
            sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(x, drawn(model)).mean()
    loss.backward()
    assert len(sizes) > 10, "the hook saw the graph"
    assert max(sizes) < p * depth * height * width


def test_config_round_trip_and_validation():
    config = ModelConfig(in_channels=2, out_channels=3, channels=[4, 8], strides=[2])
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="views"):
        ModelConfig(directions=4, views=8)
    with pytest.raises(ValueError, match="projection"):
        ModelConfig(projection="max")
    with pytest.raises(ValueError, match="unknown model settings"):
        ModelConfig.from_dict({"colour": 1})


def test_bad_input_names_the_problem():
    model = Random25DUNet(2, 1, **SMALL)
    with pytest.raises(ValueError, match="expects 2"):
        model(torch.rand(1, 1, 8, 8, 8))
    with pytest.raises(ValueError, match="at least 8"):
        model(torch.rand(1, 2, 4, 8, 8))
    with pytest.raises(ValueError, match="5-D"):
        model(torch.rand(2, 8, 8, 8))


@pytest.mark.parametrize("pool", ["avg", "learned", "none"])
def test_head_pool_options_start_as_documented(pool):
    model = Random25DUNet(1, 1, head_pool=pool, **SMALL)
    volume = torch.zeros(1, 1, 8, 8, 8)
    volume[0, 0, 4, 4, 4] = 1.0
    logits = model.head.logits(volume, torch.rand(1, 1, 8, 8, 8))  # T's image correction starts at zero
    centre = (logits[0, 0, 4, 4, 4] - model.head.shift) / model.head.scale
    expected = {"avg": 1 / 27, "learned": 1 / 27, "none": 1.0}[pool]
    assert torch.isclose(centre, torch.tensor(expected), atol=1e-6).all()


def test_head_reads_the_image_through_one_convolution_that_starts_at_zero():
    torch.manual_seed(0)
    model = Random25DUNet(2, 3, **SMALL).eval()
    assert model.config.head_image and model.head.context.weight.shape == (3, 5, 3, 3, 3)
    assert not model.head.context.weight.any()
    x, volume = torch.rand(1, 2, 8, 10, 10), torch.rand(1, 3, 8, 10, 10)
    plain = volume * model.head.scale.view(1, -1, 1, 1, 1) + model.head.shift.view(1, -1, 1, 1, 1)
    torch.testing.assert_close(model.head.logits(volume, x), plain)
    # What it adds: the convolution of [r, image] in r's units, before the affine threshold.
    with torch.no_grad():
        model.head.context.weight.normal_()
    correction = torch.nn.functional.conv3d(torch.nn.functional.pad(torch.cat([volume, x], 1), (1,) * 6, mode="replicate"),
                                            model.head.context.weight)
    expected = (volume + correction) * model.head.scale.view(1, -1, 1, 1, 1) + model.head.shift.view(1, -1, 1, 1, 1)
    torch.testing.assert_close(model.head.logits(volume, x), expected, atol=1e-4, rtol=1e-4)
    # The image matters: a brighter image changes the output.
    with torch.no_grad():
        assert not torch.allclose(model(x), model(x * 2))
    with pytest.raises(ValueError, match="reads the image"):
        model.head(volume)
    without = Random25DUNet(2, 3, head_image=False, **SMALL)
    assert without.head.context is None and "context.weight" not in "".join(without.state_dict())
    without.head(volume)  # needs no image
    with pytest.raises(ValueError, match="head_image must be true or false"):
        ModelConfig(head_image="yes")


@pytest.mark.parametrize("shape", [(2, 3, 5, 7, 6), (1, 2, 1, 4, 1)])
def test_slice_wise_convolution_is_conv3d_with_replicate_padding(shape):
    # The CPU's way (2-D convolutions of the depth slices) and CUDA's (conv3d), against nn.Conv3d itself,
    # values and gradients, for a batch, several classes and a volume one slice thick.
    torch.manual_seed(0)
    reference = torch.nn.Conv3d(shape[1], 2, 3, padding=1, bias=False, padding_mode="replicate").double()
    inputs = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    expected = reference(inputs)
    grad_out = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, (inputs, reference.weight), grad_out)
    for by_slices in (True, False):
        out = conv3x3x3(inputs, reference.weight, by_slices=by_slices)
        assert out.shape == expected.shape and out.is_contiguous()
        torch.testing.assert_close(out, expected)
        for got, want in zip(torch.autograd.grad(out, (inputs, reference.weight), grad_out), expected_grads):
            torch.testing.assert_close(got, want)


def test_filtration_starts_as_documented():
    torch.manual_seed(0)
    views = torch.rand(1, 1, 8, 6, 16)
    identity = Random25DUNet(1, 1, **SMALL)
    torch.testing.assert_close(identity.filtration(views), views)
    # R ∘ F starts as the views' mean: a voxel every view sees as object gets 1, the head's threshold is 0.9.
    ones = identity.reconstruct(torch.ones(1, 1, 8, 6, 16), identity.angles, (10, 10))
    torch.testing.assert_close(ones, torch.ones_like(ones))
    r = torch.tensor([0.85, 0.95]).view(1, 1, 2, 1, 1)
    assert identity.head.logits(r, torch.rand_like(r)).flatten().sign().tolist() == [-1, 1]
    assert identity.config.filter_radius == 8
    ramlak = Random25DUNet(1, 1, filter_init="ramlak", **SMALL)
    radius = ramlak.config.filter_radius
    assert radius == 96
    assert torch.isclose(ramlak.filtration.kernel[0, radius], torch.tensor(torch.pi / 4))
    assert ramlak.filtration.kernel[0, radius + 1] < 0  # the ramp's negative lobe
    with pytest.raises(ValueError, match="filter_init"):
        ModelConfig(filter_init="hann")


@pytest.mark.parametrize("fixed_dc", [True, False])
def test_filtration_keeps_its_dc_gain_when_asked(fixed_dc):
    torch.manual_seed(0)
    model = Random25DUNet(1, 1, filter_fixed_dc=fixed_dc, **SMALL)
    optimizer = torch.optim.SGD(model.filtration.parameters(), lr=0.1)
    for _ in range(3):
        views = torch.rand(1, 1, 8, 6, 20)
        loss = -model.filtration(views)[..., 4:16].sum()  # pushes every tap up: the DC gain would grow
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    gain = float(model.filtration.effective_kernel().detach().sum())
    if fixed_dc:
        assert gain == pytest.approx(1.0, abs=1e-5)
        # A view set that is object everywhere reconstructs to 1 inside, whatever the plane's size.
        for size in (12, 40):
            plane = model.reconstruct(torch.ones(1, 1, 8, 4, 4 * size), model.angles, (size, size))[0, 0, 2]
            centre = plane[size // 2 - 2 : size // 2 + 2, size // 2 - 2 : size // 2 + 2]
            torch.testing.assert_close(centre, torch.ones_like(centre))
    else:
        assert gain > 1.5


IMAGE = dict(SMALL, reconstruction="image")


def test_image_reconstruction_is_the_explained_back_projection_step_by_step():
    from vol25d.ops import backproject_explained

    torch.manual_seed(0)
    model = Random25DUNet(2, 1, **IMAGE).eval()
    x = torch.rand(1, 2, 8, 10, 10)
    angles = model.angles
    with torch.no_grad():
        views = model.projections(x, angles)
        probabilities = model.view_probabilities(views)
        volume = model.reconstruct(probabilities, angles, (10, 10), x, views)
        margin, softness = torch.full((1,), 0.1), torch.full((1,), 0.3)
        expected = backproject_explained(model.filtration(probabilities), views[:, :1], x[:, :1], angles, margin,
                                         softness) / angles.numel()
        torch.testing.assert_close(volume, expected)
        torch.testing.assert_close(model(x), model.head(volume, x), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="needs the image and its views"):
        model.reconstruct(probabilities, angles, (10, 10))


def test_image_reconstruction_chunks_and_trains_its_margin_and_softness():
    torch.manual_seed(0)
    x = torch.rand(1, 1, 10, 12, 12)
    chunked = Random25DUNet(1, 2, view_chunk=3, **IMAGE).eval()
    whole = Random25DUNet(1, 2, view_chunk=8, **IMAGE).eval()
    whole.load_state_dict(chunked.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(chunked(x), whole(x), atol=1e-5, rtol=1e-4)
    model = Random25DUNet(1, 2, **IMAGE).train()
    model(x, drawn(model)).mean().backward()
    for param in (model.explanation.margin, model.explanation.log_softness, model.filtration.kernel):
        assert param.grad is not None and float(param.grad.abs().sum()) > 0
    assert any(float(p.grad.abs().sum()) > 0 for p in model.unet.parameters())


def test_image_reconstruction_keeps_no_per_view_copy_of_the_volume():
    torch.manual_seed(0)
    p, depth, height, width = 8, 8, 32, 32
    model = Random25DUNet(1, 1, directions=16, views=p, channels=(4, 8), strides=(2,), reconstruction="image").train()
    x = torch.rand(1, 1, depth, height, width)
    weights = {param.data_ptr() for param in model.parameters()}
    sizes = []

    def pack(tensor):
        if tensor.data_ptr() not in weights:
            sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(x, drawn(model)).mean()
    loss.backward()
    assert max(sizes) < p * depth * height * width


def test_image_reconstruction_needs_the_mip():
    with pytest.raises(ValueError, match="needs projection='mip'"):
        ModelConfig(reconstruction="image", projection="sum")
    with pytest.raises(ValueError, match="reconstruction must be one of"):
        ModelConfig(reconstruction="hull")


def test_the_default_reconstruction_is_the_image_one_for_mips_and_the_seed_one_for_sums():
    assert ModelConfig().reconstruction == "image" and ModelConfig(projection="sum").reconstruction == "seed"
    assert ModelConfig.from_dict({"reconstruction": None}) == ModelConfig()
    assert ModelConfig.from_dict(ModelConfig(projection="sum").to_dict()).reconstruction == "seed"  # saved resolved
    assert Random25DUNet(1, 1, **dict(SMALL, reconstruction=None)).explanation is not None
