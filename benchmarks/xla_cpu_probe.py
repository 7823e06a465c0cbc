"""Probe why XLA CPU's ResNet input gradient trails torch (see XLA_CPU_NOTES.md).

Times forward and forward + input gradient of the zoo ResNet under graph variants
(``--variants base,plainpool,foldbn,nchw,foldbn+nchw,remat-dots``; ``+`` composes)
next to torch on the same converted weights, in one process, blocks of runs per
side. XLA flags go through ``--xla-flags`` (set before jax is imported).

    python benchmarks/xla_cpu_probe.py --arch resnet18 --batch 8 --variants base,foldbn
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _harness as h  # noqa: E402

Array = Any
IDLE_WAIT_S = 300.0
Forward = Callable[[Any, Array], Array]


def _median_rate(fn: Callable[[], Any], batch: int, reps: int) -> tuple[float, float]:
    """(first-call seconds, images/s from the median of ``reps`` later calls on a quiet machine)."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    h.wait_for_idle(IDLE_WAIT_S)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return first, batch / statistics.median(times)


def _torch_rates(arch: str, batch: int, size: int, reps: int, seed: int) -> tuple[Any, dict[str, float]]:
    import torch
    import torchvision

    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)().eval()
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    target = torch.arange(batch) * 37 % 1000

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def gradient() -> None:
        inp = x.clone().requires_grad_(True)
        out = model(inp).gather(1, target[:, None]).sum()
        torch.autograd.grad(out, inp)

    _, fwd = _median_rate(forward, batch, reps)
    _, grad = _median_rate(gradient, batch, reps)
    return model, {"fwd": fwd, "grad": grad}


def _fold_batchnorm(variables: dict) -> dict:
    """Fold every BatchNorm into the convolution before it; BN keeps only a bias."""
    from flax import traverse_util
    import jax.numpy as jnp

    params = traverse_util.flatten_dict(variables["params"], sep="/")
    stats = traverse_util.flatten_dict(variables["batch_stats"], sep="/")
    for key in [k for k in params if k.endswith("/scale")]:
        prefix = key[: -len("/scale")]
        parent, name = prefix.rsplit("/", 1) if "/" in prefix else ("", prefix)
        conv = f"{parent}/0" if name == "1" else f"{parent}/conv{name[2:]}" if parent else f"conv{name[2:]}"
        factor = params[key] / jnp.sqrt(stats[f"{prefix}/var"] + 1e-5)
        params[f"{conv}/kernel"] = params[f"{conv}/kernel"] * factor
        params[f"{prefix}/bias"] = params[f"{prefix}/bias"] - stats[f"{prefix}/mean"] * factor
        del params[key], stats[f"{prefix}/mean"], stats[f"{prefix}/var"]
    return {"params": traverse_util.unflatten_dict(params, sep="/")}


def _interceptor(kinds: set[str]) -> Callable:
    """A Flax method interceptor rewriting layers for a set of graph variants."""
    import flax.linen as nn
    import jax.numpy as jnp
    from jax import lax

    from jaxplain.nets import layers

    nchw = "nchw" in kinds

    def pool(x: Array, module: Any) -> Array:
        dims = (1, 1, 3, 3) if nchw else (1, 3, 3, 1)
        step = (1, 1, 2, 2) if nchw else (1, 2, 2, 1)
        pads = ((0, 0), (0, 0), (1, 1), (1, 1)) if nchw else ((0, 0), (1, 1), (1, 1), (0, 0))
        return lax.reduce_window(x, -jnp.inf, lax.max, dims, step, pads)

    def intercept(next_fun: Callable, args: tuple, kwargs: dict, context: nn.module.InterceptorContext) -> Array:
        module = context.module
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        if not nchw and "foldbn" in kinds and isinstance(module, layers.BatchNorm2d):
            return args[0] + module.get_variable("params", "bias")
        if not nchw and "plainpool" in kinds and isinstance(module, layers.MaxPool2d):
            return pool(args[0], module)
        if not nchw:
            return next_fun(*args, **kwargs)
        x = args[0]
        if isinstance(module, layers.Conv2d):
            pad = layers._pair(module.padding)
            return lax.conv_general_dilated(
                x,
                module.get_variable("params", "kernel"),
                layers._pair(module.stride),
                ((pad[0], pad[0]), (pad[1], pad[1])),
                dimension_numbers=("NCHW", "HWIO", "NCHW"),
            )
        if isinstance(module, layers.BatchNorm2d):
            bias = module.get_variable("params", "bias")
            if not module.has_variable("batch_stats", "mean"):
                return x + bias[:, None, None]
            factor = module.get_variable("params", "scale") * lax.rsqrt(module.get_variable("batch_stats", "var") + module.eps)
            shift = bias - module.get_variable("batch_stats", "mean") * factor
            return x * factor[:, None, None] + shift[:, None, None]
        if isinstance(module, layers.MaxPool2d):
            return pool(x, module)
        if isinstance(module, layers.AdaptiveAvgPool2d):
            return jnp.mean(x, axis=(2, 3), keepdims=True)
        if isinstance(module, layers.Flatten):
            return x.reshape(x.shape[0], -1)
        return next_fun(*args, **kwargs)

    return intercept


