"""The README's "Your own model" example runs as written."""

from __future__ import annotations

import re
from pathlib import Path


def test_your_own_model_example_runs():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## Your own model", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md: Your own model", "exec"), namespace)
    assert set(namespace["models"]) == {"linen", "nnx", "equinox", "function"}
    assert namespace["cam"].shape[0] == 2
