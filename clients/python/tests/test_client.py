"""The Python client beyond the shared vectors: JAX references, encodings, large messages, streams, errors."""

import asyncio

import grpc
import numpy as np
import pytest

from softmaxd_client import AsyncClient, Client, SoftmaxError

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy

SHAPES = [(7,), (4, 6), (2, 3, 5)]


def rng(seed):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-6), (np.float64, 1e-12)])
@pytest.mark.parametrize("log", [False, True])
def test_against_jax(client, shape, dtype, tol, log):
    x = (rng(1).standard_normal(shape) * 3).astype(dtype)
    g = rng(2).standard_normal(shape).astype(dtype)
    t = 0.5
    x64 = jnp.asarray(x, dtype=jnp.float64)
    fn = (lambda z: jax.nn.log_softmax(z / t, axis=-1)) if log else (lambda z: jax.nn.softmax(z / t, axis=-1))
    want = np.asarray(fn(x64))
    got = client.forward(x, temperature=t, log=log)
    assert got.dtype == dtype and got.shape == shape
    np.testing.assert_allclose(got, want, atol=tol, rtol=10 * tol)
    # Backward is the VJP of Forward.
    _, vjp = jax.vjp(fn, x64)
    (want_grad,) = vjp(jnp.asarray(g, dtype=jnp.float64))
    got_grad = client.backward(logits=x, grad_output=g, temperature=t, log=log)
    np.testing.assert_allclose(got_grad, np.asarray(want_grad), atol=tol, rtol=10 * tol)
    got_grad = client.backward(output=got, grad_output=g, temperature=t, log=log)
    np.testing.assert_allclose(got_grad, np.asarray(want_grad), atol=10 * tol, rtol=100 * tol)
    # Jacobian: per vector, jacfwd of the softmax of that vector.
    rows = x64.reshape(-1, shape[-1])
    want_j = np.asarray(jax.vmap(jax.jacfwd(fn))(rows)).reshape(shape + (shape[-1],))
    got_j = client.jacobian(x, temperature=t, log=log)
    assert got_j.shape == shape + (shape[-1],)
    np.testing.assert_allclose(got_j, want_j, atol=tol, rtol=10 * tol)


