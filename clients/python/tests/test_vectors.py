"""The shared vectors (tests/vectors/*.json) through the blocking and the asyncio client."""

import grpc
import pytest

from conftest import assert_close, load_cases
from softmaxd_client import AsyncClient, SoftmaxError
from vectors import expected, run, run_async

RESULTS = load_cases("forward", "backward", "jacobian", "cross_entropy", "forward_stream")
ERRORS = load_cases("errors")


def check(got, case, dtype, tol):
    want = expected(case, dtype)
    for name, w in want.items():
        if name == "outputs":
            assert len(got[name]) == len(w)
            for i, (g, ww) in enumerate(zip(got[name], w)):
                assert_close(g, ww, tol, dtype, f"{case['name']} message {i}")
        else:
            assert_close(got[name], w, tol, dtype, f"{case['name']} {name}")


def check_error(err, case):
    assert err.code == getattr(grpc.StatusCode, case["error"]), err
    for word in case.get("message_contains", []):
        assert word in err.details, f"{word!r} not in {err.details!r}"


@pytest.mark.parametrize("case,dtype,tol", RESULTS)
def test_vector(client, case, dtype, tol):
    check(run(client, case, dtype), case, dtype, tol)


@pytest.mark.parametrize("case,dtype,tol", ERRORS)
def test_error_vector(client, case, dtype, tol):
    with pytest.raises(SoftmaxError) as info:
        run(client, case, dtype)
    check_error(info.value, case)


async def test_vectors_async(addr):
    async with AsyncClient(addr, timeout=120) as c:
        for param in RESULTS:
            case, dtype, tol = param.values
            check(await run_async(c, case, dtype), case, dtype, tol)
        for param in ERRORS:
            case, dtype, tol = param.values
            with pytest.raises(SoftmaxError) as info:
                await run_async(c, case, dtype)
            check_error(info.value, case)


def test_vectors_typed_encoding(addr):
    """The typed repeated fields (what JSON tools send) give the same results."""
    from softmaxd_client import Client

    with Client(addr, encoding="typed", timeout=120) as c:
        for param in RESULTS:
            case, dtype, tol = param.values
            check(run(c, case, dtype), case, dtype, tol)
