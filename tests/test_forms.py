"""Every model form: agreement, axioms, weights as traced arguments, layer names and errors.

The five forms of one residual CNN (tests/forms.py) agree within 1e-5 (rescale DeepLift,
chunked conductance, gradient x activation at a block; the Captum parity test covers the rest); DeepLift sums to the output difference on each (a max pool follows a
ReLU); changing weights changes answers without recompiling.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain.attribution import _common
from tests import forms

TARGETS = jnp.array([1, 3])


@pytest.fixture(scope="module")
def cnn():
    return forms.cnn_forms(forms.cnn_weights())


@pytest.fixture(scope="module")
def images():
    return jax.random.normal(jax.random.PRNGKey(0), (2, 8, 10, 3))


def _call(form, method, model, x, **options):
    if form == "equinox":
        out = method(model, x.transpose(0, 3, 1, 2), TARGETS, **options)
        return jax.tree_util.tree_map(lambda a: a.transpose(0, 2, 3, 1) if a.ndim == 4 else a, out)
    return method(model, x, TARGETS, **options)


METHODS = [
    ("deeplift", jx.deeplift, {"baselines": 0.25}),
    ("layer_conductance", jx.layer_conductance, {"layer": "block.conv", "n_steps": 8, "batch_size": 3}),
    ("layer_activation_gradient", jx.layer_gradient_x_activation, {"layer": "block"}),
]


def test_the_five_forms_agree(cnn, images):
    """Methods beyond tests/parity/test_forms_captum.py's (which holds every form to Captum's numbers)."""
    for name, method, options in METHODS:
        reference = np.asarray(_call("zoo", method, cnn["zoo"], images, **options))
        for form in ("linen", "nnx", "equinox", "function"):
            ours = np.asarray(_call(form, method, cnn[form], images, **options))
            np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max(),
                                       err_msg=f"{name} on the {form} form")


@pytest.mark.parametrize("baseline", [0.0, 0.25])
def test_deeplift_sums_to_the_output_difference_on_every_form(cnn, images, baseline):
    for form, model in cnn.items():
        x = images.transpose(0, 3, 1, 2) if form == "equinox" else images
        attributions, delta = jx.deeplift(model, x, TARGETS, baselines=baseline, return_convergence_delta=True)
        outputs = jx.as_model(model)(x)
        gap = outputs[jnp.arange(2), TARGETS] - jx.as_model(model)(jnp.full_like(x, baseline))[jnp.arange(2), TARGETS]
        np.testing.assert_allclose(attributions.reshape(2, -1).sum(1), gap, rtol=1e-4, atol=1e-6, err_msg=form)
        np.testing.assert_allclose(delta, 0.0, atol=1e-5 * float(jnp.abs(gap).max()), err_msg=form)
        plain = jx.input_x_gradient(model, x - baseline, TARGETS)
        assert float(jnp.abs(attributions - plain).max()) > 1e-3, f"{form}: DeepLift equals input x gradient"


def test_guided_backprop_passes_only_positive_gradients_through_relus(cnn, images):
    guided = np.asarray(jx.guided_backprop(cnn["function"], images, TARGETS))
    plain = np.asarray(jx.saliency(cnn["function"], images, TARGETS, abs=False))
    assert np.abs(guided - plain).max() > 1e-4
    positive_weights = jax.tree_util.tree_map(jnp.abs, cnn["function"].params)
    positive = jx.Model.from_function(forms.function_cnn, positive_weights)
    np.testing.assert_allclose(jx.guided_backprop(positive, images, TARGETS),
                               jx.saliency(positive, images, TARGETS, abs=False), rtol=1e-5, atol=1e-7)


def test_weights_are_traced_arguments(cnn, images):
    function = cnn["function"]
    first = jx.saliency(function, images, TARGETS, abs=False)
    count = _common._run_jitted._cache_size()
    doubled = function.replace_params(jax.tree_util.tree_map(lambda w: 2.0 * w, function.params))
    second = jx.saliency(doubled, images, TARGETS, abs=False)
    assert _common._run_jitted._cache_size() == count, "new weights of the same structure recompiled"
    assert float(jnp.abs(second - first).max()) > 1e-3
    expected = jax.grad(lambda x: jnp.sum(forms.function_cnn(doubled.params, x)[jnp.arange(2), TARGETS]))(images)
    np.testing.assert_allclose(second, expected, rtol=1e-5, atol=1e-7)


def test_an_nnx_module_changed_in_place_gives_the_new_answer(images):
    module = forms.cnn_forms(forms.cnn_weights())["nnx"]
    before = jx.guided_backprop(module, images, TARGETS)
    count = _common._run_jitted._cache_size()
    module.head.kernel.value = module.head.kernel.value * -1.0
    after = jx.guided_backprop(module, images, TARGETS)
    assert _common._run_jitted._cache_size() == count
    fresh = forms.cnn_forms(forms.cnn_weights())["function"]
    flipped = fresh.replace_params({**fresh.params, "head": {**fresh.params["head"],
                                                             "kernel": -fresh.params["head"]["kernel"]}})
    np.testing.assert_allclose(after, jx.guided_backprop(flipped, images, TARGETS), rtol=1e-5, atol=1e-7)
    assert float(jnp.abs(after - before).max()) > 1e-4


def test_layer_names_are_the_same_in_every_form(cnn, images):
    expected = ["conv1", "bn1", "block", "block.conv", "head"]
    for form, model in cnn.items():
        x = images.transpose(0, 3, 1, 2) if form == "equinox" else images
        names = jx.layers(model, x)
        assert [n for n in names if n in expected] == expected, (form, names)


def test_layers_name_what_each_framework_names():
    import equinox as eqx

    mlp = eqx.nn.MLP(4, 2, 8, 2, key=jax.random.PRNGKey(0))
    assert {"layers.0", "layers.1", "layers.2"} <= set(jx.layers(mlp, jnp.zeros((3, 4))))
    params = {"block": {"conv2": {"kernel": jnp.ones((4, 3))}}}
    model = jx.Model.from_function(lambda p, x: jax.nn.relu(x @ p["block"]["conv2"]["kernel"]), params)
    assert jx.layers(model, jnp.zeros((2, 4))) == ["block", "block.conv2"]


def test_inputs_of_any_shape(cnn):
    weights = forms.mlp_weights()
    model = forms.mlp_forms(weights)["function"]
    tokens = jax.random.normal(jax.random.PRNGKey(2), (2, 5, 6))

    def pooled(params, x):
        return forms.function_mlp(params, x).mean(1)

    sequence = jx.Model.from_function(pooled, model.params)
    for method in (jx.saliency, jx.integrated_gradients, jx.deeplift):
        assert method(sequence, tokens, TARGETS).shape == tokens.shape


def test_errors_name_the_layer_and_the_fix(cnn, images):
    with pytest.raises(ValueError, match="unknown layer 'block.conv9'.*block.conv"):
        jx.layer_gradcam(cnn["nnx"], images, TARGETS, layer="block.conv9")
    with pytest.raises(TypeError, match="Model.from_function"):
        jx.layer_gradcam(lambda x: cnn["nnx"](x), images, TARGETS, layer="block")
    with pytest.raises(ValueError, match="act on ReLUs.*has none"):
        jx.guided_backprop(forms.mlp_forms(forms.mlp_weights())["nnx"], jnp.ones((2, 6)), TARGETS)
    with pytest.raises(ValueError, match="no rule for the norm layer at 'norm'.*attn_lrp"):
        jx.lrp(forms.mlp_forms(forms.mlp_weights())["nnx"], jnp.ones((2, 6)), TARGETS)
    with pytest.raises(ValueError, match="excitation backprop has no rule for the norm layer at 'norm'"):
        jx.excitation_backprop(forms.mlp_forms(forms.mlp_weights())["nnx"], jnp.ones((2, 6)), TARGETS)
    with pytest.raises(ValueError, match="channel"):
        jx.excitation_backprop(cnn["equinox"], images.transpose(0, 3, 1, 2), TARGETS, saliency_layer="block")
    with pytest.raises(ValueError, match="classifier_layer 'bn1' is not a convolution or dense layer"):
        jx.contrastive_excitation_backprop(cnn["nnx"], images, TARGETS, saliency_layer="conv1",
                                           contrast_layer="block", classifier_layer="bn1")


def test_excitation_backprop_on_every_form(cnn, images):
    """TorchRay's excitation rules, read from the program, give the zoo form's maps on every channels-last form
    (the zoo's layers are held to TorchRay itself in tests/parity/test_torchray.py)."""
    calls = [
        (jx.excitation_backprop, {"saliency_layer": None}),
        (jx.excitation_backprop, {"saliency_layer": "block"}),
        (jx.excitation_backprop, {"saliency_layer": "conv1", "split_residuals": False}),
        (jx.contrastive_excitation_backprop, {"saliency_layer": "conv1", "contrast_layer": "block"}),
    ]
    for method, options in calls:
        reference = np.asarray(method(cnn["zoo"], images, TARGETS, **options))
        assert np.abs(reference).max() > 0
        for form in ("linen", "nnx", "function"):
            ours = np.asarray(method(cnn[form], images, TARGETS, **options))
            np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max(),
                                       err_msg=f"{method.__name__} {options} on the {form} form")
    split = jx.excitation_backprop(cnn["function"], images, TARGETS, saliency_layer="conv1")
    unsplit = jx.excitation_backprop(cnn["function"], images, TARGETS, saliency_layer="conv1", split_residuals=False)
    assert float(jnp.abs(split - unsplit).max()) > 1e-3 * float(jnp.abs(split).max())


