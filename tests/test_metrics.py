"""Known answers, chance levels and input checks of jaxplain.metrics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import scipy.stats

import jaxplain as jx
from jaxplain import metrics
from tests.tiny import TinyNet

KEY = jax.random.PRNGKey(0)


def numpy_tiny_model(seed: int = 0) -> jx.Model:
    """TinyNet with NumPy-drawn weights: initialising with jax.random compiles for ~15 s on a loaded CPU."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(TinyNet().init, KEY, jax.ShapeDtypeStruct((1, 12, 10, 3), jnp.float32))
    draw = lambda low, high: lambda s: jnp.asarray(rng.uniform(low, high, s.shape), jnp.float32)
    params = jax.tree_util.tree_map(draw(-0.5, 0.5), shapes["params"])
    stats = jax.tree_util.tree_map(draw(0.5, 1.5), shapes["batch_stats"])
    return jx.Model(TinyNet(), {"params": params, "batch_stats": stats}, input_channels=3)


@pytest.fixture(scope="module")
def model():
    return numpy_tiny_model()


@pytest.fixture(scope="module")
def inputs():
    return jnp.asarray(np.random.default_rng(1).normal(size=(3, 12, 10, 3)), jnp.float32)


def _box_masks(count, size=16, seed=0):
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, size, size), bool)
    for mask in masks:
        top, left = rng.integers(0, size - 6, 2)
        mask[top : top + 6, left : left + 5] = True
    return masks


def test_a_perfect_map_hits_and_holds_all_the_energy():
    masks = _box_masks(5)
    perfect = masks[..., None].astype(np.float32)
    assert bool(jnp.all(metrics.pointing_game(perfect, masks, tolerance=0)))
    assert bool(jnp.all(metrics.pointing_game(perfect[..., 0], masks)))
    np.testing.assert_allclose(metrics.mask_energy(perfect, masks), 1.0)


def test_pointing_game_tolerance_is_a_euclidean_radius():
    mask = np.zeros((1, 20, 20), bool)
    mask[0, 5:8, 5:8] = True
    peaked = np.zeros((1, 20, 20), np.float32)
    peaked[0, 10, 11] = 1.0  # 3 rows below and 4 columns right of the corner (7, 7): distance 5
    hits = [bool(metrics.pointing_game(peaked, mask, tolerance=t)[0]) for t in (0, 4, 5, 15)]
    assert hits == [False, False, True, True]


def test_pointing_game_needs_every_maximum_inside():
    mask = np.zeros((1, 10, 10), bool)
    mask[0, :5] = True
    two_peaks = np.zeros((1, 10, 10), np.float32)
    two_peaks[0, 1, 1] = two_peaks[0, 8, 8] = 1.0
    assert not bool(metrics.pointing_game(two_peaks, mask, tolerance=0)[0])
    assert not bool(metrics.pointing_game(np.ones((1, 10, 10)), mask, tolerance=0)[0])
    assert bool(metrics.pointing_game(np.ones((1, 10, 10)), np.ones((1, 10, 10), bool), tolerance=0)[0])
    assert not bool(metrics.pointing_game(np.ones((1, 10, 10)), np.zeros((1, 10, 10), bool))[0])


def test_random_maps_score_chance():
    masks = _box_masks(400, seed=1)
    maps = np.random.default_rng(2).uniform(size=masks.shape + (3,)).astype(np.float32)
    area = 30 / 256
    assert abs(float(metrics.mask_energy(maps, masks).mean()) - area) < 0.01
    assert abs(float(metrics.pointing_game(maps, masks, tolerance=0).mean()) - area) < 0.05
    negative = -maps
    np.testing.assert_array_equal(metrics.mask_energy(negative, masks), 0.0)


def _mask_mean_model(mask):
    region = jnp.asarray(mask, jnp.float32)[None, :, :, None]

    def forward(x):
        score = 8.0 * (jnp.sum(x * region, axis=(1, 2, 3)) / (3 * jnp.sum(region)) - 0.5)
        return jnp.stack([score, jnp.zeros_like(score)], axis=1)

    return forward


def test_mask_aligned_maps_delete_and_insert_best():
    mask = np.zeros((16, 16), bool)
    mask[4:10, 5:12] = True
    forward = _mask_mean_model(mask)
    images = jnp.broadcast_to(jnp.asarray(mask, jnp.float32)[None, :, :, None], (2, 16, 16, 3))
    images = images + 0.1 * np.random.default_rng(3).uniform(size=images.shape).astype(np.float32)
    aligned = jnp.broadcast_to(jnp.asarray(mask, jnp.float32)[None, :, :, None], images.shape)
    inverse = 1.0 - aligned
    options = dict(steps=16)
    assert bool(jnp.all(metrics.deletion_auc(forward, images, aligned, 0, **options)
                        < metrics.deletion_auc(forward, images, inverse, 0, **options) - 0.2))
    assert bool(jnp.all(metrics.insertion_auc(forward, images, aligned, 0, **options)
                        > metrics.insertion_auc(forward, images, inverse, 0, **options) + 0.2))


