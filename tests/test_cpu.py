"""The CPU workarounds (jaxplain.cpu): the patches path equals lax's convolution, and on another
backend neither the patches path nor the loop-body convolution rule is in the program."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxplain.cpu import small_conv

CASES = [
    # (H, W, C, kh, kw, O, strides, padding)
    (2, 2, 5, 3, 3, 4, (1, 1), ((1, 1), (1, 1))),
    (1, 1, 3, 3, 3, 2, (1, 1), ((1, 1), (1, 1))),
    (2, 2, 4, 3, 3, 3, (2, 2), ((1, 1), (1, 1))),
    (2, 3, 2, 3, 3, 2, (1, 2), ((1, 0), (0, 1))),
    (3, 3, 3, 7, 7, 4, (2, 2), ((3, 3), (3, 3))),
    (2, 2, 2, 3, 3, 2, (1, 1), ((0, 2), (2, 0))),
]


def reference(inputs, kernel, strides, padding):
    return lax.conv_general_dilated(inputs, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("case", CASES)
def test_patches_path_equals_lax_forward_and_gradients(case):
    height, width, channels, kh, kw, out, strides, padding = case
    assert small_conv.is_smaller_than_kernel((2, height, width, channels), (kh, kw, channels, out))
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    inputs = jax.random.normal(keys[0], (2, height, width, channels))
    kernel = jax.random.normal(keys[1], (kh, kw, channels, out))
    expected = reference(inputs, kernel, strides, padding)
    got = small_conv.conv2d(inputs, kernel, strides, padding)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    cotangent = jax.random.normal(keys[2], expected.shape)

    def loss(conv):
        return lambda x, w: jnp.sum(conv(x, w, strides, padding) * cotangent)

    grads = jax.grad(loss(small_conv.conv2d), argnums=(0, 1))(inputs, kernel)
    expected_grads = jax.grad(loss(reference), argnums=(0, 1))(inputs, kernel)
    for ours, theirs in zip(grads, expected_grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_large_maps_and_grouped_convolutions_take_lax_path():
    inputs = jnp.ones((1, 8, 8, 4))
    kernel = jnp.ones((3, 3, 2, 4))
    assert not small_conv.is_smaller_than_kernel(inputs.shape, kernel.shape)
    got = small_conv.conv2d(inputs, kernel, (1, 1), ((1, 1), (1, 1)), groups=2)
    expected = lax.conv_general_dilated(inputs, kernel, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=2)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def _primitives(*args):
    """The primitives of a fresh trace of ``small_conv.conv2d`` (a new function object: no trace cache), nested
    calls inlined."""
    from jaxplain.program.graph import body_primitives

    jaxpr = jax.make_jaxpr(lambda x, k: small_conv.conv2d(x, k, (1, 1), ((1, 1), (1, 1))))(*args)
    return set(body_primitives(jaxpr.jaxpr))


def test_float64_convolutions_are_products_over_patches_and_equal_lax():
    """XLA CPU's fast convolution kernels take float32 and float16 only; a float64 convolution of any size goes by
    patches on the CPU (a matrix product, fast in float64) and equals lax's, forward and gradients."""
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        inputs = jnp.asarray(rng.standard_normal((2, 9, 7, 3)), jnp.float64)
        kernel = jnp.asarray(rng.standard_normal((3, 3, 3, 4)), jnp.float64)
        assert not small_conv.is_smaller_than_kernel(inputs.shape, kernel.shape)
        assert "conv_general_dilated" not in _primitives(inputs, kernel)
        assert "conv_general_dilated" in _primitives(inputs.astype(jnp.float32), kernel.astype(jnp.float32))
        for strides, padding in [((1, 1), ((1, 1), (1, 1))), ((2, 2), ((1, 0), (2, 1))), ((2, 1), ((0, 0), (0, 0)))]:
            out_shape = reference(inputs, kernel, strides, padding).shape
            cotangent = jnp.asarray(rng.standard_normal(out_shape), jnp.float64)

            @jax.jit
            def both(x, w, strides=strides, padding=padding):
                results = []
                for conv in (small_conv.conv2d, reference):
                    out, pullback = jax.vjp(lambda x, w: conv(x, w, strides, padding), x, w)
                    results.append((out, *pullback(cotangent)))
                return results

            ours, theirs = both(inputs, kernel)
            assert ours[0].dtype == jnp.float64
            for a, b in zip(ours, theirs):
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_the_program_engine_sees_a_convolution_where_the_layer_computes_patches():
    """The patches call is read back as the convolution it computes (strides and padding kept), the engine evaluates
    the model to its direct output, and a convolution node the engine binds in float64 goes by patches too."""
    import flax.linen as nn

    import jaxplain as jx
    from jaxplain import program
    from jaxplain.nets.layers import Conv2d
    from jaxplain.program.graph import body_primitives
    from jaxplain.program.interpret import bind, evaluate

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return Conv2d(4, 3, stride=2, padding=1, name="conv")(x)

    x = jax.random.normal(jax.random.PRNGKey(2), (2, 2, 2, 3))
    module = Net()
    model = jx.as_model(module.bind(module.init(jax.random.PRNGKey(0), x)))
    graph = program.graph_of(model, x)
    (node,) = [n for n in graph.nodes if n.primitive == "conv_general_dilated"]
    assert node.name == "conv" and node.kind == "linear"
    assert tuple(node.eqn.params["window_strides"]) == (2, 2)
    assert tuple(map(tuple, node.eqn.params["padding"])) == ((1, 1), (1, 1))
    assert "dot_general" not in {n.primitive for n in graph.nodes}
    np.testing.assert_allclose(evaluate(graph, program.params_of(model), x)[0], model(x), rtol=1e-6)

    with jax.enable_x64(True):
        kernel = jnp.asarray(np.random.default_rng(3).standard_normal((3, 3, 3, 4)), jnp.float64)
        user = jx.Model.from_function(
            lambda k, v: lax.conv_general_dilated(v, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")),
            kernel)
        big = jnp.asarray(np.random.default_rng(4).standard_normal((1, 6, 5, 3)), jnp.float64)
        (node,) = [n for n in program.graph_of(user, big).nodes if n.primitive == "conv_general_dilated"]
        bound = jax.make_jaxpr(lambda v, k: bind(node, [v, k]))(big, kernel).jaxpr
        assert "conv_general_dilated" not in body_primitives(bound)
        np.testing.assert_allclose(bind(node, [big, kernel])[0], user(big), rtol=1e-12, atol=1e-12)


def test_workarounds_apply_on_the_cpu_backend_only(monkeypatch):
    import jaxplain as jx
    from jaxplain import program
    from jaxplain.cpu import fast_conv

    inputs, kernel = jnp.ones((1, 2, 2, 3)), jnp.ones((3, 3, 3, 4))
    padding = ((1, 1), (1, 1))
    conv = lambda x, k: small_conv.conv2d(x, k, (1, 1), padding)
    model = jx.Model.from_function(
        lambda p, x: lax.conv_general_dilated(x, p, (1, 1), "SAME", dimension_numbers=fast_conv.DIMENSIONS),
        jnp.ones((3, 3, 3, 4)))
    node = next(n for n in program.graph_of(model, jnp.ones((1, 8, 8, 3))).nodes if n.primitive == "conv_general_dilated")
    assert jax.default_backend() == "cpu"
    assert "conv_general_dilated" not in _primitives(inputs, kernel)
    assert fast_conv.node_rules(node) is not None
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert "conv_general_dilated" in _primitives(inputs, kernel)
    assert fast_conv.node_rules(node) is None
    np.testing.assert_allclose(conv(inputs, kernel), reference(inputs, kernel, (1, 1), padding), rtol=1e-6)


@pytest.mark.parametrize("numbers, x_shape, k_shape, window", [
    (("NHWC", "HWIO", "NHWC"), (2, 18, 17, 3), (4, 4, 3, 5), (4, 4)),
    (("NCHW", "OIHW", "NCHW"), (2, 3, 16, 20), (5, 3, 4, 5), (4, 5)),
    (("NCHW", "OIHW", "NHWC"), (1, 3, 9, 9), (6, 3, 3, 3), (3, 3)),
    (("NWC", "WIO", "NWC"), (2, 13, 4), (3, 4, 7), (3,)),
])
def test_patch_convolution_as_a_product_matches_the_convolution_and_its_gradients(numbers, x_shape, k_shape, window):
    import jaxplain as jx
    from jaxplain import program
    from jaxplain.cpu import patch_conv

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(x_shape), jnp.float64 if jax.config.x64_enabled else jnp.float32)
    k = jnp.asarray(rng.standard_normal(k_shape), x.dtype)
    conv = lambda k, x: lax.conv_general_dilated(x, k, window, "VALID", dimension_numbers=numbers)
    graph = program.graph_of(jx.Model.from_function(conv, k), x)
    node = next(n for n in graph.nodes if n.primitive == "conv_general_dilated")
    assert patch_conv.is_patch_conv(node)
    ours = lambda k, x: patch_conv.conv_as_product(node, x, k)
    np.testing.assert_allclose(ours(k, x), conv(k, x), rtol=1e-5, atol=1e-5)
    cotangent = jnp.asarray(rng.standard_normal(conv(k, x).shape), x.dtype)
    for a, b in zip(jax.vjp(ours, k, x)[1](cotangent), jax.vjp(conv, k, x)[1](cotangent)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def _patch_models():
    """A patch convolution then a dense layer, as a plain function and as idiomatic linen."""
    import flax.linen as nn

    import jaxplain as jx

    rng = np.random.default_rng(1)
    params = {"k": jnp.asarray(rng.standard_normal((4, 4, 3, 6)), jnp.float32),
              "w": jnp.asarray(rng.standard_normal((6 * 16, 5)), jnp.float32)}

    def net(p, x):
        h = lax.conv_general_dilated(x, p["k"], (4, 4), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return h.reshape(h.shape[0], -1) @ p["w"]

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.Conv(6, (4, 4), strides=4, padding="VALID")(x)
            return nn.Dense(5)(h.reshape(h.shape[0], -1))

    linen = Net()
    return {"function": jx.Model.from_function(net, params),
            "linen": jx.Model(linen, linen.init(jax.random.PRNGKey(1), jnp.ones((1, 16, 16, 3))))}


@pytest.mark.parametrize("form", ["function", "linen"])
def test_patch_convolution_rule_is_cpu_only_and_keeps_lrp(monkeypatch, form):
    import jaxplain as jx
    from jaxplain import program
    from jaxplain.cpu import patch_conv

    model = _patch_models()[form]
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 16, 16, 3)), jnp.float32)
    nodes = [n for n in program.graph_of(model, x).nodes if n.primitive == "conv_general_dilated"]
    assert [patch_conv.is_patch_conv(n) for n in nodes] == [True]
    assert patch_conv.uses_product(nodes[0])
    on_cpu = jx.lrp(model, x, jnp.array([0, 3]), composite="attn_lrp", conv_gamma=0.25)
    lowered = jax.jit(lambda x: jx.lrp(model, x, jnp.array([0, 3]), composite="attn_lrp")).lower(x).as_text()
    assert "convolution" not in lowered
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert not patch_conv.uses_product(nodes[0])
    # Another batch size: programs traced (and cached) under the CPU backend are not reused.
    wider, targets = jnp.concatenate([x, x[:1]]), jnp.array([0, 3, 1])
    elsewhere = jx.lrp(model, wider, targets, composite="attn_lrp", conv_gamma=0.25)[:2]
    lowered = jax.jit(lambda x: jx.lrp(model, x, targets, composite="attn_lrp")).lower(wider).as_text()
    assert "convolution" in lowered
    np.testing.assert_allclose(on_cpu, elsewhere, rtol=1e-4, atol=1e-5 * float(jnp.abs(elsewhere).max()))
