"""The ``jaxplain`` command line: ``explain``, ``methods``, ``evaluate``, ``bench``.

Exit status: 0 on success; 1 when some input image could not be read (the others are
still explained) or a benchmark failed; 2 for a bad argument, named in the message.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence, TextIO

import numpy as np

BENCHMARKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "gradient": ("bench_gradient.py", ("--quick",)),
    "cam": ("bench_cam.py", ("--models", "resnet18", "--batch", "2", "--size", "64", "--reps", "1",
                             "--methods", "gradcam,deeplift")),
    "lrp": ("bench_lrp.py", ("--models", "resnet18", "--batch", "2", "--size", "64", "--reps", "1")),
    "perturbation": ("bench_perturbation.py", ("--models", "resnet18", "--size", "64", "--reps", "1",
                                               "--methods", "occlusion,rise", "--rise-masks", "64")),
    "prototype": ("bench_prototype.py", ("--size", "32", "--samples", "2", "--reps", "1")),
    "optimization": ("bench_optimization.py", ("--channels", "2", "--steps", "4", "--size", "32",
                                               "--input-size", "48", "--reps", "1")),
}


class UsageError(Exception):
    """A bad command-line argument; the message names it."""


class Progress:
    """A one-line progress bar on ``stream`` (redrawn in place on a terminal, else one line per step)."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total, self.label, self.done = total, label, 0
        self.stream = sys.stderr if stream is None else stream
        self.start = time.perf_counter()

    def advance(self, count: int, note: str = "") -> None:
        self.done += count
        width = 24
        filled = width * self.done // max(self.total, 1)
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        line = f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} ({rate:.1f}/s) {note}"
        if self.stream.isatty():
            self.stream.write("\r" + line[:120].ljust(120))
            if self.done >= self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _load_model(arguments: argparse.Namespace):
    """The model to explain and its input size ``(H, W)``."""
    if arguments.arch is None and arguments.weights is None:
        from jaxplain import demo

        size = demo.metadata()["image_size"]
        return demo.load_model(), (size, size)
    if arguments.arch is None or arguments.weights is None:
        raise UsageError("--arch and --weights go together (neither: the shipped demo model)")
    if not Path(arguments.weights).is_file():
        raise UsageError(f"--weights: no such file: {arguments.weights}")
    from jaxplain.nets import ARCHITECTURES

    if arguments.weights.endswith(".safetensors") and arguments.arch in ARCHITECTURES:
        from jaxplain.weights import load
    else:
        try:
            from converters import load
        except ImportError as error:
            raise UsageError(f'--weights {arguments.weights}: a .pth file or an architecture outside the zoo needs '
                             f'torch (pip install ".[converters]"; .safetensors files of zoo models need no torch): '
                             f"{error}") from error
    try:
        model = load(arguments.weights, arguments.arch, num_classes=arguments.num_classes,
                     input_shape=(1, arguments.size, arguments.size, 3))
    except (ValueError, OSError) as error:
        raise UsageError(f"--weights {arguments.weights} as --arch {arguments.arch}: {error}") from error
    return model, (arguments.size, arguments.size)


def _normalise(model, images: np.ndarray) -> np.ndarray:
    scaled = images.astype(np.float32) / 255.0
    if model.mean is None:
        return scaled
    return (scaled - np.asarray(model.mean, np.float32)) / np.asarray(model.std, np.float32)


def _pad(array: np.ndarray, size: int) -> np.ndarray:
    """``array`` padded to ``size`` rows with copies of its first row (one compiled shape for every batch)."""
    if len(array) == size:
        return array
    return np.concatenate([array, np.repeat(array[:1], size - len(array), axis=0)])


def _run(recipe, model, inputs: np.ndarray, target: np.ndarray, key, layer: str) -> np.ndarray:
    """The recipe on one batch: split over the local devices when there are several (and it can be traced)."""
    import jax

    from jaxplain import parallel

    if jax.local_device_count() > 1 and recipe.traceable:
        return parallel.explain_sharded(recipe.run, model, inputs, target, key=key, layer=layer)
    return recipe.run(model, inputs, target, key, layer)


DISTRIBUTED_ENVIRONMENT = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
"""Environment variables that make ``explain`` a ``jax.distributed`` job (defaults of the three flags)."""


