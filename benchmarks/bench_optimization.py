"""Feature visualisation against Lucent (torch-lucent 0.1.8): a batch of channel objectives, side by side.

Same torchvision weights (random, from ``--seed``, eval mode) converted to Flax. Both
render ``--channels`` channel objectives of one layer with Lucent's defaults (FFT,
colour-decorrelated images, Adam at 0.05, the standard transforms, the model's
normalisation) for ``--steps`` steps at ``--size`` px, the model seeing
``--input-size`` px (Lucent's ``fixed_image_size``; its own default, 224, with
``--input-size 0``). Lucent renders them as one image batch whose objective is the sum
of ``channel(layer, i, batch=i)``, its fastest form; jaxplain as a vmapped batch of
objectives inside one jit-compiled ``lax.scan``. Each contender is warmed up once
(compile time = warm-up minus the steady median), then timed in interleaved rounds
(``_harness.compare``); images per CPU-second count the work whatever share of the
CPU other jobs take (pin with ``--cpus 0`` for one thread per framework). On a GPU the
torch model goes to CUDA (Lucent puts its images there itself) and peaks are the device
allocators' (``_harness``).

    python benchmarks/bench_optimization.py --cpus 0
    python benchmarks/bench_optimization.py --models vgg11,resnet18 --channels 8,32 --steps 16
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Any, Callable

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _harness as h  # noqa: E402

LAYERS = {"vgg11": "features.10", "vgg16": "features.15", "resnet18": "layer2.1.conv2", "alexnet": "features.8"}


def calls(arch: str, layer: str, channels: int, args: argparse.Namespace) -> dict[str, Callable[[], Any]]:
    """Zero-argument calls of each contender."""
    import jax
    import torch
    import torchvision
    from lucent.optvis import objectives as lucent_objectives
    from lucent.optvis import param as lucent_param
    from lucent.optvis import render as lucent_render

    import converters
    from jaxplain.optimization import objectives, param, render_vis

    torch.manual_seed(args.seed)
    torch_model = getattr(torchvision.models, arch)().eval()
    model = converters.from_torch(torch_model)
    h.to_device(torch_model)
    fixed = args.input_size or None
    lucent_layer = layer.replace(".", "_")
    objective = sum(lucent_objectives.channel(lucent_layer, i, batch=i) for i in range(channels))
    ours = [objectives.channel(layer, i) for i in range(channels)]
    key = jax.random.PRNGKey(args.seed)

    def lucent() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return lucent_render.render_vis(
                torch_model,
                objective,
                lambda: lucent_param.image(args.size, batch=channels),
                thresholds=(args.steps,),
                fixed_image_size=fixed,
                show_image=False,
                progress=False,
            )

    def jaxplain() -> Any:
        return render_vis(
            model, ours, key=key, param_f=param.image(args.size), thresholds=(args.steps,), fixed_image_size=fixed
        )

    return {"jaxplain": jaxplain, "Lucent": lucent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vgg11")
    parser.add_argument(
        "--layer", help="layer path (default per model: " + ", ".join(f"{k} {v}" for k, v in LAYERS.items()) + ")"
    )
    parser.add_argument("--channels", default="8", help="objectives per call, comma-separated")
    parser.add_argument("--size", type=int, default=64, help="image size")
    parser.add_argument("--input-size", type=int, default=88, help="model input size (0: Lucent's default rule)")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpus", help="pin to these CPU ids (e.g. 0); thread pools follow")
    args = parser.parse_args()
    if args.cpus:
        os.sched_setaffinity(0, {int(cpu) for cpu in args.cpus.split(",")})

    import jaxplain  # noqa: F401  (first: it sets XLA's CPU flags before JAX starts)
    import jax
    import torch

    print(
        f"# bench_optimization: {h.device_description(cores_of_total=True)}; "
        f"JAX {jax.__version__} on {jax.devices()[0].device_kind}; "
        f"torch {torch.__version__}; "
        f"{args.size} px images, model input {args.input_size or 'Lucent default'}, {args.steps} steps\n"
    )
    headers = [
        "model",
        "layer",
        "objectives",
        "jaxplain img/s",
        "Lucent img/s",
        "jaxplain / Lucent",
        "same, CPU time",
        "jaxplain compile s",
        "jaxplain peak",
        "Lucent peak",
    ]
    rows = []
    for arch in args.models.split(","):
        layer = args.layer or LAYERS[arch]
        for channels in (int(c) for c in args.channels.split(",")):
            contenders = [
                h.Contender(name, call, h.sync, h.jax_meter() if name == "jaxplain" else h.torch_meter())
                for name, call in calls(arch, layer, channels, args).items()
            ]
            results = h.compare(contenders, channels, args.reps, args.budget_s, lambda e: False)
            ours, peer = results["jaxplain"], results["Lucent"]
            rows.append(
                [
                    arch,
                    layer,
                    str(channels),
                    h.format_rate(ours.rate),
                    h.format_rate(peer.rate),
                    f"{ours.rate / peer.rate:.2f}x",
                    f"{ours.cpu_rate / peer.cpu_rate:.2f}x",
                    f"{ours.compile_s:.1f}",
                    h.format_bytes(ours.peak_bytes),
                    h.format_bytes(peer.peak_bytes),
                ]
            )
            print(h.markdown_table(headers, rows[-1:]).split("\n", 2)[2], flush=True)
    print()
    print(h.markdown_table(headers, rows))


if __name__ == "__main__":
    main()
