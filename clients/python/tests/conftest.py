"""Shared fixtures: the server under test and the shared test vectors.

SOFTMAX_ADDR points the suite at a running softmaxd; without it the suite
starts the release binary (SOFTMAXD_BIN, else target/release/softmaxd of the
repo) on a free loopback port and stops it afterwards.
"""

import json
import math
import os
import socket
import subprocess
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from softmaxd_client import Client

REPO = Path(__file__).resolve().parents[3]
VECTORS = REPO / "tests" / "vectors"
DTYPES = {"f32": np.float32, "f64": np.float64}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(address: str) -> subprocess.Popen:
    """Starts the release binary (SOFTMAXD_BIN, else target/release/softmaxd) on
    `address` and waits until it accepts connections."""
    binary = Path(os.environ.get("SOFTMAXD_BIN", REPO / "target" / "release" / "softmaxd"))
    if not binary.exists():
        pytest.fail(f"{binary} not found: build it (cargo build --release) or set SOFTMAX_ADDR")
    proc = subprocess.Popen(
        [str(binary), "--listen", address, "--metrics-listen", ""], stdout=subprocess.DEVNULL
    )
    channel = grpc.insecure_channel(address)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                grpc.channel_ready_future(channel).result(timeout=1)
                return proc
            except grpc.FutureTimeoutError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    pytest.fail(f"softmaxd did not start on {address}")
    finally:
        channel.close()


@pytest.fixture(scope="session")
def addr():
    if os.environ.get("SOFTMAX_ADDR"):
        yield os.environ["SOFTMAX_ADDR"]
        return
    address = f"127.0.0.1:{free_port()}"
    proc = start_server(address)
    try:
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="session")
def client(addr):
    with Client(addr, timeout=120) as c:
        yield c


def _number(v):
    return float(v) if isinstance(v, str) else v


def array(t, dtype):
    """A vector tensor ({shape, values|fill, dtype?}) as a numpy array."""
    dt = DTYPES[t.get("dtype", dtype)]
    if "fill" in t:
        return np.full(t["shape"], t["fill"], dt)
    return np.array([_number(v) for v in t["values"]], dt).reshape(t["shape"])


def load_cases(*names):
    """(case, dtype, tolerance) triples of the named vector files."""
    out = []
    for name in names:
        doc = json.loads((VECTORS / f"{name}.json").read_text())
        for case in doc["cases"]:
            for dtype in case["dtypes"]:
                out.append(pytest.param(case, dtype, doc["tolerance"][dtype], id=f"{case['name']}-{dtype}"))
    return out


def temperature(case):
    t = case.get("temperature")
    return None if t is None else _number(t)


def assert_close(got, want, tol, dtype, what=""):
    assert isinstance(got, np.ndarray), what
    assert got.dtype == np.dtype(DTYPES[dtype]), f"{what}: dtype {got.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    g, w = got.astype(np.float64), want.astype(np.float64)
    inf = np.isinf(w)
    assert np.array_equal(g[inf], w[inf]), f"{what}: infinities differ"
    assert not np.isnan(g).any(), f"{what}: NaN in result"
    err = np.abs(g[~inf] - w[~inf])
    bound = tol["atol"] + tol["rtol"] * np.abs(w[~inf])
    if err.size:
        worst = int(np.argmax(err - bound))
        assert np.all(err <= bound), f"{what}: |got-want| {err[worst]:.3g} > {bound[worst]:.3g}"