def test_call_keywords_are_given_once(images):
    weights = forms.cnn_weights()
    linen = forms.cnn_forms(weights)["linen"]
    assert dict(linen.call_kwargs) == {"train": False}
    np.testing.assert_allclose(linen(images), forms.cnn_forms(weights)["zoo"](images), rtol=1e-5, atol=1e-6)


RELU_SPELLINGS = {
    "jax.nn.relu": jax.nn.relu,
    "jnp.maximum(x, 0)": lambda x: jnp.maximum(x, 0),
    "jnp.maximum(0., x)": lambda x: jnp.maximum(0.0, x),
    "jnp.where(x > 0, x, 0)": lambda x: jnp.where(x > 0, x, 0.0),
    "x * (x > 0)": lambda x: x * (x > 0),
    "jnp.clip(x, 0)": lambda x: jnp.clip(x, 0),
}


@pytest.mark.parametrize("spelling", sorted(RELU_SPELLINGS))
def test_every_spelling_of_relu_is_one(spelling):
    relu = RELU_SPELLINGS[spelling]
    key1, key2, key3 = jax.random.split(jax.random.PRNGKey(4), 3)
    params = {"w1": jax.random.normal(key1, (5, 7)), "w2": jax.random.normal(key2, (7, 3))}
    x = jax.random.normal(key3, (4, 5))
    model = jx.Model.from_function(lambda p, v: relu(v @ p["w1"]) @ p["w2"], params)
    z = x @ params["w1"]
    g = params["w2"][:, TARGETS[0]]
    guided = jnp.where(z > 0, jnp.maximum(g, 0), 0.0) @ params["w1"].T
    np.testing.assert_allclose(jx.guided_backprop(model, x, TARGETS[0]), guided, rtol=1e-5, atol=1e-6)
    attributions, delta = jx.deeplift(model, x, TARGETS[0], baselines=0.5, return_convergence_delta=True)
    np.testing.assert_allclose(delta, 0.0, atol=1e-5)


