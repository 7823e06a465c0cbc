"""The ``jaxplain`` command end to end on the shipped demo model and images, in a temporary folder."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxplain import demo, evaluation, recipes
from jaxplain.cli import main

METHODS = ("gradcam", "integrated_gradients")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """Four shipped samples (two in a subfolder, one with a clashing name) and one corrupt file."""
    folder = tmp_path_factory.mktemp("images")
    samples = demo.sample_images()[:4]
    for path in samples[:2]:
        shutil.copy(path, folder / path.name)
    (folder / "nested").mkdir()
    for path in samples[2:]:
        shutil.copy(path, folder / "nested" / path.name)
    shutil.copy(demo.sample_masks()[0], folder / demo.sample_masks()[0].name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return folder


@pytest.fixture(scope="module")
def first_run(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    status = main(["explain", str(image_folder), "--out", str(out), "--method", *METHODS, "--batch-size", "3"])
    return out, status


def test_explain_writes_one_png_and_npy_per_image_and_method(first_run, image_folder):
    out, status = first_run
    assert status == 1  # the corrupt image, reported; the others explained
    stems = {p.stem for p in image_folder.glob("*.png") if p.stem != "broken" and not p.stem.endswith("_mask")}
    stems |= {f"nested__{p.stem}" for p in (image_folder / "nested").glob("*.png")}
    assert len(stems) == 4
    for stem in stems:
        for method in METHODS:
            attribution = np.load(out / f"{stem}.{method}.npy")
            assert attribution.dtype == np.float32 and np.isfinite(attribution).all()
            assert attribution.shape[:2] == (64, 64) and attribution.shape[2] in (1, 3)
            with Image.open(out / f"{stem}.{method}.png") as overlay:
                overlay.verify()
            with Image.open(out / f"{stem}.{method}.png") as overlay:
                assert overlay.size == (64, 64) and overlay.mode == "RGB"
    assert not list(out.glob("broken*")) and not list(out.glob(".*"))  # nothing half-written
    assert len(list(out.iterdir())) == 2 * len(METHODS) * len(stems)


def test_explain_output_is_the_library_call(first_run):
    out, _ = first_run
    model = demo.load_model()
    path = demo.sample_images()[0]
    inputs = demo.normalise(np.asarray(Image.open(path).convert("RGB"))[None])
    target = np.asarray(model(inputs)).argmax(-1).astype(np.int32)
    layer = recipes.default_layer(model, inputs)
    expected = np.asarray(recipes.RECIPES["gradcam"].run(model, inputs, target, None, layer))[0]
    np.testing.assert_allclose(np.load(out / f"{path.stem}.gradcam.npy"), expected, rtol=1e-4, atol=1e-6)


def test_rerun_skips_finished_outputs_and_reports_the_bad_file(first_run, image_folder, capsys):
    out, _ = first_run
    before = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    removed = next(out.glob("*.gradcam.png"))
    removed.unlink()
    status = main(["explain", str(image_folder), "--out", str(out), "--method", *METHODS, "--batch-size", "3"])
    captured = capsys.readouterr()
    assert status == 1
    assert "broken.png" in captured.err and "not a readable image" in captured.err
    assert "1 explanations written" in captured.out and "3 images already done" in captured.out
    assert removed.exists()
    assert all(p.stat().st_mtime_ns == t for p, t in before.items() if p != removed)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--method", "nonsense"], "--method: unknown nonsense"),
        (["--target", "6"], "--target 6 out of range"),
        (["--weights", "missing.pth"], "--arch and --weights go together"),
        (["--method", "gradcam", "--layer", "block9"], "unknown layer 'block9'"),
        (["--batch-size", "0"], "--batch-size must be positive"),
        (["--num-processes", "2", "--process-id", "2"], "--process-id 2 out of range for 2 processes"),
        (["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"], "must read HOST:PORT"),
    ],
)
def test_bad_arguments_are_named_and_exit_2(arguments, message, tmp_path, capsys):
    image = demo.sample_images()[0]
    assert main(["explain", str(image), "--out", str(tmp_path), *arguments]) == 2
    assert message in capsys.readouterr().err


def test_missing_input_is_named(tmp_path, capsys):
    assert main(["explain", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_explain_a_converted_torchvision_model(tmp_path):
    """``--arch``/``--weights``: a torchvision state dict saved by ``torch.save``, through ``converters``
    (``.safetensors`` files need no torch: ``tests/test_weights.py``)."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")

    torch.manual_seed(0)
    network = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    torch.save(network.state_dict(), tmp_path / "resnet.pth")
    status = main(["explain", str(demo.sample_images()[0]), "--arch", "resnet18", "--weights",
                   str(tmp_path / "resnet.pth"), "--num-classes", "3", "--size", "32", "--target", "2",
                   "--method", "gradcam", "--out", str(tmp_path / "out")])
    assert status == 0
    assert np.load(tmp_path / "out" / f"{demo.sample_images()[0].stem}.gradcam.npy").shape == (32, 32, 1)