def _start_distributed(arguments: argparse.Namespace) -> tuple[int, int]:
    """``(process index, process count)``: ``jax.distributed.initialize`` when asked for, else ``(0, 1)``.

    Asked for by ``--coordinator``, ``--num-processes``, ``--process-id``, ``--distributed``
    or the variables of :data:`DISTRIBUTED_ENVIRONMENT`; what is not given is left to JAX's
    cluster detection (SLURM, Open MPI, Cloud TPU). Must run before any JAX computation.
    """
    import os

    def given(flag: int | str | None, variable: str) -> int | str | None:
        if flag is not None or not os.environ.get(variable):
            return flag
        if variable == "JAX_COORDINATOR_ADDRESS":
            return os.environ[variable]
        try:
            return int(os.environ[variable])
        except ValueError:
            raise UsageError(f"${variable} must be an integer, got {os.environ[variable]!r}") from None

    coordinator = given(arguments.coordinator, "JAX_COORDINATOR_ADDRESS")
    count = given(arguments.num_processes, "JAX_NUM_PROCESSES")
    index = given(arguments.process_id, "JAX_PROCESS_ID")
    if not (arguments.distributed or coordinator or count is not None or index is not None):
        return 0, 1
    if count is not None and count < 1:
        raise UsageError(f"--num-processes must be positive, got {count}")
    if index is not None and (index < 0 or (count is not None and index >= count)):
        raise UsageError(f"--process-id {index} out of range for {count} processes")
    if coordinator is not None and not coordinator.rpartition(":")[2].isdigit():
        raise UsageError(f"--coordinator must read HOST:PORT, got {coordinator!r}")
    import jax

    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=count, process_id=index)
    except (RuntimeError, ValueError) as error:
        raise UsageError(f"could not start the jax.distributed job: {str(error).splitlines()[0]}") from error
    return jax.process_index(), jax.process_count()


def _explain(arguments: argparse.Namespace) -> int:
    process, processes = _start_distributed(arguments)
    import jax

    from jaxplain import files, recipes

    methods = _methods_of(arguments, recipes.DEFAULT_METHODS)
    if arguments.batch_size < 1:
        raise UsageError(f"--batch-size must be positive, got {arguments.batch_size}")
    if not arguments.inputs:
        if arguments.arch is not None or arguments.weights is not None:
            raise UsageError("name the images or folders to explain (only the demo model has sample images)")
        from jaxplain import demo

        arguments.inputs = [str(demo.IMAGES_DIRECTORY)]
    try:
        images = files.find_images(arguments.inputs)
    except FileNotFoundError as error:
        raise UsageError(str(error)) from error
    if not images:
        raise UsageError(f"no images found in {', '.join(arguments.inputs)}")
    model, size = _load_model(arguments)
    classes = int(model(np.zeros((1, *size, 3), np.float32)).shape[-1])
    if arguments.target != "pred" and not 0 <= arguments.target < classes:
        raise UsageError(f"--target {arguments.target} out of range for a model with {classes} classes")
    layer = arguments.layer or recipes.default_layer(model, np.zeros((1, *size, 3), np.float32))
    out = Path(arguments.out)

    def outputs(stem: str, method: str) -> tuple[Path, Path]:
        return out / f"{stem}.{method}.png", out / f"{stem}.{method}.npy"

    # Batches are cut from the whole list and dealt out to the processes whole, each keeping its
    # index: every image is explained in the same batch, at the same place, with the same key,
    # whichever process explains it and whatever a previous run finished.
    mine = [(index, batch) for index, batch in enumerate(files.batches(images, arguments.batch_size))
            if index % processes == process]
    done = {stem for _, batch in mine for _, stem in batch
            if all(p.exists() for m in methods for p in outputs(stem, m))}
    pending = [(index, batch) for index, batch in mine if any(stem not in done for _, stem in batch)]
    skipped = len(done)
    failed: list[str] = []
    written = 0
    key = jax.random.PRNGKey(arguments.seed)
    progress = Progress(sum(len(batch) for _, batch in pending),
                        "explain" if processes == 1 else f"explain {process + 1}/{processes}")
    for index, batch in pending:
        readable, pixels, originals = [], [], []
        for file, stem in batch:
            try:
                originals.append(files.decode_image(file))
                pixels.append(files.resize_image(originals[-1], size))
                readable.append(stem)
            except files.UnreadableImage as error:
                failed.append(str(error))
                print(f"jaxplain: skipping {error}", file=sys.stderr)
        if readable:
            raw = np.stack(pixels)
            inputs = _pad(_normalise(model, raw), arguments.batch_size)
            predicted = np.asarray(jax.numpy.argmax(model(inputs), axis=-1))
            target = predicted if arguments.target == "pred" else np.full(len(inputs), arguments.target)
            for method in methods:
                todo = [i for i, stem in enumerate(readable) if any(not p.exists() for p in outputs(stem, method))]
                if not todo:
                    continue
                recipe = recipes.RECIPES[method]
                try:
                    maps = np.asarray(_run(recipe, model, inputs, target.astype(np.int32),
                                           jax.random.fold_in(key, index), layer))
                except (ValueError, TypeError) as error:
                    raise UsageError(f"--method {method}: {error}") from error
                for i in todo:
                    png, npy = outputs(readable[i], method)
                    if not npy.exists():
                        files.write_npy(npy, maps[i].astype(np.float32))
                    if not png.exists():
                        files.write_png(png, _picture(originals[i] if arguments.overlay_size == "image" else raw[i],
                                                      maps[i], recipe.sign, arguments.colorbar))
                    written += 1
        progress.advance(len(batch), batch[-1][1])
    who = "" if processes == 1 else f"process {process + 1}/{processes}: "
    print(f"jaxplain: {who}{written} explanations written to {out}, {skipped} images already done, "
          f"{len(failed)} unreadable")
    return 1 if failed else 0


