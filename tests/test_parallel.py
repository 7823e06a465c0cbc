"""explain_sharded and explain_dataset on four simulated CPU devices (in a subprocess: the
device count must be set before JAX starts)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

CHECKS = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    import jaxplain as jx
    from jaxplain.parallel import explain_dataset, explain_sharded
    from tests.test_metrics import numpy_tiny_model

    assert jax.device_count() == 4, jax.devices()
    def tiny_inputs(batch, seed=1):
        return jnp.asarray(np.random.default_rng(seed).normal(size=(batch, 12, 10, 3)), jnp.float32)

    model, inputs, target = numpy_tiny_model(), tiny_inputs(6), jnp.array([0, 1, 2, 3, 4, 0])
    cases = [(jx.input_x_gradient, {}), (jx.integrated_gradients, {"n_steps": 4, "baselines": 0.1 * inputs})]
    for method, options in cases:
        sharded = explain_sharded(method, model, inputs, target, **options)
        np.testing.assert_allclose(sharded, method(model, inputs, target, **options), rtol=1e-6, atol=1e-6)

    seen = []
    def spy(model, inputs, target):
        jax.debug.inspect_array_sharding(inputs, callback=seen.append)
        return jx.input_x_gradient(model, inputs, target)
    explain_sharded(spy, model, inputs, target)
    assert len(seen[0].device_set) == 4 and seen[0].spec == jax.sharding.PartitionSpec("batch"), seen

    even = tiny_inputs(8, seed=2)
    maps, delta = explain_sharded(jx.integrated_gradients, model, even, None, n_steps=4, return_convergence_delta=True)
    for leaf in (maps, delta):
        assert len(leaf.sharding.device_set) == 4 and [s.data.shape[0] for s in leaf.addressable_shards] == [2] * 4
    np.testing.assert_allclose(maps, jx.integrated_gradients(model, even, None, n_steps=4), rtol=1e-6, atol=1e-6)

    images = tiny_inputs(10, seed=3)
    targets = np.arange(10) % 5
    one_call = jx.input_x_gradient(model, images, jnp.asarray(targets))
    batches = list(explain_dataset(jx.input_x_gradient, model, images, targets, batch_size=4))
    assert [b.shape[0] for b in batches] == [4, 4, 2]
    np.testing.assert_allclose(jnp.concatenate(batches), one_call, rtol=1e-6, atol=1e-6)
    streamed = explain_dataset(jx.input_x_gradient, model, iter(list(images)), iter(targets.tolist()), batch_size=4)
    np.testing.assert_allclose(jnp.concatenate(list(streamed)), one_call, rtol=1e-6, atol=1e-6)
    """
)


def test_sharded_explanations_equal_the_one_device_call():
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in [env.get("PYTHONPATH")] if p])
    result = subprocess.run([sys.executable, "-c", CHECKS], env=env, cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]


def test_bad_options_raise_a_clear_error():
    import jax.numpy as jnp
    import pytest

    import numpy as np

    import jaxplain as jx
    from jaxplain.parallel import explain_dataset, explain_sharded
    from tests.test_metrics import numpy_tiny_model

    model = numpy_tiny_model()
    inputs = jnp.asarray(np.random.default_rng(0).normal(size=(2, 12, 10, 3)), jnp.float32)
    with pytest.raises(ValueError, match="out of range"):
        explain_sharded(jx.saliency, model, inputs, 7)
    with pytest.raises(ValueError, match="per_example"):
        explain_sharded(jx.saliency, model, inputs, 1, per_example=("baselines",))
    with pytest.raises(ValueError, match="hashable"):
        explain_sharded(jx.integrated_gradients, model, inputs, 1, baselines=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="batch_size"):
        next(explain_dataset(jx.saliency, model, inputs, batch_size=0))
    with pytest.raises(ValueError, match="fewer"):
        list(explain_dataset(jx.saliency, model, inputs, jnp.array([1]), batch_size=2))
