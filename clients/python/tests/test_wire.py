"""The hand-assembled wire format against the protobuf module generated from the proto."""

import numpy as np
import pytest

from softmaxd_client import _calls, _wire
from softmaxd_client import softmax_pb2 as pb

SHAPES = [(5,), (3, 4), (2, 3, 6), (0, 5), (1, 1)]


def pb_tensor(a, raw):
    a = np.asarray(a)
    t = pb.Tensor(shape=a.shape)
    kind = "f32" if a.dtype == np.float32 else "f64"
    if a.size:
        if raw:
            setattr(t, kind + "_le", a.astype(a.dtype.newbyteorder("<")).tobytes())
        else:
            getattr(t, kind).extend(a.reshape(-1).tolist())
    return t


def rand(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("raw", [True, False])
def test_requests_match_protobuf(shape, dtype, raw):
    x, g = rand(shape, dtype, 1), rand(shape, dtype, 2)
    req, _ = _calls.forward_request(x, 0.5, True, raw)
    assert req == pb.ForwardRequest(logits=pb_tensor(x, raw), temperature=0.5, log=True).SerializeToString()
    req, _ = _calls.forward_request(x, None, False, raw)
    assert req == pb.ForwardRequest(logits=pb_tensor(x, raw)).SerializeToString()
    req, _ = _calls.backward_request(x, None, g, 2.0, False, raw)
    want = pb.BackwardRequest(output=pb_tensor(x, raw), grad_output=pb_tensor(g, raw), temperature=2.0)
    assert req == want.SerializeToString()
    req, _ = _calls.backward_request(None, x, g, None, True, raw)
    want = pb.BackwardRequest(logits=pb_tensor(x, raw), grad_output=pb_tensor(g, raw), log=True)
    assert req == want.SerializeToString()
    plan = _calls.jacobian_request(None, x, 0.25, True, raw)
    want = pb.JacobianRequest(output=pb_tensor(x, raw), temperature=0.25, log=True)
    assert plan.request == want.SerializeToString()
    rows = int(np.prod(shape[:-1]))
    labels = list(range(rows))
    req, _ = _calls.cross_entropy_request(x, labels, None, 3.0, raw)
    want = pb.CrossEntropyRequest(logits=pb_tensor(x, raw), labels=labels, temperature=3.0)
    assert req == want.SerializeToString()
    req, _ = _calls.cross_entropy_request(x, None, np.abs(g), None, raw)
    want = pb.CrossEntropyRequest(logits=pb_tensor(x, raw), target=pb_tensor(np.abs(g), raw))
    assert req == want.SerializeToString()


def test_temperature_zero_is_sent():
    """`optional float`: an explicit 0 must reach the server (which rejects it)."""
    req, _ = _calls.forward_request(np.ones(3), 0.0, False, True)
    assert pb.ForwardRequest.FromString(req).HasField("temperature")


def test_dtype_and_layout_conversions():
    x = np.arange(12, dtype=np.float64).reshape(3, 4).T  # not C-contiguous
    req, dtype = _calls.forward_request(x, None, False, True)
    assert dtype == np.float64
    t = pb.ForwardRequest.FromString(req).logits
    assert list(t.shape) == [4, 3]
    assert np.array_equal(np.frombuffer(t.f64_le, "<f8").reshape(4, 3), x)
    big_endian = np.arange(4, dtype=">f4")
    t = pb.ForwardRequest.FromString(_calls.forward_request(big_endian, None, False, True)[0]).logits
    assert np.array_equal(np.frombuffer(t.f32_le, "<f4"), big_endian)
    assert _calls.forward_request([1, 2, 3], None, False, True)[1] == np.float64
    with pytest.raises(TypeError):
        _calls.forward_request(np.array(["a"]), None, False, True)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("raw", [True, False])
def test_responses_decode_in_place(shape, dtype, raw):
    x = rand(shape, dtype, 3)
    data = pb.ForwardResponse(output=pb_tensor(x, raw)).SerializeToString()
    out = _calls.single_output(data, np.dtype(dtype), shape)
    assert out.dtype == dtype and out.shape == shape
    assert np.array_equal(out, x)
    if x.size:
        # A view of the received bytes, not a copy.
        assert not out.flags.owndata and not out.flags.writeable


def test_cross_entropy_and_jacobian_responses():
    loss, grad = rand((2, 3), np.float32, 4), rand((2, 3, 5), np.float32, 5)
    data = pb.CrossEntropyResponse(loss=pb_tensor(loss, True), grad_logits=pb_tensor(grad, True)).SerializeToString()
    res = _calls.cross_entropy_output(data, np.dtype(np.float32), (2, 3, 5))
    assert np.array_equal(res.loss, loss) and np.array_equal(res.grad_logits, grad)
    scalar = pb.CrossEntropyResponse(
        loss=pb.Tensor(f64_le=np.float64(1.5).tobytes()), grad_logits=pb_tensor(np.ones(4), True)
    ).SerializeToString()
    res = _calls.cross_entropy_output(scalar, np.dtype(np.float64), (4,))
    assert res.loss.shape == () and res.loss == 1.5
    chunk = rand((2, 3, 3), np.float64, 6)
    data = pb.JacobianResponse(jacobian=pb_tensor(chunk, True), first_row=2**40).SerializeToString()
    first, got = _calls.jacobian_chunk(data, np.dtype(np.float64))
    assert first == 2**40 and np.array_equal(got, chunk)


def test_unpacked_repeated_values_decode():
    """Legal but unusual: repeated floats one per field, as some encoders write them."""
    t = b"\x08\x02" + b"".join(b"\x15" + np.float32(v).tobytes() for v in (1.5, -2.0))
    data = b"\x0a" + bytes([len(t)]) + t
    out = _calls.single_output(data, np.dtype(np.float32), (2,))
    assert out.tolist() == [1.5, -2.0]


def test_jacobian_assembler_checks_coverage():
    plan = _calls.jacobian_request(np.zeros((3, 2)), None, None, False, True)
    whole = _calls.JacobianAssembler(plan)
    part = pb.JacobianResponse(jacobian=pb_tensor(np.ones((2, 2, 2)), True), first_row=0)
    whole.add(part.SerializeToString())
    with pytest.raises(ValueError):
        whole.result()
    with pytest.raises(ValueError):
        whole.add(pb.JacobianResponse(jacobian=pb_tensor(np.ones((2, 2, 2)), True), first_row=2).SerializeToString())


def test_truncated_response_is_an_error():
    data = pb.ForwardResponse(output=pb_tensor(np.ones((2, 3), np.float32), True)).SerializeToString()
    with pytest.raises(ValueError):
        _calls.single_output(data[:-3], np.dtype(np.float32), (2, 3))
