"""Conversion speed: ``converters.from_torch`` wall time on torchvision models (random weights).

Each model converts in its own worker process, once (a conversion is a one-off cost, so
the first one in a process is what a user waits for). Printed per model: the whole
``from_torch`` call (and, for a model the zoo converts, ``converters.export_model``, the
generic path, after it), the parts of it that ``torch.export.export`` and
``ExportedProgram.run_decompositions`` take (timed by wrapping them), the rest (the op
program, the parameters as JAX arrays), and the converted model's first forward pass at
batch 1 (JAX's trace and compile). Nothing downloads: the models are built with
``weights=None``.

    python benchmarks/bench_convert.py --models resnet50 vit_b_16 --size 224
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

RESULT_MARKER = "@@result "


def _worker(name: str, size: int) -> dict:
    import jax
    import numpy as np
    import torch
    import torchvision

    import converters

    spent = {"export": 0.0, "decompositions": 0.0}

    def timed(function, key):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - start

        return wrapper

    torch.export.export = timed(torch.export.export, "export")
    program_class = torch.export.ExportedProgram
    program_class.run_decompositions = timed(program_class.run_decompositions, "decompositions")
    torch.manual_seed(0)
    module = getattr(torchvision.models, name)(weights=None).eval()
    images = np.zeros((1, size, size, 3), np.float32)
    rows = []
    for convert in (converters.from_torch, converters.export_model):
        spent.update(export=0.0, decompositions=0.0)
        start = time.perf_counter()
        model = convert(module, input_shape=(1, size, size, 3))
        total = time.perf_counter() - start
        start = time.perf_counter()
        jax.block_until_ready(jax.jit(lambda m, x: m(x))(model, images))
        first_forward = time.perf_counter() - start
        program = getattr(model.module, "program", None)
        rows.append({
            "model": name,
            "call": f"{convert.__name__} ({type(model.module).__name__})",
            "total_s": total,
            "export_s": spent["export"],
            "decompositions_s": spent["decompositions"],
            "rest_s": total - spent["export"] - spent["decompositions"],
            "first_forward_s": first_forward,
            "ops": len(program.nodes) if program is not None else None,
        })
        if program is not None:
            break
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "vit_b_16"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(RESULT_MARKER + json.dumps(_worker(args.worker, args.size)), flush=True)
        return
    print("| model | call (module) | ATen ops | total (s) | torch.export (s) | run_decompositions (s) | rest (s) "
          "| first forward (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        command = [sys.executable, os.path.abspath(__file__), "--worker", name, "--size", str(args.size)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        line = next(line for line in output.splitlines() if line.startswith(RESULT_MARKER))
        for row in json.loads(line[len(RESULT_MARKER):]):
            print(
                f"| {row['model']} | {row['call']} | {row['ops'] or '-'} | {row['total_s']:.1f} | {row['export_s']:.1f} "
                f"| {row['decompositions_s']:.1f} | {row['rest_s']:.1f} | {row['first_forward_s']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