def _methods_of(arguments: argparse.Namespace, default: Sequence[str]) -> list[str]:
    """The recipes ``--method`` names (every flag's names, aliases resolved), else ``default``."""
    from jaxplain import recipes

    try:
        return recipes.resolve(arguments.method or default)
    except ValueError as error:
        raise UsageError(f"--method: {error}") from error


def _picture(image: np.ndarray, attribution: np.ndarray, sign: str, colorbar: bool):
    """The overlay PNG: ``attribution`` resized to ``image`` and blended over it, with a colour bar if asked."""
    from jaxplain import viz

    resized = viz.resize_attribution(attribution, image.shape[:2])
    picture = viz.overlay(image, resized, sign=sign)
    if colorbar:
        picture = viz.with_colorbar(picture, viz.value_range(resized, sign), sign=sign)
    return viz.to_pil(picture)


def _methods(_: argparse.Namespace) -> int:
    from jaxplain import recipes

    width = max(len(name) for name, _, _ in recipes.CATALOGUE)
    for name, family, peer in recipes.CATALOGUE:
        print(f"{name:<{width}}  {family:<12}  {peer}")
    print("\njaxplain explain --method takes:")
    width = max(len(name) for name in recipes.RECIPES)
    for name, recipe in recipes.RECIPES.items():
        also = f" (also --method {', '.join(recipe.aliases)})" if recipe.aliases else ""
        print(f"{name:<{width}}  {recipe.settings}{also}")
    return 0


def _evaluate(arguments: argparse.Namespace) -> int:
    from jaxplain import evaluation, recipes

    methods = _methods_of(arguments, recipes.EVALUATED_METHODS)
    if arguments.images < 1:
        raise UsageError(f"--images must be positive, got {arguments.images}")
    progress = Progress(len(methods) * arguments.images, "evaluate")
    rows = evaluation.evaluate(methods, num_images=arguments.images, seed=arguments.seed,
                               sanity=not arguments.no_sanity, progress=progress.advance)
    print(evaluation.format_table(rows))
    return 0


def _benchmark_dir(arguments: argparse.Namespace) -> Path:
    """``--dir``, else ``./benchmarks``, else the ``benchmarks`` folder beside the package (a source checkout)."""
    candidates = [Path(arguments.dir)] if arguments.dir else [
        Path.cwd() / "benchmarks", Path(__file__).resolve().parents[1] / "benchmarks"]
    for directory in candidates:
        if (directory / "_harness.py").is_file():
            return directory
    raise UsageError(
        f"no benchmarks in {' or '.join(map(str, candidates))}: jaxplain bench runs the side-by-side benchmarks "
        "of a source checkout (run it there or pass --dir CHECKOUT/benchmarks; the peers come with "
        "pip install '.[test]' and pip install --no-deps torchcam==0.4.0)"
    )


