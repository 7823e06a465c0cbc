"""Probe why XLA CPU's ResNet input gradient trails torch (see XLA_CPU_NOTES.md).

Times forward and forward + input gradient of the zoo ResNet under graph variants
(``--variants base,plainpool,foldbn,nchw,foldbn+nchw,remat-dots``; ``+`` composes)
next to torch on the same converted weights, in one process, calls interleaved round
by round (see :func:`interleaved`). ``--convs`` times the strided convolutions alone.
XLA flags go through ``--xla-flags`` (set before jax is imported).

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
Forward = Callable[[Any, Array], Array]


def interleaved(fns: dict[str, Callable[[], Any]], reps: int, idle_wait_s: float = 0.0) -> dict[str, dict[str, float]]:
    """Warm each function up, then ``reps`` rounds calling each once, in rotating order.

    Per name: ``first`` (warm-up seconds), ``median`` and ``best`` wall seconds, and
    ``cpu``, the median process CPU seconds. Round-robin spreads a shared machine's
    noise evenly over the variants; pinned to one core (``taskset -c N``), CPU seconds
    measure the work itself, whatever share of the core other jobs take.
    """
    stats: dict[str, dict[str, Any]] = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        fn()
        stats[name] = {"first": time.perf_counter() - start, "times": [], "cpu": []}
    names = list(fns)
    for round_index in range(reps):
        h.wait_for_idle(idle_wait_s)
        for name in names[round_index % len(names) :] + names[: round_index % len(names)]:
            start, cpu = time.perf_counter(), time.process_time()
            fns[name]()
            stats[name]["times"].append(time.perf_counter() - start)
            stats[name]["cpu"].append(time.process_time() - cpu)
    return {name: {"first": s["first"], "median": statistics.median(s["times"]), "best": min(s["times"]),
                   "cpu": statistics.median(s["cpu"])} for name, s in stats.items()}


def _torch_functions(arch: str, batch: int, size: int, seed: int) -> tuple[Any, dict[str, Callable[[], Any]]]:
    """The seeded torchvision model and its forward / input-gradient calls."""
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

    return model, {"torch fwd": forward, "torch grad": gradient}


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
        if "laxconv" in kinds and isinstance(module, layers.Conv2d):
            pad = layers._pair(module.padding)
            out = lax.conv_general_dilated(args[0], module.get_variable("params", "kernel"), layers._pair(module.stride),
                                           ((pad[0], pad[0]), (pad[1], pad[1])),
                                           rhs_dilation=layers._pair(module.dilation),
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                           feature_group_count=module.groups)
            return out + module.get_variable("params", "bias") if module.use_bias else out
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
    kinds = {p for p in parts if p in ("foldbn", "plainpool", "nchw", "laxconv")}
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


STRIDED_CONVS = {  # (input size, in, out, kernel) of every stride-2 convolution, at 224 px
    "resnet18": [(224, 3, 64, 7), (56, 64, 128, 3), (28, 128, 256, 3), (14, 256, 512, 3),
                 (56, 64, 128, 1), (28, 128, 256, 1), (14, 256, 512, 1)],
    "resnet50": [(224, 3, 64, 7), (56, 128, 128, 3), (28, 256, 256, 3), (14, 512, 512, 3),
                 (56, 256, 512, 1), (28, 512, 1024, 1), (14, 1024, 2048, 1)],
}


def _conv(x: Array, w: Array, strides: tuple[int, int], padding: Any) -> Array:
    from jax import lax

    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def phase_input_gradient(cotangent: Array, kernel: Array, input_shape: tuple[int, ...], stride: int, pad: int) -> Array:
    """A stride-``s`` convolution's input gradient as ``s*s`` stride-1 convolutions, one per output phase."""
    import jax.numpy as jnp

    n, height, width, channels = input_shape
    rows, cols = -(-(height + 2 * pad) // stride), -(-(width + 2 * pad) // stride)
    phases = []
    for r in range(stride):
        for q in range(stride):
            taps = kernel[r::stride, q::stride]
            if taps.size == 0:
                phases.append(jnp.zeros((n, rows, cols, channels), cotangent.dtype))
                continue
            kr, kq = taps.shape[:2]
            flipped = taps.transpose(0, 1, 3, 2)[::-1, ::-1]
            phase = _conv(cotangent, flipped, (1, 1), ((kr - 1, kr - 1), (kq - 1, kq - 1)))[:, :rows, :cols]
            phases.append(jnp.pad(phase, ((0, 0), (0, rows - phase.shape[1]), (0, cols - phase.shape[2]), (0, 0))))
    stacked = jnp.stack(phases).reshape(stride, stride, n, rows, cols, channels)
    full = stacked.transpose(2, 3, 0, 4, 1, 5).reshape(n, rows * stride, cols * stride, channels)
    return full[:, pad : pad + height, pad : pad + width]


def phase_sum_conv(x: Array, w: Array, stride: int, pad: int) -> Array:
    """A stride-``s`` convolution as the sum of ``s*s`` stride-1 convolutions of the input's phases."""
    import jax.numpy as jnp
    from jax import lax

    k = w.shape[0]
    out = (x.shape[1] + 2 * pad - k) // stride + 1
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    total = None
    for r in range(min(stride, k)):
        for q in range(min(stride, k)):
            part = lax.conv_general_dilated(xp[:, r::stride, q::stride], w[r::stride, q::stride], (1, 1), "VALID",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))[:, :out, :out]
            total = part if total is None else total + part
    return total