def test_methods_lists_every_public_method_through_the_entry_point():
    import jaxplain as jx

    listing = subprocess.run([sys.executable, "-m", "jaxplain.cli", "methods"], capture_output=True, text=True,
                             check=True).stdout
    listed = {line.split()[0] for line in listing.splitlines() if line.strip()}
    methods = {name for name in jx.__all__ if callable(getattr(jx, name)) and name[0].islower()}
    assert methods - {"init_model", "image_and_mask", "gradient_to_saliency", "noise_tunnel", "as_model", "layers", "clear_caches"} <= listed


def test_bench_names_its_commands_and_rejects_unknown_families(capsys, tmp_path):
    checkout = Path(__file__).resolve().parents[1] / "benchmarks"
    assert main(["bench", "--family", "lrp", "cam", "--quick", "--dry-run", "--dir", str(checkout)]) == 0
    printed = capsys.readouterr().out
    assert "bench_lrp.py --models resnet18" in printed and "bench_cam.py" in printed
    assert main(["bench", "--family", "speed"]) == 2
    assert "unknown speed" in capsys.readouterr().err
    assert main(["bench", "--dir", str(tmp_path)]) == 2
    assert f"no benchmarks in {tmp_path}" in capsys.readouterr().err


def test_evaluate_attributions_beat_random_maps_on_the_demo_set():
    """The whole chain: trained demo model, methods, metrics against the true object masks."""
    rows = evaluation.evaluate(["input_x_gradient", "integrated_gradients", "lrp", "random"], num_images=16,
                               sanity=False)
    chance = rows["random"]["pointing"]
    for method in ("input_x_gradient", "integrated_gradients", "lrp"):
        assert rows[method]["pointing"] >= chance + 0.3, (method, rows[method], chance)
        assert rows[method]["energy"] > rows["random"]["energy"]
    assert rows["integrated_gradients"]["completeness"] < 0.05
    table = evaluation.format_table(rows)
    assert table.splitlines()[0].split() == ["method", *evaluation.COLUMNS]


def test_evaluate_sanity_column_falls_when_the_model_is_randomised(capsys):
    assert main(["evaluate", "--method", "saliency", "--images", "8"]) == 0
    captured = capsys.readouterr()
    row = captured.out.splitlines()[1].split()
    assert row[0] == "saliency" and abs(float(row[-1])) < 0.9
    progress = captured.err.splitlines()  # per method and batch of images, as explain reports
    assert any("8/8" in line and "saliency: explained 8/8" in line for line in progress), captured.err
    assert any("saliency: maps of the randomised model" in line for line in progress)


def test_method_flags_accumulate_and_take_the_api_names():
    from jaxplain.cli import build_parser

    parsed = build_parser().parse_args(["explain", "--method", "saliency", "--method", "lrp", "layer_gradcam"])
    assert parsed.method == ["saliency", "lrp", "layer_gradcam"]
    assert recipes.resolve(parsed.method) == ["saliency", "lrp", "gradcam"]
    assert recipes.resolve(["lime_image", "lime"]) == ["lime"]
    with pytest.raises(ValueError, match=r"salency \(did you mean saliency\?\)"):
        recipes.resolve(["salency"])