def _bench(arguments: argparse.Namespace) -> int:
    unknown = [f for f in arguments.family if f not in BENCHMARKS]
    if unknown:
        raise UsageError(f"--family: unknown {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    directory = _benchmark_dir(arguments)
    status = 0
    for family in arguments.family:
        script, quick = BENCHMARKS[family]
        command = [sys.executable, str(directory / script), *(quick if arguments.quick else ())]
        print(f"== {family}: {' '.join(command[1:])}", flush=True)
        if arguments.dry_run:
            continue
        if subprocess.run(command, cwd=directory.parent).returncode != 0:
            print(f"jaxplain: benchmark {family} failed", file=sys.stderr)
            status = 1
    return status


def _target(text: str) -> int | str:
    if text == "pred":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a class index or 'pred', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``jaxplain`` command."""
    from jaxplain import recipes

    parser = argparse.ArgumentParser(prog="jaxplain", description="Explanation methods in JAX, with the peers' numbers")
    commands = parser.add_subparsers(dest="command", required=True)

    explain = commands.add_parser("explain", help="explain images: one overlay PNG and one .npy per image and method")
    explain.add_argument("inputs", nargs="*", metavar="IMAGE_OR_FOLDER",
                         help="images, or folders searched recursively (none: the demo model's sample images)")
    explain.add_argument("--arch", help="architecture of --weights: a zoo name (resnet18) or another torchvision "
                         "classifier (vit_b_16, swin_t: converted through torch.export); default: the demo model")
    explain.add_argument("--weights", help="a .safetensors or .pth state dict of --arch "
                                           '(.pth needs torch: pip install ".[converters]")')
    explain.add_argument("--num-classes", type=int, default=1000, help="outputs of --arch (default 1000)")
    explain.add_argument("--size", type=int, default=224, help="input size for --arch (the demo model's is fixed)")
    explain.add_argument("--method", nargs="+", action="extend", metavar="M",
                         help=f"one or more of {', '.join(recipes.RECIPES)}, or the public functions' names "
                              f"{', '.join(recipes.ALIASES)}; repeat the flag to add more "
                              f"(default: {' '.join(recipes.DEFAULT_METHODS)})")
    explain.add_argument("--target", type=_target, default="pred",
                         help="class index, or 'pred' for each image's predicted class")
    explain.add_argument("--layer", help="layer of the CAM methods (default: the last spatial layer)")
    explain.add_argument("--out", default="explanations", help="output folder (default: %(default)s)")
    explain.add_argument("--batch-size", type=int, default=8, help="images per compiled call")
    explain.add_argument("--seed", type=int, default=0, help="PRNG seed of the stochastic methods")
    explain.add_argument("--overlay-size", choices=("image", "model"), default="image",
                         help="draw the overlay PNGs at each image's own size (the map resized to it, default) "
                              "or at the model's input size, as the .npy maps are")
    explain.add_argument("--colorbar", action="store_true",
                         help="add a colour bar to the overlays, labelled with the attribution values at its ends")
    distributed = explain.add_argument_group(
        "several processes (jax.distributed): each explains every N-th image; the files are those of one process")
    distributed.add_argument("--coordinator", metavar="HOST:PORT",
                             help="process 0's address and a free port (default: $JAX_COORDINATOR_ADDRESS)")
    distributed.add_argument("--num-processes", type=int, metavar="N", help="processes in all ($JAX_NUM_PROCESSES)")
    distributed.add_argument("--process-id", type=int, metavar="I", help="this process, 0 .. N-1 ($JAX_PROCESS_ID)")
    distributed.add_argument("--distributed", action="store_true",
                             help="start jax.distributed with what JAX detects (SLURM, Open MPI, Cloud TPU)")
    explain.set_defaults(run=_explain)

    commands.add_parser("methods", help="list every method and the peer it reproduces").set_defaults(run=_methods)

    evaluate = commands.add_parser("evaluate", help="score methods against the demo set's ground-truth masks")
    evaluate.add_argument("--method", nargs="+", action="extend", metavar="M",
                          help=f"as explain's (default: {' '.join(recipes.EVALUATED_METHODS)})")
    evaluate.add_argument("--images", type=int, default=32, help="demo images to score on")
    evaluate.add_argument("--seed", type=int, default=1, help="seed of the generated demo set")
    evaluate.add_argument("--no-sanity", action="store_true", help="skip the weight-randomisation sanity column")
    evaluate.set_defaults(run=_evaluate)

    bench = commands.add_parser("bench", help="run the side-by-side benchmarks against the peers")
    bench.add_argument("--family", nargs="+", default=list(BENCHMARKS), metavar="F",
                       help=f"one or more of {', '.join(BENCHMARKS)}")
    bench.add_argument("--quick", action="store_true", help="small models, inputs and repetitions (a smoke run)")
    bench.add_argument("--dir", help="the benchmarks folder (default: ./benchmarks, or the one beside the package)")
    bench.add_argument("--dry-run", action="store_true", help="print the commands only")
    bench.set_defaults(run=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxplain`` command."""
    parser = build_parser()
    arguments = parser.parse_args(argv)
    try:
        return arguments.run(arguments)
    except UsageError as error:
        print(f"jaxplain: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
