"""Prototype networks and CaBRNet's attributions: properties on a small seeded ProtoPNet (no torch)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain.attribution import prototype as proto
from jaxplain.attribution._prototype_post import gaussian_matrix
from jaxplain.nets import prototype as nets
from jaxplain.rules import composites, lrp, prp

ADD_ON = (("conv1", "Conv2d", (("kernel_size", 1), ("out_channels", 8))), ("relu1", "ReLU", ()),
          ("conv2", "Conv2d", (("kernel_size", 1), ("out_channels", 8))), ("sigmoid", "Sigmoid", ()))
SHAPE = (2, 16, 16, 3)


@pytest.fixture(scope="module")
def model():
    """VGG-11 cut at ``features.5`` (two convolutions, two pools): 4x4 similarity maps of 6 prototypes."""
    made = nets.protopnet("vgg11", "features.5", 3, 6, 8, add_on=ADD_ON, input_shape=SHAPE, key=jax.random.PRNGKey(1))
    prototypes = jax.random.uniform(jax.random.PRNGKey(2), (6, 8))
    variables = jax.tree_util.tree_map(lambda v: v, made.variables)
    variables["params"]["classifier"]["prototypes"] = prototypes
    return made.replace_variables(variables)


@pytest.fixture(scope="module")
def x():
    return jax.random.normal(jax.random.PRNGKey(0), SHAPE)


def test_similarity_maps_shape_and_formula(model, x):
    sims = model.similarities(x)
    assert sims.shape == (2, 4, 4, 6)
    features = model.features(x)
    prototypes = model.variables["params"]["classifier"]["prototypes"]
    distances = jnp.sum((features[..., None, :] - prototypes) ** 2, axis=-1)
    np.testing.assert_allclose(sims, jnp.log((distances + 1) / (distances + 1e-4)), rtol=1e-5)
    logits = model(x)
    minimum = jnp.min(distances, axis=(1, 2))
    weights = model.variables["params"]["classifier"]["last_layer"]["kernel"]
    expected = jnp.log((minimum + 1) / (minimum + 1e-4)) @ weights
    # The logits are sums of terms of both signs: near-zero ones carry float32 cancellation, hence the atol.
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5 * float(jnp.abs(expected).max()))


def test_similarity_rule_conserves_relevance():
    key1, key2, key3 = jax.random.split(jax.random.PRNGKey(4), 3)
    features = jax.random.uniform(key1, (1, 3, 3, 5))
    prototypes = jax.random.uniform(key2, (4, 5))
    relevance = jax.random.uniform(key3, (1, 3, 3, 4))
    spread = prp.similarity_relevance(features, prototypes, relevance)
    np.testing.assert_allclose(jnp.sum(spread, axis=-1), jnp.sum(relevance, axis=-1), rtol=1e-6)


def test_stacked_sum_quirk_only_changes_zero_sums():
    a, b = jnp.array([1.0, 2.0, -1.0]), jnp.array([1.0, -3.0, 1.0])
    for quirk in (False, True):
        rule = prp.StackedSum(1e-6, cabrnet_quirk=quirk)
        _, pullback = jax.vjp(lambda u, v: rule(None, jnp.add, u, v), a, b)
        ra, rb = pullback(jnp.ones(3))
        if quirk:
            np.testing.assert_allclose(ra[:2], a[:2] / (a + b)[:2], rtol=1e-7)
            np.testing.assert_allclose(ra[2], -1.0 / 1e-6, rtol=1e-6)
        else:
            np.testing.assert_allclose(ra[:2], a[:2] / ((a + b)[:2] + 1e-6 * jnp.sign(a + b)[:2]), rtol=1e-7)


@pytest.mark.parametrize("method", [proto.prototype_saliency, proto.prototype_prp])
def test_all_locations_equal_the_per_location_loop(model, x, method):
    together = method(model, x, 1, similarity_threshold=0.0, postprocess=False)
    looped = sum(method(model, x, 1, location=(h, w), postprocess=False) for h in range(4) for w in range(4))
    np.testing.assert_allclose(together, looped, rtol=0, atol=1e-5 * float(jnp.abs(looped).max()))


@pytest.fixture(scope="module")
def narrow_model():
    """As ``model`` with 3 feature channels: 6 prototypes over 3 channels take the feature-gradient (basis) path."""
    add_on = (("conv1", "Conv2d", (("kernel_size", 1), ("out_channels", 3))), ("sigmoid", "Sigmoid", ()))
    made = nets.protopnet("vgg11", "features.5", 3, 6, 3, add_on=add_on, input_shape=SHAPE, key=jax.random.PRNGKey(3))
    variables = jax.tree_util.tree_map(lambda v: v, made.variables)
    variables["params"]["classifier"]["prototypes"] = jax.random.uniform(jax.random.PRNGKey(4), (6, 3))
    return made.replace_variables(variables)


@pytest.mark.parametrize("method", ["saliency", "smoothgrad"])
def test_feature_gradient_path_equals_the_per_location_loop(narrow_model, x, method):
    """All 6 prototypes at every location through 3 feature gradients a location, against one location a call."""
    everything = np.tile(np.arange(6), (2, 1))
    assert proto._uses_basis(narrow_model, x, jnp.asarray(everything), None)
    assert not proto._uses_basis(narrow_model, x, jnp.asarray(everything[:, :3]), None)
    if method == "saliency":
        call = lambda **options: proto.prototype_saliency(narrow_model, x, everything, postprocess=False, **options)
    else:
        call = lambda **options: proto.prototype_smoothgrad(narrow_model, x, everything, key=jax.random.PRNGKey(5),
                                                            num_samples=2, postprocess=False, **options)
    looped = sum(call(location=(h, w)) for h in range(4) for w in range(4))
    scale = float(jnp.abs(looped).max())
    for batch_size in (None, 3):
        together = call(similarity_threshold=0.0, batch_size=batch_size)
        np.testing.assert_allclose(together, looped, rtol=0, atol=1e-5 * scale)


def test_threshold_and_max_location(model, x):
    sims = np.asarray(model.similarities(x))[..., 2]
    flat = sims.reshape(2, -1)
    h, w = np.unravel_index(flat[0].argmax(), (4, 4))
    at_max = proto.prototype_prp(model, x[:1], 2, location="max", postprocess=False)
    np.testing.assert_array_equal(at_max, proto.prototype_prp(model, x[:1], 2, single_location=True, postprocess=False))
    np.testing.assert_allclose(at_max, proto.prototype_prp(model, x[:1], 2, location=(int(h), int(w)),
                                                           postprocess=False), rtol=1e-6)
    above = proto.prototype_saliency(model, x, 2, similarity_threshold=float(np.median(flat)), postprocess=False)
    everything = proto.prototype_saliency(model, x, 2, similarity_threshold=0.0, postprocess=False)
    assert not np.allclose(above, everything)


def test_prototype_axes_and_batching(model, x):
    grid = np.array([[0, 5], [3, 1]])
    both = proto.prototype_prp(model, x, grid, normalize=True)
    assert both.shape == (2, 2, 16, 16)
    for k in range(2):
        np.testing.assert_allclose(both[:, k], proto.prototype_prp(model, x, grid[:, k], normalize=True), atol=1e-5)
    one = proto.prototype_saliency(model, x[1:], 3, postprocess=False)
    many = proto.prototype_saliency(model, x, np.array([0, 3]), postprocess=False, batch_size=5)
    np.testing.assert_allclose(many[1:], one, rtol=0, atol=1e-5 * float(jnp.abs(one).max()))
    chunked = proto.prototype_prp(model, x, grid, postprocess=False, batch_size=1)
    np.testing.assert_allclose(chunked, proto.prototype_prp(model, x, grid, postprocess=False), rtol=1e-5, atol=1e-7)


def test_same_key_same_answer(model, x):
    key = jax.random.PRNGKey(7)
    first = proto.prototype_smoothgrad(model, x, 1, key=key, num_samples=3)
    np.testing.assert_array_equal(first, proto.prototype_smoothgrad(model, x, 1, key=key, num_samples=3))
    assert not np.allclose(first, proto.prototype_smoothgrad(model, x, 1, key=jax.random.PRNGKey(8), num_samples=3))
    chunked = proto.prototype_smoothgrad(model, x, 1, key=key, num_samples=3, batch_size=1)
    np.testing.assert_allclose(chunked, first, rtol=1e-5, atol=1e-6)
    random = proto.prototype_randgrad(model, x, key=key, gaussian_ksize=0, polarity=None)
    np.testing.assert_array_equal(random, proto.prototype_randgrad(model, x, key=key, gaussian_ksize=0, polarity=None))
    assert random.shape == (2, 16, 16) and 0 <= float(random.min()) and float(random.max()) < 1


def test_smoothgrad_without_noise_is_saliency(model, x):
    plain = proto.prototype_saliency(model, x, 4, postprocess=False)
    smooth = proto.prototype_smoothgrad(model, x, 4, key=jax.random.PRNGKey(0), noise_ratio=0.0, num_samples=2,
                                        postprocess=False)
    np.testing.assert_allclose(smooth, plain, rtol=1e-5, atol=1e-8)


def test_gaussian_matrix_is_a_normalised_reflecting_filter():
    matrix = gaussian_matrix(7, 5.0)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(matrix, matrix[::-1, ::-1], atol=1e-7)


def test_errors(model, x):
    with pytest.raises(ValueError, match="out of range"):
        proto.prototype_prp(model, x, 6)
    with pytest.raises(ValueError, match="outside"):
        proto.prototype_saliency(model, x, 0, location=(4, 0))
    with pytest.raises(ValueError, match="location must be"):
        proto.prototype_saliency(model, x, 0, location="min")
    with pytest.raises(ValueError, match="single_location"):
        proto.prototype_saliency(model, x, 0, location=(1, 1), single_location=True)
    with pytest.raises(ValueError, match="NaN"):
        proto.prototype_saliency(model, x.at[0, 0, 0, 0].set(jnp.nan), 0)
    with pytest.raises(ValueError, match="key"):
        proto.prototype_smoothgrad(model, x, 0)
    with pytest.raises(TypeError, match="prototype network"):
        proto.prototype_prp(lambda v: v, x, 0)
    with pytest.raises(ValueError, match="'classifier.similarity_layer' needs a .*SimilarityRelevance"):
        proto.prototype_prp(model, x, 0, composite=composites.CaBRNetExtractor())
    with pytest.raises(ValueError, match="no rule for the activation layer at 'extractor.*'"):
        proto.prototype_prp(model, x, 0, composite=composites.Composite(
            ((("convolution",), lrp.Epsilon()), (("similarity",), prp.SimilarityRelevance()))))
    with pytest.raises(ValueError, match="polarity"):
        proto.prototype_saliency(model, x, 0, polarity="both")
    with pytest.raises(ValueError, match="cannot cut"):
        nets.protopnet("vgg11", "classifier.0", 3, 6, 8, input_shape=SHAPE)
    with pytest.raises(ValueError, match="128 feature channels, the prototypes have 8"):
        nets.prototree("vgg11", "features.5", 3, 2, 8, input_shape=SHAPE)
    with pytest.raises(ValueError, match="depth"):
        nets.binary_tree(0)


# ProtoTree: the soft decision tree against a recursive evaluation written here from the paper
# (Nauta et al. 2021, eq. 1-2: a node routes to its similar child with probability s, to the
# other with 1 - s; the output mixes the leaf distributions by the probability of reaching them).

TREE_DEPTH = 3


def _recursive_tree(scores: np.ndarray, logits: np.ndarray, depth: int, log: bool) -> np.ndarray:
    """Node by node, as CaBRNet's ``BinaryNode.forward`` nests it; prototypes and leaves in pre-order."""
    leaf_counter, proto_counter = iter(range(2**depth)), iter(range(2**depth - 1))
    exp_logits = np.exp(logits - logits.max(axis=1, keepdims=True))
    distributions = exp_logits / exp_logits.sum(axis=1, keepdims=True)

    def node(level):
        if level == depth:
            leaf = next(leaf_counter)
            return np.log(distributions[leaf]) if log else distributions[leaf]
        s = scores[:, next(proto_counter)][:, None]
        dissimilar, similar = node(level + 1), node(level + 1)
        if log:
            other = np.log1p(-np.exp(-(np.abs(s) + 1e-7)))
            return np.logaddexp(other + dissimilar, s + similar)
        return (1 - s) * dissimilar + s * similar

    return node(0)