@pytest.fixture(scope="module")
def odd_sized_image(tmp_path_factory) -> Path:
    """A shipped sample enlarged to 100 x 80 (the model reads 64 x 64)."""
    path = tmp_path_factory.mktemp("odd") / "wide.png"
    Image.open(demo.sample_images()[1]).convert("RGB").resize((100, 80), Image.Resampling.BICUBIC).save(path)
    return path


def test_overlays_are_drawn_at_each_images_own_size_with_an_optional_colour_bar(odd_sized_image, tmp_path):
    import matplotlib

    out = tmp_path / "out"
    arguments = ["explain", str(odd_sized_image), "--out", str(out), "--batch-size", "1"]
    assert main([*arguments, "--method", "layer_gradcam", "--method", "saliency"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "wide.gradcam.npy", "wide.gradcam.png", "wide.saliency.npy", "wide.saliency.png"]
    assert np.load(out / "wide.saliency.npy").shape == (64, 64, 3)
    with Image.open(out / "wide.saliency.png") as picture:
        assert picture.size == (100, 80)
    assert main([*arguments, "--method", "saliency", "--overlay-size", "model", "--out", str(tmp_path / "model")]) == 0
    with Image.open(tmp_path / "model" / "wide.saliency.png") as picture:
        assert picture.size == (64, 64)
    assert main([*arguments, "--method", "saliency", "--colorbar", "--out", str(tmp_path / "bar")]) == 0
    with Image.open(tmp_path / "bar" / "wide.saliency.png") as picture:
        pixels = np.asarray(picture.convert("RGB"))
    assert pixels.shape[0] == 80 and pixels.shape[1] > 100 + 10
    greens = matplotlib.colormaps["Greens"]  # saliency is drawn with sign "positive": Greens, 0 at the bottom
    np.testing.assert_allclose(pixels[0, 103] / 255, greens(1.0)[:3], atol=1 / 255)
    np.testing.assert_allclose(pixels[-1, 103] / 255, greens(0.0)[:3], atol=1 / 255)
    assert pixels[:, 112:].min() < 100  # the value labels, in black


def test_explain_splits_batches_over_several_devices(first_run, image_folder, tmp_path):
    """Four forced CPU devices: the same files as the one-device run (``explain_sharded`` under the hood)."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    script = (
        "import sys, jax; from jaxplain.cli import main; assert jax.local_device_count() == 4; "
        f"sys.exit(main(['explain', {str(image_folder / 'nested')!r}, '--out', {str(tmp_path)!r}, "
        "'--method', 'gradcam', 'integrated_gradients', '--batch-size', '4']))"
    )
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True)
    out, _ = first_run
    written = sorted(tmp_path.glob("*.npy"))
    assert len(written) == 4
    for path in written:
        np.testing.assert_allclose(np.load(path), np.load(out / f"nested__{path.name}"), rtol=1e-4, atol=1e-6)


def test_explain_as_two_jax_distributed_processes_writes_the_one_process_files(first_run, image_folder, tmp_path):
    """``--coordinator/--num-processes/--process-id`` on 127.0.0.1: the batches are dealt out to the two
    processes; together their files (and the unreadable image, named by the process that owns it) are
    the one-process run's."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "out"
    command = [sys.executable, "-m", "jaxplain.cli", "explain", str(image_folder), "--out", str(out),
               "--method", "gradcam", "--batch-size", "3", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
    runs = [subprocess.Popen([*command, "--process-id", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for i in range(2)]
    results = [(run.wait(timeout=300), *run.communicate()) for run in runs]
    assert sorted(status for status, _, _ in results) == [0, 1], results
    assert sum("broken.png" in err for _, _, err in results) == 1
    counts = [int(re.search(rf"process {i + 1}/2: (\d+) explanations written", out).group(1))
              for i, (_, out, _) in enumerate(results)]
    assert sum(counts) == 4 and min(counts) > 0, results
    reference, _ = first_run
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(p.name for p in reference.glob("*.gradcam.*"))
    for name in written:
        if name.endswith(".npy"):
            np.testing.assert_allclose(np.load(out / name), np.load(reference / name), rtol=1e-4, atol=1e-6)
