"""Perturbation and surrogate methods: exact answers on linear models, invariances, errors.

On a linear model ``F(x) = sum w * x`` every method has a closed form written here
independently: ablating a group removes ``sum_group w (x - b)``; occlusion averages the
window sums over the windows covering each element (computed by an explicit loop over
window positions); Shapley values of an additive game are the group sums, exact for
every ordering; Kernel SHAP's weighted regression recovers them exactly.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxplain as jx
from jaxplain.attribution.rise import generate_masks

RNG = np.random.default_rng(0)
SHAPE = (2, 6, 7, 2)
WEIGHTS = RNG.normal(size=(3,) + SHAPE[1:]).astype(np.float32)
INPUTS = RNG.normal(size=SHAPE).astype(np.float32)
BASELINE = 0.3
TARGET = np.array([0, 2])
GROUPS = (np.arange(6)[:, None] // 3 * 3 + np.arange(7)[None, :] // 3).astype(np.int32)  # 2 x 3 = 6 groups


def linear_model(x):
    return jnp.einsum("nhwc,khwc->nk", x, WEIGHTS)


def nonlinear_model(x):
    return jnp.tanh(linear_model(x)) * linear_model(x**2)


def group_sums(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Each element gets the sum of ``values`` over its group (mask ``[H, W]`` shared by channels)."""
    out = np.zeros_like(values)
    for group in np.unique(mask):
        member = (mask == group)[None, :, :, None]
        out += member * (values * member).sum(axis=(1, 2, 3), keepdims=True)
    return out


def contributions() -> np.ndarray:
    return WEIGHTS[TARGET] * (INPUTS - BASELINE)