def _explicit_curve(forward, image, attribution, target, start, counts, insertion, softmax=True):
    """The deletion/insertion curve pixel by pixel, in Python."""
    saliency = attribution.sum(-1).ravel()
    order = sorted(range(saliency.size), key=lambda p: (-saliency[p], p))
    curve = []
    for count in counts:
        changed = np.zeros(saliency.size, bool)
        changed[order[:count]] = True
        changed = changed.reshape(image.shape[:2] + (1,))
        shown = np.where(changed, image, start) if insertion else np.where(changed, start, image)
        outputs = np.asarray(forward(jnp.asarray(shown[None])))[0]
        if softmax:
            outputs = np.exp(outputs - outputs.max()) / np.exp(outputs - outputs.max()).sum()
        curve.append(outputs[target])
    return np.asarray(curve)


@pytest.mark.parametrize(
    "steps,pixels_per_step,counts,batch_size",
    [(4, None, [0, 1, 2, 3, 4], None), (2, None, [0, 2, 4], 2), (4, 3, [0, 3, 4], None)],
)
def test_tiny_deletion_curve_matches_an_explicit_loop(steps, pixels_per_step, counts, batch_size):
    weights = jnp.asarray([[1.0, -0.5], [2.0, 0.3], [-1.0, 0.7], [0.5, 0.1]])
    forward = lambda x: x.reshape(x.shape[0], -1) @ weights
    image = np.asarray([[[1.0], [2.0]], [[3.0], [4.0]]], np.float32)
    attribution = np.asarray([[[0.5], [2.0]], [[2.0], [-1.0]]], np.float32)  # a tie: pixel 1 before pixel 2
    for scores in ("softmax", "logits"):
        auc, curve = metrics.deletion_auc(
            forward, image[None], attribution[None], 0, steps=steps, pixels_per_step=pixels_per_step,
            scores=scores, batch_size=batch_size, return_curves=True,
        )
        zeros = np.zeros_like(image)
        expected = _explicit_curve(forward, image, attribution, 0, zeros, counts, False, scores == "softmax")
        np.testing.assert_allclose(curve[0], expected, rtol=1e-6)
        np.testing.assert_allclose(auc[0], np.trapezoid(expected, np.asarray(counts) / 4), rtol=1e-6)
    baseline = np.full_like(image, 0.5)
    curve = metrics.insertion_auc(
        forward, image[None], attribution[None], 1, steps=steps, pixels_per_step=pixels_per_step,
        substrate=baseline, return_curves=True,
    )[1]
    expected = _explicit_curve(forward, image, attribution, 1, baseline, counts, True)
    np.testing.assert_allclose(curve[0], expected, rtol=1e-6)


def test_equal_steps_give_the_rise_authors_area(model, inputs):
    attributions = jx.saliency(model, inputs, 1)
    auc, curves = metrics.deletion_auc(model, inputs, attributions, 1, pixels_per_step=10, return_curves=True)
    rise_auc = (curves.sum(1) - curves[:, 0] / 2 - curves[:, -1] / 2) / (curves.shape[1] - 1)
    np.testing.assert_allclose(auc, rise_auc, rtol=1e-5)
    np.testing.assert_allclose(curves[:, 0], jax.nn.softmax(model(inputs))[:, 1], rtol=1e-5)


def test_blur_is_the_rise_authors_kernel_with_zero_padding():
    images = np.random.default_rng(4).uniform(size=(2, 14, 13, 3)).astype(np.float32)
    dirac = np.zeros((11, 11))
    dirac[5, 5] = 1.0
    kernel = scipy.ndimage.gaussian_filter(dirac, 5.0)
    channels = [[scipy.ndimage.convolve(image[..., c], kernel, mode="constant") for c in range(3)] for image in images]
    expected = np.transpose(channels, (0, 2, 3, 1))
    np.testing.assert_allclose(metrics.gaussian_blur(jnp.asarray(images)), expected, atol=1e-6)


def test_completeness_of_integrated_gradients_on_a_linear_model():
    rng = np.random.default_rng(5)
    weights = jnp.asarray(rng.normal(size=(27, 4)), jnp.float32)
    linear = lambda x: x.reshape(x.shape[0], -1) @ weights
    x = jnp.asarray(rng.normal(size=(2, 3, 3, 3)), jnp.float32)
    attributions = jx.integrated_gradients(linear, x, 2, n_steps=5)
    np.testing.assert_allclose(metrics.completeness(linear, attributions, x, 2), 0.0, atol=1e-4)
    gap = metrics.completeness(linear, 2 * attributions, x, 2)
    np.testing.assert_allclose(gap, jnp.abs(attributions.sum((1, 2, 3))), rtol=1e-5)