def build_forward(model: Any, variant: str) -> tuple[Forward, Any]:
    """``(forward(variables, x_nhwc), variables)`` for a ``+``-joined variant name."""
    import flax.linen as nn
    import jax

    parts = [] if variant == "base" else variant.split("+")
    variables = _fold_batchnorm(model.variables) if "foldbn" in parts else model.variables
    kinds = {p for p in parts if p in ("foldbn", "plainpool", "nchw")}
    policy = next((p.split("-", 1)[1] for p in parts if p.startswith("remat-")), None)
    unknown = [p for p in parts if p not in kinds and not p.startswith("remat-")]
    if unknown:
        raise ValueError(f"unknown variant parts {unknown}")

    def forward(variables: Any, x: Array) -> Array:
        if "nchw" in kinds:
            x = x.transpose(0, 3, 1, 2)
        with nn.intercept_methods(_interceptor(kinds)):
            return model.module.apply(variables, x)

    if policy is not None:
        forward = jax.checkpoint(forward, policy=getattr(jax.checkpoint_policies, f"{policy}_saveable"))
    return forward, variables


def main(argv: list[str] | None = None) -> None:
    """Print one JSON line per variant plus one for torch."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--variants", default="base")
    parser.add_argument("--xla-flags", default="")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--check", action="store_true", help="compare each variant's gradient with base")
    args = parser.parse_args(argv)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()

    import jax
    import jax.numpy as jnp
    import numpy as np

    import converters

    torch_model, torch_rates = _torch_rates(args.arch, args.batch, args.size, 1 if args.no_torch else args.reps, 0)
    model = converters.from_torch(torch_model)
    if not args.no_torch:
        print(json.dumps({"arch": args.arch, "batch": args.batch, "variant": "torch", **torch_rates}), flush=True)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((args.batch, args.size, args.size, 3), np.float32))
    target = jnp.arange(args.batch) * 37 % 1000
    reference = None
    for variant in args.variants.split(","):
        forward, variables = build_forward(model, variant)
        fwd = jax.jit(forward)

        def loss(v: Any, x: Array, forward: Forward = forward) -> Array:
            return jnp.take_along_axis(forward(v, x), target[:, None], axis=1).sum()

        grad = jax.jit(jax.grad(loss, argnums=1))
        first_f, rate_f = _median_rate(lambda: fwd(variables, x).block_until_ready(), args.batch, args.reps)
        first_g, rate_g = _median_rate(lambda: grad(variables, x).block_until_ready(), args.batch, args.reps)
        row = {"arch": args.arch, "batch": args.batch, "variant": variant, "flags": args.xla_flags, "fwd": rate_f,
               "grad": rate_g, "compile_fwd": first_f - args.batch / rate_f, "compile_grad": first_g - args.batch / rate_g}
        if args.check:
            result = np.asarray(grad(variables, x))
            reference = result if reference is None else reference
            row["max_rel_diff"] = float(np.abs(result - reference).max() / np.abs(reference).max())
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
