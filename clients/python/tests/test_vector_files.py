"""The committed vectors are what tests/vectors/generate.py produces."""

import json
import math
import subprocess
import sys

from conftest import VECTORS


def same(a, b, path="") -> None:
    """Equal structure; numbers equal to 1e-12 relative (libm may differ in the last bits)."""
    assert type(a) is type(b) or {type(a), type(b)} <= {int, float}, path
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-300), f"{path}: {a} != {b}"
    else:
        assert a == b, path


def test_vectors_are_generated(tmp_path):
    subprocess.run([sys.executable, str(VECTORS / "generate.py"), str(tmp_path)], check=True)
    names = sorted(p.name for p in VECTORS.glob("*.json"))
    assert names == sorted(p.name for p in tmp_path.glob("*.json"))
    for name in names:
        same(json.loads((VECTORS / name).read_text()), json.loads((tmp_path / name).read_text()), name)
