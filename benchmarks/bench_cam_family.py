"""Grad-CAM++, Ablation-CAM, Score-CAM and FullGrad against pytorch-grad-cam, side by side in one process.

Same torchvision weights (random, from ``--seed``, eval mode) converted to Flax, same inputs
and one target per image (``ClassifierOutputTarget``); both sides return the library's final
map (``postprocess="pytorch_grad_cam"``). Each contender is warmed up once (compile time =
warm-up minus the steady median), then timed in interleaved rounds (``_harness.compare``);
``busy cores`` is the cores kept busy just before the timed rounds, measured when
``--idle-wait-s`` is set (it waits that long at most for an idle machine). Ablation-CAM and Score-CAM pass ``--channel-batch``
channels per forward pass on both sides.

Score-CAM: jaxplain's ``score_cam(flavour="pytorch_grad_cam")`` against pytorch-grad-cam's
``ScoreCAM``: the same computation (every channel scored, a softmax over channels of the target
logit). All four methods use ``layer4`` (FullGrad uses every bias layer).

    python benchmarks/bench_cam_family.py                       # the target: ResNet-50, 224 px, batch 8
    taskset -c 0 python benchmarks/bench_cam_family.py --models resnet18 --size 64 --batch 2 --reps 1 --torch-threads 1
    python benchmarks/bench_cam_family.py --models resnet18 --size 64 --batch 2 --methods gradcampp,fullgrad
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _harness as h  # noqa: E402

METHODS = ("gradcampp", "ablation", "scorecam", "fullgrad")


def calls(
    method: str, model: Any, flax_model: Any, inputs: Any, target: Any, channel_batch: int
) -> dict[str, Callable[[], Any]]:
    """Zero-argument calls of jaxplain and pytorch-grad-cam for ``method``."""
    import jax.numpy as jnp
    from pytorch_grad_cam import AblationCAM, FullGrad, GradCAMPlusPlus, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    import jaxplain as jx

    x, _ = h.torch_batch(inputs, target)
    xj, tj = jnp.asarray(inputs), jnp.asarray(target)
    targets = [ClassifierOutputTarget(int(t)) for t in target]
    final = {"postprocess": "pytorch_grad_cam"}
    if method == "gradcampp":
        ours = lambda: jx.grad_cam_plus_plus(flax_model, xj, tj, layer="layer4", **final)  # noqa: E731
        peer = GradCAMPlusPlus(model, [model.layer4])
    elif method == "ablation":
        ours = lambda: jx.ablation_cam(flax_model, xj, tj, layer="layer4", batch_size=channel_batch, **final)  # noqa: E731
        peer = AblationCAM(model, [model.layer4], batch_size=channel_batch)
    elif method == "scorecam":
        ours = lambda: jx.score_cam(flax_model, xj, tj, layer="layer4", batch_size=channel_batch,  # noqa: E731
                                    flavour="pytorch_grad_cam", **final)
        peer = ScoreCAM(model, [model.layer4])
        peer.batch_size = channel_batch
    else:
        ours = lambda: jx.full_grad(flax_model, xj, tj, **final)  # noqa: E731
        peer = FullGrad(model, [])
    return {"jaxplain": ours, "pytorch-grad-cam": lambda: peer(x, targets)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet50")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channel-batch", type=int, default=32, help="channels per pass (Ablation-CAM, Score-CAM)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=600.0)
    parser.add_argument("--idle-wait-s", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch's intra-op threads (default: torch's own); on a loaded CPU torch's thread "
                             "pool slows down several times over, so pin the process (taskset) and pass 1")
    parser.add_argument("--once", choices=("peer", "both"), default=None,
                        help="call pytorch-grad-cam (or both sides) once, the untimed warm-up skipped: torch compiles "
                             "nothing, and at ResNet-50, batch 8 its Ablation-CAM and Score-CAM take 30-40 minutes "
                             "per call, jaxplain's Score-CAM 20 (whose one call then includes its compile time)")
    args = parser.parse_args()

    import jax
    import numpy as np
    import torch
    import torchvision

    import converters

    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)
    print(f"# bench_cam_family: {h.device_description()}; "
          f"JAX {jax.__version__} on {jax.devices()[0].device_kind}; torch {torch.__version__}; {args.size} px\n")
    headers = ["model", "batch", "method", "jaxplain img/s", "pytorch-grad-cam img/s", "jaxplain / peer",
               "same, CPU time", "compile s", "busy cores", "jaxplain peak", "peer peak"]
    rows = []
    for arch in args.models.split(","):
        torch.manual_seed(args.seed)
        model = getattr(torchvision.models, arch)().eval()
        flax_model = converters.from_torch(model)
        h.to_device(model)
        rng = np.random.default_rng(args.seed)
        inputs = rng.standard_normal((args.batch, args.size, args.size, 3)).astype(np.float32)
        target = (np.arange(args.batch) * 37 % 1000).astype(np.int64)
        for method in args.methods.split(","):
            contenders = [h.Contender(name, call, h.sync, h.jax_meter() if name == "jaxplain" else h.torch_meter(),
                                      warm=args.once is None or (args.once == "peer" and name == "jaxplain"))
                          for name, call in calls(method, model, flax_model, inputs, target, args.channel_batch).items()]
            results = h.compare(contenders, args.batch, args.reps, args.budget_s, lambda e: False, args.idle_wait_s)
            ours, peer = results["jaxplain"], results["pytorch-grad-cam"]
            rows.append([arch, str(args.batch), method, h.format_rate(ours.rate), h.format_rate(peer.rate),
                         f"{ours.rate / peer.rate:.2f}x", f"{ours.cpu_rate / peer.cpu_rate:.2f}x",
                         f"{ours.compile_s:.1f}", "-" if ours.busy_cores is None else f"{ours.busy_cores:.1f}", h.format_bytes(ours.peak_bytes),
                         h.format_bytes(peer.peak_bytes)])
            print(h.markdown_table(headers, rows[-1:]).split("\n", 2)[2], flush=True)
    print()
    print(h.markdown_table(headers, rows))


if __name__ == "__main__":
    main()