def test_spearman_equals_scipy_with_ties():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 6, (4, 7, 5)).astype(np.float32)
    b = np.where(rng.random((4, 7, 5)) < 0.5, rng.integers(0, 3, (4, 7, 5)), rng.normal(size=(4, 7, 5)))
    b = b.astype(np.float32)
    expected = [scipy.stats.spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b)]
    np.testing.assert_allclose(metrics.spearman(a, b), expected, rtol=1e-5)
    np.testing.assert_allclose(metrics.spearman(a, a), 1.0, rtol=1e-6)


def test_randomisation_changes_the_gradient_and_repeats_with_the_key(model, inputs):
    target = jnp.array([0, 3, 4])
    cascading = metrics.randomisation_sanity(jx.saliency, model, inputs, target, key=KEY)
    assert list(cascading) == ["fc", "conv2", "bn1", "conv1"]
    assert all(value.shape == (3,) for value in cascading.values())
    assert float(cascading["conv1"].max()) < 0.9
    again = metrics.randomisation_sanity(jx.saliency, model, inputs, target, key=KEY)
    for name in cascading:
        np.testing.assert_array_equal(again[name], cascading[name])
    independent = metrics.randomisation_sanity(
        jx.saliency, model, inputs, target, key=KEY, order="independent", layers=["conv2", "fc"]
    )
    assert list(independent) == ["fc", "conv2"]
    np.testing.assert_allclose(independent["fc"], cascading["fc"], rtol=1e-6)
    other = metrics.randomisation_sanity(jx.saliency, model, inputs, target, key=jax.random.PRNGKey(1), layers="fc")
    assert not np.allclose(other["fc"], cascading["fc"])
    ssim = metrics.randomisation_sanity(jx.saliency, model, inputs, target, key=KEY, layers="conv1", similarity="ssim")
    assert ssim["conv1"].shape == (3,) and float(ssim["conv1"].max()) < 0.9


def test_randomize_parameters_is_pure_and_layerwise(model):
    params = model.variables["params"]
    one = metrics.randomize_parameters(params, ["fc"], KEY)
    two = metrics.randomize_parameters(params, ["conv1", "fc"], KEY)
    np.testing.assert_array_equal(one["fc"]["kernel"], two["fc"]["kernel"])
    np.testing.assert_array_equal(one["conv1"]["kernel"], params["conv1"]["kernel"])
    assert not np.allclose(two["conv1"]["kernel"], params["conv1"]["kernel"])
    bound = 1 / np.sqrt(24)
    assert float(jnp.abs(one["fc"]["kernel"]).max()) > 0.5 * bound
    assert float(jnp.abs(one["fc"]["kernel"]).max()) <= bound and float(jnp.abs(one["fc"]["bias"]).max()) <= bound


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda m, x, a: metrics.pointing_game(a, np.ones((3, 12, 9), bool)), ValueError, "masks"),
        (lambda m, x, a: metrics.mask_energy(a, np.full((3, 12, 10), 0.5)), ValueError, "0/1"),
        (lambda m, x, a: metrics.mask_energy(a.at[0, 0, 0, 0].set(jnp.nan), np.ones((3, 12, 10))), ValueError, "NaN"),
        (lambda m, x, a: metrics.pointing_game(a, np.ones((3, 12, 10)), tolerance=-1), ValueError, "tolerance"),
        (lambda m, x, a: metrics.deletion_auc(m, x, a.transpose(0, 3, 1, 2), 1), ValueError, "NCHW"),
        (lambda m, x, a: metrics.deletion_auc(m, x, a, 5), ValueError, "out of range"),
        (lambda m, x, a: metrics.deletion_auc(m, x, a, 1, steps=500), ValueError, "steps"),
        (lambda m, x, a: metrics.insertion_auc(m, x, a, 1, substrate="noise"), ValueError, "noise"),
        (lambda m, x, a: metrics.insertion_auc(m, x, a, 1, scores="sigmoid"), ValueError, "sigmoid"),
        (lambda m, x, a: metrics.insertion_auc(m, x, a, 1, batch_size=0), ValueError, "batch_size"),
        (lambda m, x, a: metrics.completeness(m, a[:, :4], x, 1), ValueError, "differ"),
        (lambda m, x, a: metrics.spearman(a, a[:2]), ValueError, "shape"),
        (
            lambda m, x, a: metrics.randomisation_sanity(jx.saliency, m, x, 1, key=KEY, layers=["fc", "conv9"]),
            ValueError,
            "conv9",
        ),
        (lambda m, x, a: metrics.randomisation_sanity(jx.saliency, m, x, 1, key=KEY, order="top"), ValueError, "order"),
        (lambda m, x, a: metrics.randomisation_sanity(jx.saliency, lambda v: m(v), x, 1, key=KEY), TypeError, "Model"),
    ],
)
def test_bad_input_raises_a_clear_error(model, inputs, call, error, match):
    with pytest.raises(error, match=match):
        call(model, inputs, jx.saliency(model, inputs, 1))
