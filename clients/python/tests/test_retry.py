"""Retries and reconnects: the default service config retries UNAVAILABLE (and
only that, a bounded number of times), and one client object keeps working
across a restart of the server on the same port."""

import json
from concurrent import futures

import grpc
import numpy as np
import pytest

from conftest import free_port, start_server
from softmaxd_client import AsyncClient, Client, SoftmaxError

FORWARD = "/softmax.v1.SoftmaxService/Forward"


class Flaky:
    """A stand-in server whose Forward refuses its first `fail` calls with
    `code`, then echoes the request (ForwardRequest.logits and
    ForwardResponse.output are both field 1, so the echo is a valid answer)."""

    def __init__(self, fail, code):
        self.fail, self.code, self.calls = fail, code, 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        handler = grpc.unary_unary_rpc_method_handler(self._forward)
        self.server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("softmax.v1.SoftmaxService", {"Forward": handler})]
        )
        self.addr = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def _forward(self, request, context):
        self.calls += 1
        if self.calls <= self.fail:
            context.abort(self.code, "refused by the test")
        return request

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.stop(None)


X = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)


def softmax_f64(x):
    e = np.exp(x.astype(np.float64) - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_unavailable_is_retried_until_the_call_succeeds():
    with Flaky(2, grpc.StatusCode.UNAVAILABLE) as server, Client(server.addr, timeout=30) as c:
        np.testing.assert_array_equal(c.forward(X), X)
        assert server.calls == 3


async def test_the_async_client_retries_too():
    with Flaky(1, grpc.StatusCode.UNAVAILABLE) as server:
        async with AsyncClient(server.addr, timeout=30) as c:
            np.testing.assert_array_equal(await c.forward(X), X)
        assert server.calls == 2


@pytest.mark.parametrize(
    "code,tries",
    # UNAVAILABLE up to maxAttempts; a retry on RESOURCE_EXHAUSTED would add to an overload.
    [(grpc.StatusCode.UNAVAILABLE, 5), (grpc.StatusCode.RESOURCE_EXHAUSTED, 1)],
)
def test_retries_are_bounded_and_only_on_unavailable(code, tries):
    with Flaky(100, code) as server, Client(server.addr, timeout=30) as c:
        with pytest.raises(SoftmaxError) as err:
            c.forward(X)
        assert err.value.code == code
        assert server.calls == tries


def test_retries_can_be_turned_off():
    options = [("grpc.enable_retries", 0)]
    with Flaky(1, grpc.StatusCode.UNAVAILABLE) as server, Client(server.addr, options=options) as c:
        with pytest.raises(SoftmaxError):
            c.forward(X)
        assert server.calls == 1


def test_a_service_config_of_ones_own_replaces_the_default():
    config = {
        "methodConfig": [
            {
                "name": [{"service": "softmax.v1.SoftmaxService"}],
                "retryPolicy": {
                    "maxAttempts": 2,
                    "initialBackoff": "0.01s",
                    "maxBackoff": "0.01s",
                    "backoffMultiplier": 1,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
    options = [("grpc.service_config", json.dumps(config))]
    with Flaky(100, grpc.StatusCode.UNAVAILABLE) as server, Client(server.addr, options=options) as c:
        with pytest.raises(SoftmaxError):
            c.forward(X)
        assert server.calls == 2


def test_one_client_reconnects_after_the_server_restarts():
    address = f"127.0.0.1:{free_port()}"
    proc = start_server(address)
    try:
        with Client(address, timeout=30) as c:
            np.testing.assert_allclose(c.forward(X), softmax_f64(X), atol=2e-7)
            proc.kill()  # no drain: connections reset
            proc.wait(timeout=30)
            proc = start_server(address)
            np.testing.assert_allclose(c.forward(X), softmax_f64(X), atol=2e-7)
    finally:
        proc.kill()
        proc.wait(timeout=30)
