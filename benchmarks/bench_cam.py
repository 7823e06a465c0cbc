"""Grad-CAM and DeepLift against Captum, Score-CAM against torch-cam, side by side in one process.

Same torchvision weights (random, from ``--seed``, eval mode) converted to Flax, same
inputs and targets; each contender warmed up once (compile time = warm-up minus the
steady median), then timed in interleaved rounds (``_harness.compare``). Peak memory is
this process's resident peak around each warm-up, so it is indicative only (all
contenders share the process). On a GPU the torch side runs on CUDA and peaks are the
device allocators' (``_harness``). torch-cam (``pip install torchcam``) is optional.

Captum's DeepLift keeps a module's input and output on the module, so a ReLU called twice
raises (torchvision's blocks reuse ``self.relu``): the torch side gets one ReLU per call
site and an equivalent forward, as in ``tests/parity/test_deeplift_captum.py``.

    python benchmarks/bench_cam.py
    python benchmarks/bench_cam.py --models resnet18 --batch 8 --methods gradcam,deeplift,scorecam
"""

from __future__ import annotations

import argparse
import os
import sys
import types
from typing import Any, Callable

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _harness as h  # noqa: E402

METHODS = ("gradcam", "deeplift", "scorecam")


def one_relu_per_call_site(model: Any) -> Any:
    """torchvision ResNet blocks with one ReLU module per call site (Captum DeepLift needs it)."""
    import torch
    import torchvision

    def basic(block, x):
        identity = x if block.downsample is None else block.downsample(x)
        out = block.relu1(block.bn1(block.conv1(x)))
        return block.relu2(block.bn2(block.conv2(out)) + identity)

    def bottleneck(block, x):
        identity = x if block.downsample is None else block.downsample(x)
        out = block.relu1(block.bn1(block.conv1(x)))
        out = block.relu2(block.bn2(block.conv2(out)))
        return block.relu3(block.bn3(block.conv3(out)) + identity)

    for block in model.modules():
        if isinstance(block, torchvision.models.resnet.BasicBlock):
            block.relu1, block.relu2 = torch.nn.ReLU(), torch.nn.ReLU()
            block.forward = types.MethodType(basic, block)
        elif isinstance(block, torchvision.models.resnet.Bottleneck):
            block.relu1, block.relu2, block.relu3 = torch.nn.ReLU(), torch.nn.ReLU(), torch.nn.ReLU()
            block.forward = types.MethodType(bottleneck, block)
    return model


def calls(method: str, model: Any, flax_model: Any, inputs: Any, target: Any) -> dict[str, Callable[[], Any]]:
    """Zero-argument calls of each contender for ``method``."""
    import jax.numpy as jnp
    import torch

    import jaxplain as jx

    x, t = h.torch_batch(inputs, target)
    xj, tj = jnp.asarray(inputs), jnp.asarray(target)
    if method == "gradcam":
        from captum.attr import LayerGradCam

        return {
            "jaxplain": lambda: jx.layer_gradcam(flax_model, xj, tj, layer="layer4"),
            "Captum": lambda: LayerGradCam(model, model.layer4).attribute(x, target=t),
        }
    if method == "deeplift":
        from captum.attr import DeepLift

        return {
            "jaxplain": lambda: jx.deeplift(flax_model, xj, tj),
            "Captum": lambda: DeepLift(model).attribute(x, target=t),
        }
    contenders = {"jaxplain": lambda: jx.score_cam(flax_model, xj, tj, layer="layer4", batch_size=32)}
    try:
        from torchcam.methods import ScoreCAM
    except ImportError:
        return contenders
    extractor = ScoreCAM(model, target_layer="layer4", batch_size=32, input_shape=tuple(x.shape[1:]))

    def torchcam_call():
        with torch.no_grad():
            scores = model(x)
        return extractor(class_idx=t.tolist(), scores=scores)

    contenders["torch-cam"] = torchcam_call
    return contenders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet18,resnet50")
    parser.add_argument("--batch", type=int, default=8, help="images per call (Score-CAM: --scorecam-batch)")
    parser.add_argument("--scorecam-batch", type=int, default=1)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import jax
    import numpy as np
    import torch
    import torchvision

    import converters

    print(f"# bench_cam: {h.device_description()}; "
          f"JAX {jax.__version__} on {jax.devices()[0].device_kind}; torch {torch.__version__}; {args.size} px\n")
    headers = ["model", "batch", "method", "peer", "jaxplain img/s", "peer img/s", "jaxplain / peer", "same, CPU time",
               "cores busy, jaxplain / peer", "compile s", "jaxplain peak", "peer peak"]
    rows = []
    for arch in args.models.split(","):
        torch.manual_seed(args.seed)
        model = one_relu_per_call_site(getattr(torchvision.models, arch)().eval())
        flax_model = converters.from_torch(model)
        h.to_device(model)
        for method in args.methods.split(","):
            batch = args.scorecam_batch if method == "scorecam" else args.batch
            rng = np.random.default_rng(args.seed)
            inputs = rng.standard_normal((batch, args.size, args.size, 3)).astype(np.float32)
            target = (np.arange(batch) * 37 % 1000).astype(np.int64)
            contenders = [h.Contender(name, call, h.sync, h.jax_meter() if name == "jaxplain" else h.torch_meter())
                          for name, call in calls(method, model, flax_model, inputs, target).items()]
            results = h.compare(contenders, batch, args.reps, args.budget_s, lambda e: False)
            ours = results["jaxplain"]
            for peer_name, peer in ((n, r) for n, r in results.items() if n != "jaxplain"):
                rows.append([arch, str(batch), method, peer_name, h.format_rate(ours.rate), h.format_rate(peer.rate),
                             f"{ours.rate / peer.rate:.2f}x", f"{ours.cpu_rate / peer.cpu_rate:.2f}x",
                             h.format_cores(ours, peer), f"{ours.compile_s:.1f}", h.format_bytes(ours.peak_bytes), h.format_bytes(peer.peak_bytes)])
                print(h.markdown_table(headers, rows[-1:]).split("\n", 2)[2], flush=True)
    print()
    print(h.markdown_table(headers, rows))


if __name__ == "__main__":
    main()