def test_cross_entropy_against_jax(client):
    x = rng(3).standard_normal((3, 4, 6)) * 2
    labels = rng(4).integers(0, 6, size=12)

    def loss(z):
        return -jnp.take_along_axis(jax.nn.log_softmax(z / 2.0), labels.reshape(3, 4, 1), axis=-1)[..., 0]

    res = client.cross_entropy(x, labels=labels, temperature=2.0)
    np.testing.assert_allclose(res.loss, np.asarray(loss(x)), atol=1e-12, rtol=1e-12)
    np.testing.assert_allclose(res.grad_logits, np.asarray(jax.grad(lambda z: loss(z).sum())(x)), atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_raw_and_typed_encodings_agree(addr, client, dtype):
    x = rng(5).standard_normal((5, 9)).astype(dtype)
    g = rng(6).standard_normal((5, 9)).astype(dtype)
    with Client(addr, encoding="typed") as typed:
        for call in (
            lambda c: c.forward(x, log=True),
            lambda c: c.backward(logits=x, grad_output=g, temperature=3.0),
            lambda c: c.jacobian(x),
            lambda c: c.cross_entropy(x, labels=[1, 2, 3, 4, 5]).grad_logits,
        ):
            raw_out, typed_out = call(client), call(typed)
            assert raw_out.dtype == typed_out.dtype == dtype
            # Same server, same math: bit-identical whatever the encoding.
            assert np.array_equal(raw_out, typed_out)


def test_forward_of_a_32_mib_request(client):
    x = rng(7).standard_normal((4096, 2048)).astype(np.float32) * 4
    assert x.nbytes >= 32 * 2**20
    out = client.forward(x)
    assert out.shape == x.shape and out.dtype == np.float32
    rows = rng(8).integers(0, 4096, size=64)
    z = x[rows].astype(np.float64)
    want = np.exp(z - z.max(-1, keepdims=True))
    want /= want.sum(-1, keepdims=True)
    assert np.max(np.abs(out[rows] - want)) <= 2e-6


def test_jacobian_streams_transparently_when_large(client):
    # 80 x 512 x 512 f64 = 160 MiB: over the 64 MiB message limit.
    x = rng(8).standard_normal((80, 512))
    with pytest.raises(SoftmaxError) as info:
        client.jacobian(x, stream=False)
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "JacobianStream" in info.value.details
    j = client.jacobian(x)
    assert j.shape == (80, 512, 512)
    s = np.exp(x - x.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    for row in (0, 41, 79):
        want = np.diag(s[row]) - np.outer(s[row], s[row])
        np.testing.assert_allclose(j[row], want, atol=1e-12)
    # Every column of J sums to 0.
    assert np.max(np.abs(j.sum(axis=1))) < 1e-12


def test_jacobian_stream_chunks_are_consecutive(client):
    x = rng(9).standard_normal((4, 16, 300)).astype(np.float32)
    nxt = 0
    for first, chunk in client.jacobian_stream(x):
        assert first == nxt and chunk.shape[1:] == (300, 300) and chunk.dtype == np.float32
        nxt += chunk.shape[0]
    assert nxt == 64


def test_forward_stream_keeps_order_and_dtypes(client):
    arrays = [rng(i).standard_normal((i, 3 + i)).astype(np.float32 if i % 2 else np.float64) for i in range(1, 21)]
    outs = list(client.forward_stream(iter(arrays), log=True))
    assert [o.shape for o in outs] == [a.shape for a in arrays]
    assert [o.dtype for o in outs] == [a.dtype for a in arrays]


def test_forward_stream_ends_on_a_bad_message(client):
    good = np.ones((2, 3), np.float32)
    bad = np.array([1.0, np.nan], np.float32)
    seen = []
    with pytest.raises(SoftmaxError) as info:
        for out in client.forward_stream([good, bad, good]):
            seen.append(out)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(seen) == 1


def test_results_are_read_only_views(client):
    out = client.forward(np.ones((2, 4), np.float32))
    assert not out.flags.writeable
    out.copy()[0, 0] = 1.0  # a copy is writable


def test_cross_entropy_scalar_loss_for_one_vector(client):
    res = client.cross_entropy(np.array([0.0, 1.0, 2.0]), labels=[2])
    assert res.loss.shape == ()
    s = np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum()
    assert abs(float(res.loss) + np.log(s[2])) < 1e-12


def test_unreachable_server_raises_unavailable():
    with Client("127.0.0.1:1", timeout=5) as c:
        with pytest.raises(SoftmaxError) as info:
            c.forward(np.ones(3))
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


def test_token_is_accepted(addr):
    with Client(addr, token="secret", timeout=10) as c:
        assert np.allclose(c.forward(np.zeros(4)), 0.25)


async def test_async_client_streams_and_errors(addr):
    async with AsyncClient(addr, timeout=120) as c:
        x = rng(10).standard_normal((3, 5)).astype(np.float32)

        async def gen():
            for i in range(5):
                yield x * i

        outs = [o async for o in c.forward_stream(gen())]
        assert len(outs) == 5 and all(o.shape == (3, 5) for o in outs)
        results = await asyncio.gather(*(c.forward(x, temperature=t) for t in (0.5, 1.0, 2.0)))
        assert [r.dtype for r in results] == [np.float32] * 3
        j = await c.jacobian(rng(11).standard_normal((80, 512)))
        assert j.shape == (80, 512, 512)
        with pytest.raises(SoftmaxError) as info:
            await c.cross_entropy(x, labels=[0, 1, 5])
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_breaking_off_a_stream_leaves_the_client_usable(client):
    arrays = (np.ones((2, 3)) for _ in range(1000))
    for i, _ in enumerate(client.forward_stream(arrays)):
        if i == 2:
            break
    for first, _ in client.jacobian_stream(np.zeros((64, 300))):
        break
    assert client.forward(np.zeros(2)).tolist() == [0.5, 0.5]
