"""The optimisation family: parameterisations, transforms, objectives, render_vis, Deep Dream, layer visualisation.

Small images (16-32 px), few steps and the tiny zoo net keep compilation cheap; the
Lucent comparisons live in tests/parity/test_lucent.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain.optimization import deep_dream, layer_visualization, render_vis, to_pil
from jaxplain.optimization import objectives as O
from jaxplain.optimization import param
from jaxplain.optimization import transforms as T
from tests.tiny import tiny_model

KEY = jax.random.PRNGKey(0)
RNG = np.random.default_rng(0)
TINY_OPTIONS = dict(param_f=param.image(16, batch=2), fixed_image_size=24)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def _two_layer_objectives():
    return [O.channel("conv2", n, batch=0) - O.layer("conv1", batch=1) / 4 for n in range(3)]


@pytest.fixture(scope="module")
def rendered(model):
    """Three objectives on two layers, two images each, standard transforms, thresholds (1, 3, 6), with losses."""
    return render_vis(model, _two_layer_objectives(), key=KEY, thresholds=(6, 1, 3), return_losses=True, **TINY_OPTIONS)


# --- parameterisations -------------------------------------------------------------------------


def test_fft_image_equals_numpy_reference():
    h, w = 6, 7
    spectrum = np.random.default_rng(0).standard_normal((2, h, w // 2 + 2, 3, 2)).astype(np.float32)
    freqs = np.sqrt(np.fft.fftfreq(w)[None, : w // 2 + 2] ** 2 + np.fft.fftfreq(h)[:, None] ** 2)
    scale = 1.0 / np.maximum(freqs, 1.0 / max(h, w))
    complex_spectrum = (spectrum[..., 0] + 1j * spectrum[..., 1]) * scale[None, :, :, None]
    reference = np.fft.irfftn(complex_spectrum[:, :, : w // 2 + 1], s=(h, w), axes=(1, 2), norm="ortho") / 4
    ours = param.fft_to_image(jnp.asarray(spectrum), h, w)
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_decorrelated_image_is_sigmoid_of_colour_mix():
    p = param.image(5, fft=False)
    pixels = p.init(KEY) * 100
    matrix = param.COLOR_CORRELATION_SVD_SQRT / np.linalg.norm(param.COLOR_CORRELATION_SVD_SQRT, axis=0).max()
    expected = 1 / (1 + np.exp(-(np.asarray(pixels) @ matrix.T)))
    np.testing.assert_allclose(p(pixels), expected, atol=1e-5)


def test_param_shapes_and_range():
    p = param.image(9, 6, batch=2)
    image = jax.jit(lambda key: p(p.init(key) * 500))(KEY)
    assert image.shape == p.shape == (2, 6, 9, 3)
    assert float(image.min()) >= 0 and float(image.max()) <= 1
    with pytest.raises(ValueError, match="decorrelation needs 3 channels"):
        param.ImageParam(w=4, h=4, channels=1)


# --- transforms -------------------------------------------------------------------------------


def test_transforms_keep_shapes_and_value_range():
    images = jnp.asarray(RNG.uniform(size=(2, 20, 18, 3)), jnp.float32)
    transforms = T.standard_transforms[1:]
    outputs = jax.jit(lambda key: [t(key, images) for t in transforms])(KEY)
    for transform, out in zip(transforms, outputs):
        assert out.shape == images.shape, transform
        assert float(out.min()) >= -1e-6 and float(out.max()) <= 1 + 1e-6, transform
    padded = T.pad(3, mode="constant", constant_value=0.5)(KEY, images)
    assert padded.shape == (2, 26, 24, 3)
    assert float(padded[:, 0].min()) == float(padded[:, 0].max()) == 0.5
    assert T.compose(T.standard_transforms)(KEY, images).shape == (2, 44, 42, 3)


def test_transform_geometry():
    images = jnp.asarray(RNG.uniform(size=(1, 9, 9, 3)), jnp.float32)
    np.testing.assert_allclose(T.rotate(images, jnp.pi / 2), jnp.rot90(images, 1, axes=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(T.random_scale([1.0])(KEY, images), images, atol=1e-6)
    np.testing.assert_allclose(T.random_rotate([0.0])(KEY, images), images, atol=1e-6)
    shifted = T.jitter(4)(KEY, images)
    dy, dx = (int(v) for v in T.random_index(KEY, 4, (2,)))
    np.testing.assert_array_equal(shifted[:, dy:, dx:], images[:, : 9 - dy, : 9 - dx])
    assert float(jnp.abs(shifted[:, :dy]).max(initial=0)) == 0


def test_transform_arguments_are_checked():
    with pytest.raises(ValueError, match="d must be an int above 1"):
        T.jitter(1)
    with pytest.raises(ValueError, match="mode"):
        T.pad(2, mode="wrap")
    with pytest.raises(ValueError, match="positive"):
        T.random_scale([0.0])


# --- objectives ---------------------------------------------------------------------------------


def test_objective_values_and_arithmetic():
    rng = np.random.default_rng(0)
    acts = {"a": jnp.asarray(rng.standard_normal((3, 4, 5, 6)), jnp.float32), "labels": jnp.arange(6.0)[None]}
    a = np.asarray(acts["a"])
    np.testing.assert_allclose(O.channel("a", 2)(acts), -a[..., 2].mean(), rtol=1e-6)
    np.testing.assert_allclose(O.channel("a", 2, batch=1)(acts), -a[1, ..., 2].mean(), rtol=1e-6)
    np.testing.assert_allclose(O.neuron("a", 1)(acts), -a[:, 2, 2, 1].mean(), rtol=1e-6)
    np.testing.assert_allclose(O.neuron("a", 1, x=4, y=0)(acts), -a[:, 0, 4, 1].mean(), rtol=1e-6)
    np.testing.assert_allclose(O.layer("a")(acts), -a.mean(), rtol=1e-6)
    np.testing.assert_allclose(O.channel("labels", 4)(acts), -4.0)
    d = rng.standard_normal(6)
    cosine = (a @ d) / np.linalg.norm(a, axis=-1) / np.linalg.norm(d)
    np.testing.assert_allclose(O.direction("a", d)(acts), -cosine.mean(), rtol=1e-5)
    combined = 2 * O.channel("a", 0) - O.channel("a", 1) / 4 + 1.5
    expected = 2 * O.channel("a", 0)(acts) - O.channel("a", 1)(acts) / 4 + 1.5
    np.testing.assert_allclose(combined(acts), expected, rtol=1e-6)
    np.testing.assert_allclose(
        sum(O.channel("a", n) for n in range(3))(acts), -a[..., :3].mean((0, 1, 2)).sum(), rtol=1e-5
    )
    assert O.as_objective("a:3") == O.channel("a", 3)
    assert combined.layers() == ("a",)


def test_diversity_equals_pairwise_reference():
    acts = jnp.asarray(RNG.standard_normal((3, 4, 4, 5)), jnp.float32)
    flat = np.asarray(acts).reshape(3, -1, 5)
    grams = [f.T @ f for f in flat]
    grams = [g / np.linalg.norm(g) for g in grams]
    reference = -sum((grams[i] * grams[j]).sum() for i in range(3) for j in range(3) if i != j) / 3
    np.testing.assert_allclose(O.diversity("a")({"a": acts}), reference, rtol=1e-5)


def test_objective_construction_errors():
    with pytest.raises(ValueError, match="layer:channel"):
        O.as_objective("features.8")
    with pytest.raises(TypeError, match="scaled by an int or float"):
        O.channel("a", 0) * O.channel("a", 1)
    with pytest.raises(TypeError, match="n_channel must be an int"):
        O.channel("a", 1.5)


# --- render_vis -------------------------------------------------------------------------------


def test_thresholds_give_one_image_per_step_in_order(rendered):
    images, losses = rendered
    assert images.shape == (3, 6, 16, 16, 3)
    assert losses.shape == (6, 3)
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    assert not np.allclose(images[0], images[2])


def test_same_key_same_image(model, rendered):
    again = render_vis(model, _two_layer_objectives(), key=KEY, thresholds=(1, 3, 6), **TINY_OPTIONS)
    np.testing.assert_array_equal(again, rendered[0])
    other = render_vis(model, _two_layer_objectives(), key=jax.random.PRNGKey(1), thresholds=(1, 3, 6), **TINY_OPTIONS)
    assert not np.allclose(other, rendered[0])


def _function_model():
    """A bare JAX function (pixel-wise layer, ReLU, mean, dense): only ``"labels"`` objectives apply."""
    pixelwise = jnp.asarray(np.random.default_rng(3).standard_normal((3, 4)), jnp.float32)
    dense = jnp.asarray(np.random.default_rng(4).standard_normal((4, 5)), jnp.float32)

    def forward(x):
        return jax.nn.relu(x @ pixelwise).mean((1, 2)) @ dense

    return forward


LABEL_OPTIONS = dict(key=KEY, param_f=param.image(8, batch=2, fft=False), transforms=(T.jitter(2),), fixed_image_size=8)


def test_structures_and_independence_of_objectives():
    whole = render_vis(_function_model(), ["labels:2", "labels:3"], thresholds=(1, 3), **LABEL_OPTIONS)
    mixed = ["labels:2", O.channel("labels", 0) - O.diversity("labels") / 2, "labels:3"]
    images, losses = render_vis(_function_model(), mixed, thresholds=(1, 3), return_losses=True, **LABEL_OPTIONS)
    assert images.shape == (2, 6, 8, 8, 3) and losses.shape == (3, 3)
    np.testing.assert_allclose(images[:, :2], whole[:, :2], atol=1e-6)
    assert not np.allclose(images[:, 4:], whole[:, 2:])


def test_jit_and_chunks_equal_no_jit_in_one_batch():
    options = {**LABEL_OPTIONS, "transforms": (), "thresholds": (1, 2)}
    jitted_chunks = render_vis(_function_model(), ["labels:2", "labels:4"], batch_size=1, **options)
    with jax.disable_jit():
        eager = render_vis(_function_model(), ["labels:2", "labels:4"], **options)
    np.testing.assert_allclose(jitted_chunks, eager, atol=1e-5)


def test_objective_rises_on_converted_model(seeded_torchvision_model):
    import converters

    model = converters.from_torch(seeded_torchvision_model("vgg11", num_classes=10), input_shape=(1, 32, 32, 3))
    objectives = [O.channel("features.3", n) for n in (0, 5)]
    _, losses = render_vis(
        model,
        objectives,
        key=KEY,
        param_f=param.image(32),
        transforms=(),
        thresholds=(16,),
        fixed_image_size=32,
        return_losses=True,
    )
    start, end = np.asarray(losses[:3]).mean(0), np.asarray(losses[-3:]).mean(0)
    assert np.all(end < start - 0.1 * np.abs(start)), (start, end)


def test_render_vis_errors(model):
    with pytest.raises(ValueError, match="unknown layer 'conv9'"):
        render_vis(model, "conv9:0", key=KEY, **TINY_OPTIONS)
    with pytest.raises(ValueError, match=r"channel \[6\] out of range"):
        render_vis(model, [O.channel("conv2", 0), O.channel("conv2", 6)], key=KEY, **TINY_OPTIONS)
    with pytest.raises(ValueError, match=r"x \[7\] out of range"):
        render_vis(model, O.neuron("conv2", 0, x=7), key=KEY, transforms=(), param_f=param.image(8), fixed_image_size=8)
    with pytest.raises(ValueError, match="thresholds"):
        render_vis(model, "conv2:0", key=KEY, thresholds=(0, 4), **TINY_OPTIONS)
    with pytest.raises(ValueError, match="thresholds"):
        render_vis(model, "conv2:0", key=KEY, thresholds=(), **TINY_OPTIONS)
    with pytest.raises(ValueError, match="stochastic"):
        render_vis(model, "conv2:0", **TINY_OPTIONS)
    with pytest.raises(ValueError, match=r"batch \[2\] out of range"):
        render_vis(model, O.channel("conv2", 0, batch=2), key=KEY, **TINY_OPTIONS)
    with pytest.raises(TypeError, match="bare function"):
        render_vis(lambda x: x.mean((1, 2)), "conv2:0", key=KEY, **TINY_OPTIONS)


# --- pytorch-cnn-visualizations -------------------------------------------------------------------


def _channel_mean(model, layer, channel, images):
    from jaxplain.optimization._loop import activations, model_stats

    mean, std = model_stats(model)
    return float(
        activations(model, (layer,), (images - jnp.asarray(mean)) / jnp.asarray(std))[layer][..., channel].mean()
    )


def test_layer_visualization_raises_the_filter(model):
    images = layer_visualization(model, layer="conv2", filter=[1, 3], key=KEY, steps=8, size=16)
    assert images.shape == (2, 16, 16, 3)
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    start = jax.random.randint(jax.random.split(KEY, 2)[0], (1, 16, 16, 3), 150, 180) / 255.0
    assert _channel_mean(model, "conv2", 1, images[:1]) > _channel_mean(model, "conv2", 1, start)
    with pytest.raises(ValueError, match=r"channel \[9\] out of range"):
        layer_visualization(model, layer="conv2", filter=9, key=KEY, steps=1, size=16)


def test_deep_dream_raises_the_filter(model):
    images = jnp.asarray(RNG.uniform(0.2, 0.8, size=(2, 16, 16, 3)), jnp.float32)
    dreamt = deep_dream(
        model, images, layer="conv1", filter=2, steps=4, octaves=2, jitter=2, key=KEY, learning_rate=0.5
    )
    assert dreamt.shape == images.shape and float(dreamt.min()) >= 0 and float(dreamt.max()) <= 1
    assert _channel_mean(model, "conv1", 2, dreamt) > _channel_mean(model, "conv1", 2, images)
    with pytest.raises(ValueError, match="stochastic"):
        deep_dream(model, images, layer="conv1", filter=2, steps=2, jitter=2)
    with pytest.raises(ValueError, match="unknown layer"):
        deep_dream(model, images, layer="conv3", filter=2, steps=2)


# --- helpers ------------------------------------------------------------------------------------


def test_to_pil():
    pictures = to_pil(jnp.linspace(-1, 2, 2 * 3 * 4 * 3).reshape(2, 3, 4, 3))
    assert len(pictures) == 2 and pictures[0].size == (4, 3)
    assert np.asarray(pictures[1]).max() == 255 and np.asarray(pictures[0]).min() == 0


def test_fast_conv_gradient_equals_autodiff():
    """The CPU node rule's input and kernel gradients equal autodiff's on a strided, padded convolution."""
    from jaxplain import program
    from jaxplain.cpu import fast_conv

    def conv(params, x):
        return jax.lax.conv_general_dilated(x, params["kernel"], (3, 3), ((2, 2), (2, 2)),
                                            dimension_numbers=fast_conv.DIMENSIONS) + params["bias"]

    x = jnp.asarray(RNG.standard_normal((2, 13, 12, 3)), jnp.float32)
    params = {"kernel": jnp.asarray(RNG.standard_normal((5, 5, 3, 4)), jnp.float32), "bias": jnp.ones(4)}
    model = jx.Model.from_function(conv, params)
    graph = program.graph_of(model, x)
    assert [node.primitive for node in graph.nodes if fast_conv.node_rules(node) is not None] == ["conv_general_dilated"]

    @jax.jit
    def both(p, x):
        reference = jax.grad(lambda p, x: jnp.sum(conv(p, x) ** 2), (0, 1))(p, x)
        fast = jax.grad(lambda p, x: jnp.sum(program.forward(jx.Model.from_function(conv, p),
                                                             node_rules=fast_conv.node_rules)(x) ** 2), (0, 1))(p, x)
        return reference, fast

    reference, ours = both(params, x)
    np.testing.assert_allclose(ours[1], reference[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours[0]["kernel"], reference[0]["kernel"], rtol=1e-5, atol=1e-5)


