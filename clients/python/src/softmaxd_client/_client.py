"""Blocking client: numpy arrays in, numpy arrays out."""

from __future__ import annotations

import collections
from typing import Iterable, Iterator, Optional, Sequence, Tuple

import grpc
import numpy as np

from . import _calls
from ._calls import CrossEntropy, method
from ._errors import SoftmaxError


class Client:
    """A connection to one softmaxd.

    `tls`: False (plaintext), True (system roots), PEM root certificates as
    bytes, or `grpc.ChannelCredentials`. `token` is sent as a bearer token.
    `timeout` is the deadline of each call in seconds (None: no deadline).
    `encoding` "raw" sends `f32_le`/`f64_le` bytes (fast); "typed" sends the
    repeated `f32`/`f64` fields. `max_message_bytes` is the server's message
    limit, above which `jacobian` switches to JacobianStream.

    Returned arrays view the received message in place and are read-only;
    `.copy()` one to modify it.
    """

    def __init__(
        self,
        addr: str,
        *,
        tls=False,
        token: Optional[str] = None,
        timeout: Optional[float] = None,
        encoding: str = "raw",
        max_message_bytes: int = _calls.DEFAULT_MAX_MESSAGE_BYTES,
        options: Optional[Sequence[Tuple[str, object]]] = None,
    ):
        if encoding not in ("raw", "typed"):
            raise ValueError("encoding must be 'raw' or 'typed'")
        creds = _calls.credentials(tls)
        opts = _calls.channel_options(options)
        self._channel = (
            grpc.secure_channel(addr, creds, opts) if creds else grpc.insecure_channel(addr, opts)
        )
        self._metadata = _calls.metadata(token)
        self._timeout = timeout
        self._raw = encoding == "raw"
        self.max_message_bytes = max_message_bytes
        unary = self._channel.unary_unary
        self._forward = unary(method("Forward"))
        self._backward = unary(method("Backward"))
        self._jacobian = unary(method("Jacobian"))
        self._cross_entropy = unary(method("CrossEntropy"))
        self._jacobian_stream = self._channel.unary_stream(method("JacobianStream"))
        self._forward_stream = self._channel.stream_stream(method("ForwardStream"))

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Blocks until the channel is connected (raises SoftmaxError on timeout)."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise SoftmaxError(grpc.StatusCode.UNAVAILABLE, "server not reachable") from None

    def _call(self, rpc, request: bytes) -> bytes:
        try:
            return rpc(request, timeout=self._timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise SoftmaxError.from_rpc_error(err) from None

    def forward(self, logits, *, temperature: Optional[float] = None, log: bool = False) -> np.ndarray:
        """softmax(logits / temperature) over the last axis (log-softmax with `log`)."""
        req, dtype = _calls.forward_request(logits, temperature, log, self._raw)
        return _calls.single_output(self._call(self._forward, req), dtype, np.shape(logits))

    def backward(
        self,
        *,
        output=None,
        logits=None,
        grad_output,
        temperature: Optional[float] = None,
        log: bool = False,
    ) -> np.ndarray:
        """Gradient with respect to the logits, from the Forward `output` or the `logits`."""
        req, dtype = _calls.backward_request(output, logits, grad_output, temperature, log, self._raw)
        return _calls.single_output(self._call(self._backward, req), dtype, np.shape(grad_output))

    def jacobian(
        self,
        logits=None,
        *,
        output=None,
        temperature: Optional[float] = None,
        log: bool = False,
        stream: Optional[bool] = None,
    ) -> np.ndarray:
        """J[..., i, j] = ds_i/dx_j, shape batch dims + [k, k].

        Uses JacobianStream when the result would not fit comfortably in one
        message (`stream=None`), or as forced by `stream=True/False`.
        """
        plan = _calls.jacobian_request(logits, output, temperature, log, self._raw)
        if stream is None:
            stream = plan.nbytes > self.max_message_bytes // 2
        if not stream:
            data = self._call(self._jacobian, plan.request)
            return _calls.single_output(data, plan.dtype, plan.batch + (plan.k, plan.k))
        whole = _calls.JacobianAssembler(plan)
        try:
            for data in self._jacobian_stream(plan.request, timeout=self._timeout, metadata=self._metadata):
                whole.add(data)
        except grpc.RpcError as err:
            raise SoftmaxError.from_rpc_error(err) from None
        return whole.result()

    def jacobian_stream(
        self, logits=None, *, output=None, temperature: Optional[float] = None, log: bool = False
    ) -> Iterator[Tuple[int, np.ndarray]]:
        """JacobianStream as it arrives: (first_row, [n, k, k] chunk) pairs."""
        plan = _calls.jacobian_request(logits, output, temperature, log, self._raw)
        call = self._jacobian_stream(plan.request, timeout=self._timeout, metadata=self._metadata)
        try:
            for data in call:
                yield _calls.jacobian_chunk(data, plan.dtype)
        except grpc.RpcError as err:
            raise SoftmaxError.from_rpc_error(err) from None
        finally:
            call.cancel()  # a no-op after the end; stops the server if the caller broke off

    def cross_entropy(
        self, logits, *, labels=None, target=None, temperature: Optional[float] = None
    ) -> CrossEntropy:
        """Loss per vector (shape = batch dims) and its gradient, against labels or a target."""
        req, dtype = _calls.cross_entropy_request(logits, labels, target, temperature, self._raw)
        data = self._call(self._cross_entropy, req)
        return _calls.cross_entropy_output(data, dtype, np.shape(logits))

    def forward_stream(
        self, arrays: Iterable, *, temperature: Optional[float] = None, log: bool = False
    ) -> Iterator[np.ndarray]:
        """Forward over one bidirectional stream: one output per input array, in order."""
        pending: collections.deque = collections.deque()

        def requests():
            for x in arrays:
                req, expect = _calls.stream_request(x, temperature, log, self._raw)
                pending.append(expect)
                yield req

        call = self._forward_stream(requests(), timeout=self._timeout, metadata=self._metadata)
        try:
            for data in call:
                yield _calls.single_output(data, *pending.popleft())
        except grpc.RpcError as err:
            raise SoftmaxError.from_rpc_error(err) from None
        finally:
            call.cancel()  # a no-op after the end; stops the server if the caller broke off