def space_to_depth_conv(x: Array, w: Array, stride: int, pad: int) -> Array:
    """A stride-``s`` convolution as one stride-1 convolution of the space-to-depth input."""
    import jax.numpy as jnp
    from jax import lax

    k, _, cin, cout = w.shape
    taps = -(-k // stride)
    out = (x.shape[1] + 2 * pad - k) // stride + 1
    size = (out - 1 + taps) * stride
    xp = jnp.pad(x, ((0, 0), (pad, max(0, size - x.shape[1] - pad)), (pad, max(0, size - x.shape[2] - pad)), (0, 0)))
    xp = xp[:, :size, :size]
    n = x.shape[0]
    xs = xp.reshape(n, size // stride, stride, size // stride, stride, cin).transpose(0, 1, 3, 2, 4, 5)
    xs = xs.reshape(n, size // stride, size // stride, stride * stride * cin)
    wp = jnp.pad(w, ((0, taps * stride - k), (0, taps * stride - k), (0, 0), (0, 0)))
    ws = wp.reshape(taps, stride, taps, stride, cin, cout).transpose(0, 2, 1, 3, 4, 5).reshape(taps, taps, -1, cout)
    return lax.conv_general_dilated(xs, ws, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv_rows(arch: str, batch: int, reps: int, idle_wait_s: float) -> None:
    """Per strided convolution: forward and input-gradient ms, XLA (autodiff, by phase) and torch."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    for size, cin, cout, k in STRIDED_CONVS[arch]:
        x = rng.standard_normal((batch, size, size, cin), np.float32)
        w = rng.standard_normal((k, k, cin, cout), np.float32) * 0.05
        pad = ((k // 2, k // 2),) * 2
        xj, wj = jnp.asarray(x), jnp.asarray(w)
        y = _conv(xj, wj, (2, 2), pad)
        ct = jnp.ones_like(y)
        fwd = jax.jit(lambda x, w: _conv(x, w, (2, 2), pad))
        native = jax.jit(lambda x, w, ct: jax.vjp(lambda x: _conv(x, w, (2, 2), pad), x)[1](ct)[0])
        phased = jax.jit(lambda w, ct: phase_input_gradient(ct, w, x.shape, 2, k // 2))
        alternatives = {name: (jax.jit(lambda x, w, f=f: f(x, w, 2, k // 2)),
                               jax.jit(lambda x, w, ct, f=f: jax.vjp(lambda x: f(x, w, 2, k // 2), x)[1](ct)[0]))
                        for name, f in (("phasesum", phase_sum_conv), ("s2d", space_to_depth_conv))}
        xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        wt = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous()
        ctt = torch.ones(batch, cout, *y.shape[1:3])
        fns = {
            "xla_fwd": lambda: fwd(xj, wj).block_until_ready(),
            "xla_grad": lambda: native(xj, wj, ct).block_until_ready(),
            "phase_grad": lambda: phased(wj, ct).block_until_ready(),
            "torch_fwd": lambda: torch.nn.functional.conv2d(xt, wt, stride=2, padding=k // 2),
            "torch_grad": lambda: torch.nn.grad.conv2d_input(xt.shape, wt, ctt, stride=2, padding=k // 2),
        }
        for name, (f_fwd, f_grad) in alternatives.items():
            fns[f"{name}_fwd"] = lambda f=f_fwd: f(xj, wj).block_until_ready()
            fns[f"{name}_grad"] = lambda f=f_grad: f(xj, wj, ct).block_until_ready()
        with torch.no_grad():
            stats = interleaved(fns, reps, idle_wait_s)
        row = {"conv": f"{size}px {cin}->{cout} {k}x{k}/2", "busy": round(h.busy_cores(), 2)}
        row.update({f"{name}_ms": round(1000 * s["best"], 2) for name, s in stats.items()})
        row.update({f"{name}_cpu_ms": round(1000 * s["cpu"], 2) for name, s in stats.items()})
        print(json.dumps(row), flush=True)


def scan_rows(arch: str, batch: int, size: int, steps: int, chunk: int, reps: int, idle_wait_s: float) -> None:
    """A sum of input gradients over ``steps`` scaled inputs: one vmapped pass vs ``lax.scan`` over chunks."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import converters

    torch_model, _ = _torch_functions(arch, batch, size, 0)
    model = converters.from_torch(torch_model)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, size, size, 3), np.float32))
    target = jnp.arange(batch) * 37 % 1000
    alphas = jnp.linspace(1.0 / steps, 1.0, steps)

    def gradients(model: Any, chunk_alphas: Array) -> Array:
        def one(alpha: Array) -> Array:
            loss = lambda z: jnp.take_along_axis(model(z), target[:, None], axis=1).sum()  # noqa: E731
            return jax.grad(loss)(alpha * x)

        return jax.vmap(one)(chunk_alphas).sum(0)

    def scanned(model: Any, unroll: bool) -> Array:
        step = lambda total, part: (total + gradients(model, part), None)  # noqa: E731
        return jax.lax.scan(step, jnp.zeros_like(x), alphas.reshape(-1, chunk), unroll=unroll)[0]

    variants = {"one vmapped pass": jax.jit(lambda m: gradients(m, alphas)),
                "lax.scan over chunks": jax.jit(lambda m: scanned(m, False)),
                "lax.scan, unroll=True": jax.jit(lambda m: scanned(m, True))}
    stats = interleaved({name: lambda f=f: f(model).block_until_ready() for name, f in variants.items()}, reps,
                        idle_wait_s)
    for name, s in stats.items():
        print(json.dumps({"arch": arch, "variant": name, "steps": steps, "chunk": chunk,
                          "grad_img_per_cpu_s": round(batch * steps / s["cpu"], 2), "first_s": round(s["first"], 1)}))


def main(argv: list[str] | None = None) -> None:
    """Print one JSON line per timed function."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--variants", default="base")
    parser.add_argument("--xla-flags", default="")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--check", action="store_true", help="compare each variant's gradient with base")
    parser.add_argument("--convs", action="store_true", help="time the strided convolutions one by one instead")
    parser.add_argument("--scan", type=int, metavar="CHUNK",
                        help="compare a vmapped sum of gradients over 8 steps with lax.scan over chunks of CHUNK")
    parser.add_argument("--idle-wait-s", type=float, default=0.0, help="wait up to this long for a quiet CPU per round")
    args = parser.parse_args(argv)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
    if args.convs:
        conv_rows(args.arch, args.batch, args.reps, args.idle_wait_s)
        return
    if args.scan:
        scan_rows(args.arch, args.batch, args.size, 8, args.scan, args.reps, args.idle_wait_s)
        return

    import jax
    import jax.numpy as jnp
    import numpy as np

    import converters

    torch_model, fns = _torch_functions(args.arch, args.batch, args.size, 0)
    if args.no_torch:
        fns = {}
    model = converters.from_torch(torch_model)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((args.batch, args.size, args.size, 3), np.float32))
    target = jnp.arange(args.batch) * 37 % 1000
    gradients = {}
    for variant in args.variants.split(","):
        forward, variables = build_forward(model, variant)
        fwd = jax.jit(forward)

        def loss(v: Any, x: Array, forward: Forward = forward) -> Array:
            return jnp.take_along_axis(forward(v, x), target[:, None], axis=1).sum()

        grad = jax.jit(jax.grad(loss, argnums=1))
        fns[f"{variant} fwd"] = lambda fwd=fwd, v=variables: fwd(v, x).block_until_ready()
        fns[f"{variant} grad"] = lambda grad=grad, v=variables: grad(v, x).block_until_ready()
        gradients[variant] = lambda grad=grad, v=variables: np.asarray(grad(v, x))
    stats = interleaved(fns, args.reps, args.idle_wait_s)
    reference = None
    for name, s in stats.items():
        variant, kind = name.rsplit(" ", 1)
        row = {"arch": args.arch, "batch": args.batch, "variant": variant, "kind": kind, "flags": args.xla_flags,
               "median_img_s": round(args.batch / s["median"], 2), "best_img_s": round(args.batch / s["best"], 2),
               "cpu_img_s": round(args.batch / s["cpu"], 2), "first_s": round(s["first"], 2)}
        if args.check and variant in gradients and kind == "grad":
            result = gradients[variant]()
            reference = result if reference is None else reference
            row["max_rel_diff"] = float(np.abs(result - reference).max() / np.abs(reference).max())
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
