"""What each RPC sends and how its answer becomes numpy arrays, shared by both clients."""

from __future__ import annotations

import json
from typing import Iterator, NamedTuple, Optional, Sequence, Tuple

import grpc
import numpy as np

from . import _wire
from ._wire import as_array

SERVICE = "softmax.v1.SoftmaxService"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def method(name: str) -> str:
    return f"/{SERVICE}/{name}"


class CrossEntropy(NamedTuple):
    """CrossEntropy's answer: loss per vector (shape = batch dims) and its gradient."""

    loss: np.ndarray
    grad_logits: np.ndarray


# Calls refused with UNAVAILABLE (server unreachable, restarting or draining)
# are tried again: every softmaxd RPC is a pure function of its request, so a
# retry is safe. gRPC retries a call only until its first response arrives, so
# streams are never retried midway. Other codes are not retried (a retry on
# RESOURCE_EXHAUSTED would add to an overload). The Rust and Node clients
# use the same policy.
RETRY_POLICY = {
    "maxAttempts": 5,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
SERVICE_CONFIG = json.dumps({"methodConfig": [{"name": [{"service": SERVICE}], "retryPolicy": RETRY_POLICY}]})


def channel_options(options: Optional[Sequence[Tuple[str, object]]]):
    defaults = {
        "grpc.enable_retries": 1,
        "grpc.service_config": SERVICE_CONFIG,
        # A call is retried only while its request fits in this buffer (256 KiB by
        # default): allow up to the server's message limit.
        "grpc.per_rpc_retry_buffer_size": DEFAULT_MAX_MESSAGE_BYTES,
        # softmaxd enforces its own message limit; the client must not cut below it.
        "grpc.max_send_message_length": -1,
        "grpc.max_receive_message_length": -1,
        # Accept identity only: float tensors barely compress, and a server that
        # gzips whatever the client accepts runs ~40x slower on large answers.
        "grpc.compression_enabled_algorithms_bitset": 1,
    }
    given = list(options or [])
    names = {name for name, _ in given}
    return given + [(k, v) for k, v in defaults.items() if k not in names]


def credentials(tls) -> Optional[grpc.ChannelCredentials]:
    """None for plaintext; `True` uses the system roots, bytes are PEM root certificates."""
    if tls is None or tls is False:
        return None
    if tls is True:
        return grpc.ssl_channel_credentials()
    if isinstance(tls, (bytes, bytearray)):
        return grpc.ssl_channel_credentials(root_certificates=bytes(tls))
    if isinstance(tls, grpc.ChannelCredentials):
        return tls
    raise TypeError("tls must be a bool, PEM root certificates (bytes) or grpc.ChannelCredentials")


def metadata(token: Optional[str]):
    return (("authorization", f"Bearer {token}"),) if token else None


def forward_request(x, temperature, log, raw) -> Tuple[bytes, np.dtype]:
    a = as_array(x, "logits")
    return _wire.encode({1: a}, raw=raw, temperature=(2, temperature), flag=(3, log)), a.dtype


def backward_request(output, logits, grad_output, temperature, log, raw) -> Tuple[bytes, np.dtype]:
    s = None if output is None else as_array(output, "output")
    x = None if logits is None else as_array(logits, "logits")
    g = as_array(grad_output, "grad_output")
    primary = s if s is not None else x if x is not None else g
    tensors = {1: s, 2: x, 3: g}
    return _wire.encode(tensors, raw=raw, temperature=(4, temperature), flag=(5, log)), primary.dtype


class JacobianPlan(NamedTuple):
    request: bytes
    dtype: np.dtype
    batch: Tuple[int, ...]
    rows: int
    k: int
    nbytes: int


def jacobian_request(logits, output, temperature, log, raw) -> JacobianPlan:
    x = None if logits is None else as_array(logits, "logits")
    s = None if output is None else as_array(output, "output")
    primary = x if x is not None else s
    if primary is None:
        # Let the server say what is missing, like any other malformed request.
        primary = np.empty((0,), _wire.F32)
    req = _wire.encode({1: x, 2: s}, raw=raw, temperature=(3, temperature), flag=(4, log))
    batch = primary.shape[:-1]
    k = primary.shape[-1] if primary.ndim else 0
    rows = int(np.prod(batch, dtype=np.int64))
    return JacobianPlan(req, primary.dtype, batch, rows, k, rows * k * k * primary.dtype.itemsize)


def cross_entropy_request(logits, labels, target, temperature, raw) -> Tuple[bytes, np.dtype]:
    x = as_array(logits, "logits")
    y = None if target is None else as_array(target, "target")
    lab = None
    if labels is not None:
        lab = np.asarray(labels).reshape(-1)
        if lab.size == 0:
            lab = lab.astype(np.int64)
        if lab.dtype.kind not in "iu" or (lab.size and (lab.min() < 0 or lab.max() > 2**32 - 1)):
            raise ValueError("labels must be integers in [0, 2^32)")
    req = _wire.encode({1: x, 3: y}, raw=raw, temperature=(4, temperature), labels=(2, lab))
    return req, x.dtype


def tensor_field(data: bytes, number: int, dtype: np.dtype) -> np.ndarray:
    fields = _wire.decode_fields(data)
    if number not in fields:
        # An absent tensor is an empty one (zero vectors in, nothing out).
        return np.empty((0,), dtype)
    wire_type, span = fields[number]
    return _wire.decode_tensor(data, span, dtype)


def single_output(data: bytes, dtype: np.dtype, shape) -> np.ndarray:
    out = tensor_field(data, 1, dtype)
    # Empty batches come back without a tensor; keep the request's shape.
    return out.reshape(shape) if out.size == 0 else out


def cross_entropy_output(data: bytes, dtype: np.dtype, shape) -> CrossEntropy:
    loss = tensor_field(data, 1, dtype)
    grad = tensor_field(data, 2, dtype)
    if grad.size == 0:
        loss, grad = loss.reshape(shape[:-1]), grad.reshape(shape)
    return CrossEntropy(loss, grad)


def jacobian_chunk(data: bytes, dtype: np.dtype) -> Tuple[int, np.ndarray]:
    fields = _wire.decode_fields(data)
    first_row = fields.get(2, (0, 0))[1]
    return int(first_row), tensor_field(data, 1, dtype)


class JacobianAssembler:
    """Places JacobianStream chunks into one [*batch, k, k] array, checking coverage."""

    def __init__(self, plan: JacobianPlan):
        self.plan = plan
        self.out = np.empty((plan.rows, plan.k, plan.k), plan.dtype)
        self.received = 0

    def add(self, data: bytes) -> None:
        first, chunk = jacobian_chunk(data, self.plan.dtype)
        n = chunk.shape[0] if chunk.ndim == 3 else 0
        if n == 0:
            return
        if chunk.shape[1:] != (self.plan.k, self.plan.k) or first + n > self.plan.rows:
            raise ValueError(f"JacobianStream chunk at row {first} has shape {chunk.shape}")
        self.out[first : first + n] = chunk
        self.received += n

    def result(self) -> np.ndarray:
        if self.received != self.plan.rows:
            raise ValueError(f"JacobianStream sent {self.received} of {self.plan.rows} vectors")
        return self.out.reshape(self.plan.batch + (self.plan.k, self.plan.k))


def stream_request(x, temperature, log, raw) -> Tuple[bytes, Tuple[np.dtype, tuple]]:
    """A ForwardStream message and what decoding its answer needs."""
    req, dtype = forward_request(x, temperature, log, raw)
    return req, (dtype, np.shape(x))