def test_feature_ablation_on_linear_model():
    ours = jx.feature_ablation(linear_model, INPUTS, TARGET, baselines=BASELINE, feature_mask=GROUPS)
    np.testing.assert_allclose(ours, group_sums(contributions(), GROUPS), rtol=1e-5, atol=1e-5)
    per_element = jx.feature_ablation(linear_model, INPUTS, TARGET, baselines=BASELINE)
    np.testing.assert_allclose(per_element, contributions(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("window,strides", [((1, 1, 1), 1), ((3, 2), (2, 1, 1)), ((4, 4, 1), (3, 2, 1))])
def test_occlusion_on_linear_model_is_the_mean_window_sum(window, strides):
    ours = jx.occlusion(linear_model, INPUTS, TARGET, sliding_window_shapes=window, strides=strides, baselines=BASELINE)
    window = tuple(window) + ((SHAPE[3],) if len(window) == 2 else ())
    strides = (strides,) * 3 if isinstance(strides, int) else strides
    total, count = np.zeros(SHAPE, np.float64), np.zeros(SHAPE[1:])
    starts = [range(0, max(d - w, 0) + s, s) if d > w else [0] for d, w, s in zip(SHAPE[1:], window, strides)]
    for corner in itertools.product(*starts):
        covered = np.zeros(SHAPE[1:], bool)
        covered[tuple(slice(c, c + w) for c, w in zip(corner, window))] = True
        total += covered * (contributions() * covered).sum(axis=(1, 2, 3), keepdims=True)
        count += covered
    np.testing.assert_allclose(ours, total / count, rtol=1e-5, atol=1e-5)
    if window == (1, 1, 1):
        np.testing.assert_allclose(ours, contributions(), rtol=1e-5, atol=1e-5)


def test_shapley_values_of_an_additive_game_are_exact():
    expected = group_sums(contributions(), GROUPS)
    exact = jx.shapley_values(linear_model, INPUTS, TARGET, baselines=BASELINE, feature_mask=GROUPS)
    sampled = jx.shapley_value_sampling(
        linear_model, INPUTS, TARGET, key=jax.random.PRNGKey(0), baselines=BASELINE, feature_mask=GROUPS, n_samples=3
    )
    kernel = jx.kernel_shap(
        linear_model, INPUTS, TARGET, key=jax.random.PRNGKey(1), baselines=BASELINE, feature_mask=GROUPS, n_samples=40
    )
    for ours in (exact, sampled, kernel):
        np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


def test_shapley_values_of_a_game_with_interaction():
    """``F = x_a * x_b`` over two groups: each gets half the interaction (a hand-computed value)."""
    mask = np.array([[0, 1]], np.int32)

    def product(x):
        return (x[:, 0, 0, 0] * x[:, 0, 1, 0])[:, None]

    x = np.array([[[[2.0], [3.0]]]], np.float32)
    ours = jx.shapley_values(product, x, 0, feature_mask=mask)
    np.testing.assert_allclose(np.asarray(ours)[0, 0, :, 0], [3.0, 3.0], rtol=1e-6)


STOCHASTIC = {
    "shapley_value_sampling": lambda key, **kw: jx.shapley_value_sampling(
        nonlinear_model, INPUTS, TARGET, key=key, feature_mask=GROUPS, n_samples=4, **kw
    ),
    "kernel_shap": lambda key, **kw: jx.kernel_shap(nonlinear_model, INPUTS, TARGET, key=key, feature_mask=GROUPS, **kw),
    "lime": lambda key, **kw: jx.lime(nonlinear_model, INPUTS, TARGET, key=key, feature_mask=GROUPS, **kw),
    "rise": lambda key, **kw: jx.rise(nonlinear_model, INPUTS, TARGET, key=key, num_masks=50, num_cells=3, **kw),
}


@pytest.mark.parametrize("name", sorted(STOCHASTIC))
def test_same_key_same_answer_and_chunking_changes_nothing(name):
    method = STOCHASTIC[name]
    first = method(jax.random.PRNGKey(3), batch_size=None)
    np.testing.assert_array_equal(first, method(jax.random.PRNGKey(3), batch_size=None))
    np.testing.assert_allclose(method(jax.random.PRNGKey(3), batch_size=3), first, rtol=1e-4, atol=1e-5)
    assert not np.allclose(method(jax.random.PRNGKey(4), batch_size=None), first)


def test_batch_of_one_equals_batch_of_many():
    both = jx.occlusion(linear_model, INPUTS, TARGET, sliding_window_shapes=(2, 2))
    for i in range(2):
        alone = jx.occlusion(linear_model, INPUTS[i : i + 1], TARGET[i : i + 1], sliding_window_shapes=(2, 2))
        np.testing.assert_allclose(alone[0], both[i], rtol=1e-5, atol=1e-5)


def test_rise_given_all_ones_masks_is_the_sigmoid_score():
    masks = np.ones((4, 6, 7), np.float32)
    ours = jx.rise(linear_model, INPUTS, TARGET, masks=masks)
    expected = jax.nn.sigmoid(linear_model(INPUTS))[np.arange(2), TARGET]
    np.testing.assert_allclose(ours, np.broadcast_to(expected[:, None, None, None], (2, 6, 7, 1)), rtol=1e-5)
    assert generate_masks(jax.random.PRNGKey(0), 3, (6, 7), num_cells=3).shape == (3, 6, 7)


def test_lime_samples_as_lasso_regression_of_a_linear_game():
    """With alpha -> 0 the weighted fit of an additive game recovers its group sums."""
    ours = jx.lime(
        linear_model, INPUTS, TARGET, key=jax.random.PRNGKey(0), baselines=BASELINE, feature_mask=GROUPS,
        n_samples=60, alpha=1e-6,
    )
    np.testing.assert_allclose(ours, group_sums(contributions(), GROUPS), rtol=1e-3, atol=1e-3)


ERRORS = [
    (lambda: jx.feature_ablation(linear_model, INPUTS, 0, feature_mask=np.zeros((5, 5), np.int32)), "does not broadcast"),
    (lambda: jx.feature_ablation(linear_model, INPUTS, 0, feature_mask=np.zeros((6, 7))), "integer group ids"),
    (lambda: jx.feature_ablation(linear_model, INPUTS, 0, feature_mask=GROUPS - 1), ">= 0"),
    (lambda: jx.feature_ablation(linear_model, INPUTS, 0, batch_size=2, perturbations_per_eval=3), "not both"),
    (lambda: jx.feature_ablation(linear_model, INPUTS, 5), "out of range"),
    (lambda: jx.occlusion(linear_model, INPUTS, 0, sliding_window_shapes=(2, 8)), "larger than the input"),
    (lambda: jx.occlusion(linear_model, INPUTS, 0, sliding_window_shapes=(2, 2), strides=3), "exceed the window"),
    (lambda: jx.occlusion(linear_model, INPUTS, 0, sliding_window_shapes=(2, 2, 1, 1)), "sliding_window_shapes"),
    (lambda: jx.shapley_value_sampling(linear_model, INPUTS, 0, feature_mask=GROUPS), "PRNGKey"),
    (
        lambda: jx.shapley_value_sampling(linear_model, INPUTS, 0, feature_mask=GROUPS, permutations=[[0, 0, 1, 2, 3, 4]]),
        "permutation",
    ),
    (lambda: jx.shapley_values(linear_model, INPUTS, 0), "2\\*\\*84"),
    (lambda: jx.kernel_shap(linear_model, INPUTS, 0, feature_mask=GROUPS, samples=np.full((3, 6), 2)), "binary"),
    (lambda: jx.lime(linear_model, INPUTS, 0, feature_mask=GROUPS, samples=np.ones((3, 5))), "shape"),
    (lambda: jx.lime(linear_model, INPUTS, 0, key=jax.random.PRNGKey(0), interpretable_model="tree"), "interpretable_model"),
    (lambda: jx.rise(linear_model, INPUTS, 0, masks=np.ones((3, 6, 6))), "masks must have shape"),
    (lambda: jx.rise(linear_model, INPUTS, 0, key=jax.random.PRNGKey(0), p=1.5), "p must lie"),
    (lambda: jx.occlusion(linear_model, np.where(INPUTS > 1, np.nan, INPUTS), 0, sliding_window_shapes=(2, 2)), "NaN"),
]


@pytest.mark.parametrize("call,message", ERRORS)
def test_bad_input_gets_a_clear_error(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


@pytest.mark.parametrize("algorithm", ["slic", "felzenszwalb"])
def test_other_segmentations_give_contiguous_ids(algorithm):
    from jaxplain.attribution.lime_image import segment_images

    images = np.random.default_rng(1).random((2, 24, 20, 3))
    segments = segment_images(images, algorithm=algorithm, options={"n_segments": 12} if algorithm == "slic" else None)
    assert segments.shape == (2, 24, 20)
    for segment in segments:
        np.testing.assert_array_equal(np.unique(segment), np.arange(segment.max() + 1))
    explanation = jx.lime_image(
        linear_model_images, images.astype(np.float32), 1, key=jax.random.PRNGKey(0), segments=segments, num_samples=30
    )
    assert explanation.weights.shape == (2, 1, int(segments.max()) + 1)


def linear_model_images(x):
    return jnp.einsum("nhwc,k->nk", x, jnp.arange(1.0, 4.0))


# Incremental occlusion passes (``jaxplain.attribution.incremental``): each window's pass, which
# recomputes only the boxes the window changes, against the full forward pass of the occluded input.


def counting_handlers(monkeypatch, incremental) -> dict[str, int]:
    """Count the boxed (not pasted) results of the convolution, pool, element-wise and concatenation handlers."""
    boxed = {}
    for name in ("_convolution", "_window_reduction", "_elementwise", "_custom_elementwise", "_concatenate",
                 "_transpose"):
        original = getattr(incremental, name)
        boxed[name] = 0

        def counted(node, changed, env, original=original, name=name):
            result = original(node, changed, env)
            boxed[name] += result is not None
            return result

        monkeypatch.setattr(incremental, name, counted)
    return boxed


def assert_window_passes_equal_full_passes(model, x, rows, cols, axes=(1, 2)):
    from jaxplain import program
    from jaxplain.attribution import incremental

    structured = program.structured(jx.as_model(model), "test")
    _, clean = incremental.record_clean(structured, x)
    window_pass = jax.jit(lambda box, r, c: incremental.patched_forward(
        clean, incremental.Patch(box, r, c, rows, cols, axes)))
    full_pass = jax.jit(jx.as_model(model).__call__)
    for r, top in enumerate(rows.starts):
        for c, left in enumerate(cols.starts):
            noise = jax.random.normal(jax.random.PRNGKey(10 * r + c), x.shape)
            window = np.zeros(x.shape, bool)
            index = [slice(None)] * 4
            index[axes[0]], index[axes[1]] = slice(rows.lo[r], rows.hi[r] + 1), slice(cols.lo[c], cols.hi[c] + 1)
            window[tuple(index)] = True
            occluded = jnp.where(window, noise, x)
            box = incremental.box_slice(occluded, axes, (top, left), (rows.size, cols.size))
            got = window_pass(box, r, c)
            expected = full_pass(occluded)
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * float(jnp.abs(expected).max()))


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])  # mobilenet: depthwise (grouped) convolutions, ReLU6
def test_incremental_window_pass_equals_the_full_pass(arch, monkeypatch):
    from jaxplain import nets
    from jaxplain.attribution import incremental
    from jaxplain.model import init_model

    boxed = counting_handlers(monkeypatch, incremental)
    model = init_model(nets.build(arch, num_classes=5), (1, 48, 40, 3), jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 48, 40, 3))
    # Windows at the edges (the boxes read the layers' padding) and overrunning the end (cropped).
    rows = incremental.window_spans(np.array([0, 18, 44]), 6, 48)
    cols = incremental.window_spans(np.array([0, 36]), 6, 40)
    assert_window_passes_equal_full_passes(model, x, rows, cols)
    assert boxed["_convolution"] > 0 and boxed["_elementwise"] > 0
    assert boxed["_window_reduction"] > 0 or arch == "mobilenet_v2"  # no max pool there


