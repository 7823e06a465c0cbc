"""The program engine against the code before it: the methods it serves, before and after, as ratios.

Each side runs in its own worker process (``PYTHONPATH`` points the "before" worker at an
older checkout, e.g. one made with ``git worktree add /tmp/before <commit>``), on the same
zoo model with the same initialisation key, one after the other in rounds that alternate
which side goes first, so that a shared machine's noise (and any drift) falls on both. Printed: images/s of each side, their ratio
(after / before; above 1 is faster), and the first call's excess over the steady state
(trace and compile time).

    python benchmarks/bench_engine.py --before /tmp/before --models resnet18 --size 224 --batch 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

METHODS = ("saliency", "guided_backprop", "deeplift", "layer_gradcam", "ig_chunked", "conductance_chunked", "lrp",
           "prp", "render_vis", "deep_dream")
PROTOTYPES = 20


_PROTOTYPE_NETS: dict = {}


def _prototype_net(model, model_name: str, layer: str, size: int):
    """A random CaBRNet ProtoPNet on ``model_name`` cut at ``layer`` (built once per worker)."""
    import jax
    import jax.numpy as jnp

    import jaxplain as jx
    from jaxplain.nets.prototype import protopnet

    key = (model_name, layer, size)
    if key not in _PROTOTYPE_NETS:
        probe = jnp.zeros((1, size, size, 3))
        width = jax.eval_shape(lambda v: jx.layer_activation(model, v, layer=layer), probe).shape[-1]
        _PROTOTYPE_NETS[key] = protopnet(model_name, layer, num_classes=10, num_prototypes=PROTOTYPES,
                                         num_features=width, input_shape=(1, size, size, 3), key=jax.random.PRNGKey(0))
    return _PROTOTYPE_NETS[key]


def _worker(model_name: str, size: int, batch: int, methods: list[str], reps: int) -> dict:
    import jax
    import jax.numpy as jnp

    import jaxplain as jx
    from jaxplain import nets
    from jaxplain.optimization import objectives, param

    model = jx.init_model(nets.build(model_name, num_classes=10), (1, size, size, 3), key=jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (batch, size, size, 3))
    target = jnp.arange(batch) % 10
    last = "layer4" if model_name.startswith("resnet") else "features"
    middle = "layer3" if model_name.startswith("resnet") else ("features.denseblock3" if model_name.startswith(
        "densenet") else "features.10")
    calls = {
        "saliency": lambda: jx.saliency(model, x, target),
        "guided_backprop": lambda: jx.guided_backprop(model, x, target),
        "deeplift": lambda: jx.deeplift(model, x, target),
        "layer_gradcam": lambda: jx.layer_gradcam(model, x, target, layer=last),
        "ig_chunked": lambda: jx.integrated_gradients(model, x, target, n_steps=16, batch_size=4),
        "conductance_chunked": lambda: jx.layer_conductance(model, x, target, layer=middle, n_steps=8, batch_size=4),
        "lrp": lambda: jx.lrp(model, x, target, composite="epsilon_plus_flat"),
        "prp": lambda: jx.prototype_prp(_prototype_net(model, model_name, middle, size), x, jnp.arange(batch) % PROTOTYPES,
                                        postprocess=False),
        "render_vis": lambda: jx.render_vis(model, [objectives.channel(middle, n) for n in range(batch)],
                                            key=jax.random.PRNGKey(2), param_f=param.image(size), thresholds=(8,)),
        "deep_dream": lambda: jx.deep_dream(model, jax.nn.sigmoid(x), layer=middle, filter=1, steps=8),
    }
    results = {}
    for name in methods:
        start = time.perf_counter()
        jax.block_until_ready(calls[name]())
        first = time.perf_counter() - start
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            jax.block_until_ready(calls[name]())
            times.append(time.perf_counter() - start)
        steady = statistics.median(times)
        results[name] = {"seconds": steady, "first_excess": first - steady, "package": jx.__file__}
    return results


def _run(checkout: str | None, arguments: argparse.Namespace, method: str) -> dict:
    env = dict(os.environ)
    if checkout:
        env["PYTHONPATH"] = os.path.abspath(checkout)
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--models", arguments.models[0],
               "--size", str(arguments.size), "--batch", str(arguments.batch), "--reps", str(arguments.reps),
               "--methods", method]
    cwd = os.path.abspath(checkout) if checkout else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    output = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=True).stdout
    result = json.loads(output.strip().splitlines()[-1])[method]
    if checkout and not result["package"].startswith(os.path.abspath(checkout)):
        raise RuntimeError(f"the 'before' worker imported {result['package']}, not {checkout}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="checkout of the code before the change")
    parser.add_argument("--models", nargs="+", default=["resnet18"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        print(json.dumps(_worker(arguments.models[0], arguments.size, arguments.batch, arguments.methods,
                                 arguments.reps)))
        return
    print("| model | method | before img/s | after img/s | after / before | first-call excess before / after (s) |")
    print("|---|---|---|---|---|---|")
    for model in arguments.models:
        arguments.models = [model]
        for method in arguments.methods:
            before, after = [], []
            for round_index in range(arguments.rounds):
                sides = [(before, arguments.before), (after, None)]
                for results, checkout in sides[::-1] if round_index % 2 else sides:
                    results.append(_run(checkout, arguments, method))
            b = statistics.median(r["seconds"] for r in before)
            a = statistics.median(r["seconds"] for r in after)
            fb = statistics.median(r["first_excess"] for r in before)
            fa = statistics.median(r["first_excess"] for r in after)
            batch = arguments.batch
            print(f"| {model} | {method} | {batch / b:.2f} | {batch / a:.2f} | {b / a:.2f}x | {fb:.1f} / {fa:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
