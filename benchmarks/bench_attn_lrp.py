"""CP-LRP or AttnLRP on a torchvision ViT against LXT 2.1's torchvision-ViT recipe, side by side in one process.

Same random weights converted to Flax, same inputs and targets. Contenders: jaxplain
``lrp(composite="cp_lrp")`` (``name_map`` LRP-0 at the attention, as LXT's Zennit hooks never see
``nn.MultiheadAttention``'s functional projections), LXT (its ``vit_torch.cp_LRP`` patches, Gamma
on every ``Conv2d`` and ``Linear`` through its Zennit patches, relevance = input x gradient, one
backward for the whole batch), and jaxplain's plain input gradient as the cost unit. The LXT patches
replace torch's GELU, LayerNorm and MultiheadAttention ``forward`` for the rest of the process, so the
torch model is converted before they are applied. Printed: images/s, their ratio, CPU-time ratio,
LRP's cost in gradients, compile time, peaks and the maps' max relative difference. ``--composite attn_lrp``
adds LXT's uniform rule at the attention (its ``divide_gradient`` on query and key by 4, value by 2, around
the patched ``nn.MultiheadAttention``, as in ``tests/parity/test_attn_lrp.py``) and runs ours with
``composite="attn_lrp"``.

    python benchmarks/bench_attn_lrp.py --arch vit_b_16 --size 224 --batch 8
    python benchmarks/bench_attn_lrp.py --tiny --size 32 --batch 2
"""

from __future__ import annotations

import argparse
import os
import sys
import types

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _harness as h  # noqa: E402

TINY = {"patch_size": 8, "num_layers": 2, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 32, "num_classes": 10}


def _lxt_modules():
    """LXT's ``efficient`` modules without its package ``__init__`` (which imports transformers)."""
    import lxt

    base = os.path.join(os.path.dirname(lxt.__file__), "efficient")
    for name, path in (("lxt.efficient", base), ("lxt.efficient.models", os.path.join(base, "models"))):
        module = types.ModuleType(name)
        module.__path__ = [path]
        sys.modules[name] = module
    from lxt.efficient import zennit_patches
    from lxt.efficient.models import vit_torch

    return zennit_patches, vit_torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="vit_b_16", help="a torchvision ViT builder")
    parser.add_argument("--tiny", action="store_true", help="a two-layer ViT of width 16 instead of --arch")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=120.0)
    parser.add_argument("--conv-gamma", type=float, default=0.25)
    parser.add_argument("--linear-gamma", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--composite", choices=("cp_lrp", "attn_lrp"), default="cp_lrp")
    args = parser.parse_args()

    import jax.numpy as jnp
    import numpy as np
    import torch
    import torchvision
    from torchvision.models.vision_transformer import VisionTransformer
    from zennit import rules as zennit_rules
    from zennit.composites import LayerMapComposite

    import converters
    import jaxplain as jx
    from jaxplain.rules import lrp as rules

    torch.manual_seed(args.seed)
    if args.tiny:
        model = VisionTransformer(image_size=args.size, **TINY)
        name = f"ViT tiny ({TINY['num_layers']} layers, width {TINY['hidden_dim']})"
    else:
        model = getattr(torchvision.models, args.arch)(image_size=args.size)
        name = args.arch
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.05)
    model.eval()
    classes = model.heads.head.out_features
    flax_model = converters.from_torch(model, input_shape=(1, args.size, args.size, 3))
    attention = tuple(f"encoder.layers.encoder_layer_{i}.self_attention" for i in range(len(model.encoder.layers)))
    zennit_patches, vit_torch = _lxt_modules()
    for cls, patch in vit_torch.cp_LRP.items():
        patch(cls)
    if args.composite == "attn_lrp":
        from lxt.efficient.rules import divide_gradient

        def uniform(self, query, key, value, *rest, **options):
            return self.original_forward(divide_gradient(query, 4), divide_gradient(key, 4), divide_gradient(value, 2),
                                         *rest, **options)

        torch.nn.MultiheadAttention.forward = uniform
    zennit_patches.monkey_patch_zennit()
    composite = LayerMapComposite([(torch.nn.Conv2d, zennit_rules.Gamma(args.conv_gamma)),
                                   (torch.nn.Linear, zennit_rules.Gamma(args.linear_gamma))])

    print(f"# bench_attn_lrp: {h.device_description()}; torch {torch.__version__}; {name}, {args.size} px, "
          f"batch {args.batch}, {args.composite}, conv_gamma {args.conv_gamma}, linear_gamma {args.linear_gamma}\n")
    inputs = np.random.default_rng(args.seed).standard_normal((args.batch, args.size, args.size, 3)).astype(np.float32)
    target = (np.arange(args.batch) * 37 % classes).astype(np.int64)
    x, t = h.torch_batch(inputs, target)
    xj, tj = jnp.asarray(inputs), jnp.asarray(target)
    last = {}

    def lxt_call():
        images = x.clone().requires_grad_()
        with composite.context(model) as modified:
            outputs = modified(images)
            outputs[torch.arange(len(t)), t].sum().backward()
        last["lxt"] = (images * images.grad).detach()
        return last["lxt"]

    def ours_call():
        last["jaxplain"] = jx.lrp(flax_model, xj, tj, composite=args.composite, conv_gamma=args.conv_gamma,
                                  linear_gamma=args.linear_gamma, name_map=((attention, rules.Epsilon(1e-12)),))
        return last["jaxplain"]

    contenders = [
        h.Contender("jaxplain", ours_call, h.sync, h.jax_meter()),
        h.Contender("LXT", lxt_call, h.sync, h.torch_meter()),
        h.Contender("gradient", lambda: jx.saliency(flax_model, xj, tj, abs=False), h.sync, h.jax_meter()),
    ]
    results = h.compare(contenders, args.batch, args.reps, args.budget_s, lambda e: False)
    ours, lxt, gradient = results["jaxplain"], results["LXT"], results["gradient"]
    reference = last["lxt"].permute(0, 2, 3, 1).cpu().numpy()
    difference = np.abs(np.asarray(last["jaxplain"]) - reference).max() / np.abs(reference).max()
    label = {"cp_lrp": "CP-LRP", "attn_lrp": "AttnLRP"}[args.composite]
    headers = ["model", f"jaxplain {label} img/s", "LXT img/s", "jaxplain / LXT", "same, CPU time",
               "jaxplain gradient img/s", f"{label} cost in gradients", "compile s", "jaxplain peak", "LXT peak",
               "max rel. diff"]
    row = [name, h.format_rate(ours.rate), h.format_rate(lxt.rate), f"{ours.rate / lxt.rate:.2f}x",
           f"{ours.cpu_rate / lxt.cpu_rate:.2f}x", h.format_rate(gradient.rate), f"{gradient.rate / ours.rate:.2f}",
           f"{ours.compile_s:.1f}", h.format_bytes(ours.peak_bytes), h.format_bytes(lxt.peak_bytes),
           f"{difference:.1e}"]
    print(h.markdown_table(headers, [row]))


if __name__ == "__main__":
    main()