@pytest.fixture(scope="module", params=[False, True], ids=["probabilities", "log_probabilities"])
def tree_model(request):
    return nets.prototree("vgg11", "features.5", 3, TREE_DEPTH, 8, add_on=ADD_ON, input_shape=SHAPE,
                          log_probabilities=request.param, key=jax.random.PRNGKey(11))


def test_prototree_equals_the_recursive_tree(tree_model, x):
    module = tree_model.module
    assert module.num_prototypes == 7 and len(module.leaves) == 8
    scores = np.asarray(jnp.max(tree_model.similarities(x), axis=(1, 2)), np.float64)
    logits = np.asarray(tree_model.variables["params"]["classifier"]["leaf_logits"], np.float64)
    expected = _recursive_tree(scores, logits, TREE_DEPTH, module.log_probabilities)
    np.testing.assert_allclose(tree_model(x), expected, rtol=1e-5, atol=1e-6)
    reach = tree_model.module.apply(tree_model.variables, x, method="leaf_probabilities")
    total = jax.nn.logsumexp(reach, axis=1) if module.log_probabilities else jnp.sum(reach, axis=1)
    np.testing.assert_allclose(total, 0.0 if module.log_probabilities else 1.0, atol=1e-5)


def test_prototree_strategies(tree_model, x):
    variables, module = tree_model.variables, tree_model.module
    scores = np.asarray(jnp.max(tree_model.similarities(x), axis=(1, 2)))
    logits = np.asarray(variables["params"]["classifier"]["leaf_logits"])
    reach = np.asarray(module.apply(variables, x, method="leaf_probabilities"))
    for strategy in ("sample_max", "greedy"):
        output = module.clone(strategy=strategy).apply(variables, x)
        for n in range(x.shape[0]):
            if strategy == "sample_max":
                leaf = int(reach[n].argmax())
            else:
                # Walk down: at node k the similar branch when it is the more probable one.
                prototype, leaf = 0, 0
                for level in range(TREE_DEPTH):
                    s = scores[n, prototype]
                    similar = s >= (np.log1p(-np.exp(-(abs(s) + 1e-7))) if module.log_probabilities else 1 - s)
                    subtree = 2 ** (TREE_DEPTH - level) - 1
                    prototype += 1 + (subtree // 2 if similar else 0)
                    leaf += 2 ** (TREE_DEPTH - level - 1) if similar else 0
            log_distribution = logits[leaf] - np.log(np.exp(logits[leaf]).sum())
            expected = log_distribution if module.log_probabilities else np.exp(log_distribution)
            np.testing.assert_allclose(output[n], expected, rtol=1e-5)
    with pytest.raises(ValueError, match="strategy"):
        module.clone(strategy="vote").apply(variables, x)


def test_prototree_class_mapping_and_attributions(tree_model, x):
    logits = np.asarray(tree_model.variables["params"]["classifier"]["leaf_logits"])
    leaf_classes = logits.argmax(axis=1)
    mapping = np.asarray(tree_model.prototype_class_mapping)
    assert mapping.shape == (7, 3)
    np.testing.assert_array_equal(mapping[0], np.isin(np.arange(3), leaf_classes).astype(np.float32))
    np.testing.assert_array_equal(mapping[2], np.isin(np.arange(3), leaf_classes[:2]).astype(np.float32))
    np.testing.assert_array_equal(mapping[4], np.isin(np.arange(3), leaf_classes[4:]).astype(np.float32))
    for method in (proto.prototype_saliency, proto.prototype_prp):
        # Log-probability similarities are negative: every location passes only a threshold below 0.
        together = method(tree_model, x, 6, similarity_threshold=-1e30, postprocess=False)
        looped = sum(method(tree_model, x, 6, location=(h, w), postprocess=False) for h in range(4) for w in range(4))
        np.testing.assert_allclose(together, looped, rtol=0, atol=1e-5 * float(jnp.abs(looped).max()))
        assert float(jnp.abs(together).max()) > 0