@pytest.mark.parametrize("name, function, kind", [
    ("leaky", lambda x: jnp.where(x > 0, x, 0.1 * x), "leaky_relu"),
    ("leaky_max", lambda x: jnp.maximum(x, 0.2 * x), "leaky_relu"),
    ("relu6", lambda x: jnp.clip(x, 0, 6), "relu6"),
    ("gelu_tanh", jax.nn.gelu, "gelu"),
    ("gelu_erf", lambda x: jax.nn.gelu(x, approximate=False), "gelu"),
    ("silu", lambda x: x * jax.nn.sigmoid(x), "silu"),
    ("softplus", jax.nn.softplus, "softplus"),
    ("softmax", lambda x: jax.nn.softmax(x, axis=-1), "softmax"),
    ("clip", lambda x: jnp.clip(x, -1, 1), "elementwise"),
])
def test_non_linearities_are_named_whatever_the_spelling(name, function, kind):
    from jaxplain.program import graph_of

    model = jx.Model.from_function(lambda p, v: function(v @ p["w"]) @ p["w"], {"w": 0.3 * jnp.ones((4, 4))})
    assert [unit.kind for unit in graph_of(model, jnp.ones((2, 4))).unit_list()] == [kind]


def test_torchray_maps_refuse_channels_first_maps_instead_of_reducing_the_wrong_axis(cnn, images):
    assert jx.torchray_guided_backprop(cnn["nnx"], images, TARGETS, saliency_layer="block").shape == (2, 4, 5, 1)
    with pytest.raises(ValueError, match="channel.*axis 1"):
        jx.torchray_gradient(cnn["equinox"], images.transpose(0, 3, 1, 2), TARGETS)


def test_feature_visualisation_on_every_form(cnn):
    """Layer objectives (channels read on the layer's own channel axis: NCHW in the Equinox form) and
    deep dream give the zoo form's images on every form; the objective is actually optimised."""
    from jaxplain.optimization import objectives as O
    from jaxplain.optimization import param, render_vis

    key = jax.random.PRNGKey(3)
    options = dict(key=key, param_f=param.image(12), transforms=(), thresholds=(1, 6), return_losses=True)
    objective = O.channel("block.conv", 2) + O.neuron("conv1", 5)
    images, losses = render_vis(cnn["zoo"], objective, **options)
    assert float(losses[-1, 0]) < float(losses[0, 0])
    other, _ = render_vis(cnn["zoo"], O.channel("block.conv", 3) + O.neuron("conv1", 5), **options)
    assert float(jnp.abs(other - images).max()) > 1e-2
    dream_input = jax.random.uniform(jax.random.PRNGKey(4), (2, 12, 12, 3))
    dream = jx.deep_dream(cnn["zoo"], dream_input, layer="block", filter=1, steps=3, learning_rate=0.1)
    for form in ("linen", "nnx", "equinox", "function"):
        ours, our_losses = render_vis(cnn[form], objective, **options)
        np.testing.assert_allclose(our_losses, losses, rtol=1e-4, err_msg=f"render_vis losses on the {form} form")
        np.testing.assert_allclose(ours, images, atol=1e-4, err_msg=f"render_vis on the {form} form")
        ours = jx.deep_dream(cnn[form], dream_input, layer="block", filter=1, steps=3, learning_rate=0.1)
        np.testing.assert_allclose(ours, dream, atol=1e-4, err_msg=f"deep_dream on the {form} form")