def concat_function(params, x):
    """A plain function with what the zoo CNNs lack: channels-first layers behind a transpose, a dense
    concatenation, an average pool (``reduce_window`` sum over a divisor) and a strided convolution."""
    dims = ("NCHW", "OIHW", "NCHW")
    h = jnp.transpose(x, (0, 3, 1, 2))
    h = jax.nn.relu(lax.conv_general_dilated(h, params["a"], (1, 1), ((1, 1), (1, 1)), dimension_numbers=dims))
    h = jnp.concatenate([h, jnp.tanh(lax.conv_general_dilated(h, params["b"], (1, 1), ((2, 2), (2, 2)),
                                                             rhs_dilation=(2, 2), dimension_numbers=dims))], axis=1)
    h = lax.reduce_window(h, 0.0, lax.add, (1, 1, 2, 2), (1, 1, 2, 2), "VALID") / 4.0
    h = jax.nn.gelu(lax.conv_general_dilated(h, params["c"], (2, 2), ((1, 1), (1, 1)), dimension_numbers=dims))
    return h.mean(axis=(2, 3)) @ params["head"]


def concat_params(seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    return {"a": 0.3 * jax.random.normal(keys[0], (6, 3, 3, 3)), "b": 0.3 * jax.random.normal(keys[1], (4, 6, 3, 3)),
            "c": 0.3 * jax.random.normal(keys[2], (8, 10, 3, 3)), "head": jax.random.normal(keys[3], (8, 4))}


def test_incremental_window_pass_through_transposes_concatenations_and_average_pools(monkeypatch):
    from jaxplain.attribution import incremental

    boxed = counting_handlers(monkeypatch, incremental)
    model = jx.Model.from_function(concat_function, concat_params())
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 40, 32, 3))
    rows = incremental.window_spans(np.array([0, 20, 36]), 5, 40)
    cols = incremental.window_spans(np.array([3, 28]), 5, 32)
    assert_window_passes_equal_full_passes(model, x, rows, cols)
    for name in ("_transpose", "_concatenate", "_window_reduction", "_custom_elementwise", "_convolution"):
        assert boxed[name] > 0, name


@pytest.mark.parametrize("form", ["zoo", "linen", "nnx", "equinox", "function"])
def test_incremental_occlusion_and_ablation_on_every_form(form, monkeypatch):
    """The same occlusion and ablation with and without incremental passes, on tests/forms.py's five forms
    (Equinox's channels-first batches included), and the convolutions are really recomputed in boxes."""
    from jaxplain.attribution import incremental
    from tests import forms

    model = forms.cnn_forms(forms.cnn_weights())[form]
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 16, 20, 3))
    window, mask = (4, 4), (np.arange(16)[:, None] // 4 * 5 + np.arange(20)[None, :] // 4).astype(np.int32)
    if form == "equinox":
        x = x.transpose(0, 3, 1, 2)
    boxed = counting_handlers(monkeypatch, incremental)
    for method, options in ((jx.occlusion, {"sliding_window_shapes": window, "strides": 2}),
                            (jx.feature_ablation, {"feature_mask": mask if form != "equinox" else mask[None, None]})):
        full = method(model, x, TARGET[:2], incremental=False, **options)
        assert boxed["_convolution"] == 0
        ours = method(model, x, TARGET[:2], incremental=True, **options)
        np.testing.assert_allclose(ours, full, rtol=1e-5, atol=1e-5 * float(jnp.abs(full).max()))
        assert boxed["_convolution"] > 0, method.__name__
        boxed["_convolution"] = 0


def test_incremental_occlusion_choice_and_errors():
    """Automatic for small windows on any model with its weights as arguments; a bare callable or non-image
    inputs refuse ``incremental=True``."""
    from tests.tiny import tiny_inputs, tiny_model

    model, x = tiny_model(), tiny_inputs()
    with pytest.raises(ValueError, match="incremental=True needs"):
        jx.occlusion(linear_model, INPUTS, TARGET, sliding_window_shapes=(2, 2), incremental=True)
    sequences = jx.Model.from_function(lambda p, s: s.mean(1) @ p, jnp.ones((4, 3)))
    with pytest.raises(ValueError, match="incremental=True needs"):
        jx.occlusion(sequences, jnp.ones((2, 6, 4)), 0, sliding_window_shapes=(2, 4), incremental=True)
    automatic = jx.occlusion(model, x, 0, sliding_window_shapes=(4, 4), strides=2)
    np.testing.assert_allclose(automatic, jx.occlusion(model, x, 0, sliding_window_shapes=(4, 4), strides=2,
                                                       incremental=False), rtol=1e-5, atol=1e-6)
    blocks = (np.arange(x.shape[1])[:, None] // 4 * 3 + np.arange(x.shape[2])[None, :] // 4).astype(np.int32)
    with pytest.raises(ValueError, match="incremental=True needs"):
        jx.feature_ablation(linear_model, INPUTS, TARGET, feature_mask=blocks[:INPUTS.shape[1], :INPUTS.shape[2]],
                            incremental=True)
    np.testing.assert_allclose(jx.feature_ablation(model, x, 0, feature_mask=blocks),
                               jx.feature_ablation(model, x, 0, feature_mask=blocks, incremental=False),
                               rtol=1e-5, atol=1e-6)
