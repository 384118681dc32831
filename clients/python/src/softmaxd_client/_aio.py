"""asyncio client on grpc.aio, with the same methods as `Client` as coroutines."""

from __future__ import annotations

import collections
from typing import AsyncIterator, Optional, Sequence, Tuple

import grpc
import grpc.aio
import numpy as np

from . import _calls
from ._calls import CrossEntropy, method
from ._errors import SoftmaxError


class AsyncClient:
    """Like `Client`, for asyncio: every call is awaited, streams are async iterators."""

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
            grpc.aio.secure_channel(addr, creds, opts) if creds else grpc.aio.insecure_channel(addr, opts)
        )
        self._metadata = _calls.metadata(token)
        self._timeout = timeout
        self._raw = encoding == "raw"
        self.max_message_bytes = max_message_bytes

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, name: str, request: bytes) -> bytes:
        try:
            return await self._channel.unary_unary(method(name))(
                request, timeout=self._timeout, metadata=self._metadata
            )
        except grpc.RpcError as err:
            raise SoftmaxError.from_rpc_error(err) from None

    async def forward(self, logits, *, temperature: Optional[float] = None, log: bool = False) -> np.ndarray:
        req, dtype = _calls.forward_request(logits, temperature, log, self._raw)
        return _calls.single_output(await self._call("Forward", req), dtype, np.shape(logits))

    async def backward(
        self, *, output=None, logits=None, grad_output, temperature: Optional[float] = None, log: bool = False
    ) -> np.ndarray:
        req, dtype = _calls.backward_request(output, logits, grad_output, temperature, log, self._raw)
        return _calls.single_output(await self._call("Backward", req), dtype, np.shape(grad_output))

    async def jacobian(
        self,
        logits=None,
        *,
        output=None,
        temperature: Optional[float] = None,
        log: bool = False,
        stream: Optional[bool] = None,
    ) -> np.ndarray:
        plan = _calls.jacobian_request(logits, output, temperature, log, self._raw)
        if stream is None:
            stream = plan.nbytes > self.max_message_bytes // 2
        if not stream:
            data = await self._call("Jacobian", plan.request)
            return _calls.single_output(data, plan.dtype, plan.batch + (plan.k, plan.k))
        whole = _calls.JacobianAssembler(plan)
        call = self._channel.unary_stream(method("JacobianStream"))(
            plan.request, timeout=self._timeout, metadata=self._metadata
        )
        try:
            async for data in call:
                whole.add(data)
        except grpc.RpcError as err:
            raise SoftmaxError.from_rpc_error(err) from None
        return whole.result()

    async def cross_entropy(
        self, logits, *, labels=None, target=None, temperature: Optional[float] = None
    ) -> CrossEntropy:
        req, dtype = _calls.cross_entropy_request(logits, labels, target, temperature, self._raw)
        data = await self._call("CrossEntropy", req)
        return _calls.cross_entropy_output(data, dtype, np.shape(logits))

    async def forward_stream(
        self, arrays, *, temperature: Optional[float] = None, log: bool = False
    ) -> AsyncIterator[np.ndarray]:
        """Forward over one stream; `arrays` may be an iterable or an async iterable."""
        pending: collections.deque = collections.deque()

        async def requests():
            if hasattr(arrays, "__aiter__"):
                async for x in arrays:
                    req, expect = _calls.stream_request(x, temperature, log, self._raw)
                    pending.append(expect)
                    yield req
            else:
                for x in arrays:
                    req, expect = _calls.stream_request(x, temperature, log, self._raw)
                    pending.append(expect)
                    yield req

        call = self._channel.stream_stream(method("ForwardStream"))(
            requests(), timeout=self._timeout, metadata=self._metadata
        )
        try:
            async for data in call:
                yield _calls.single_output(data, *pending.popleft())
        except grpc.RpcError as err:
            raise SoftmaxError.from_rpc_error(err) from None
        finally:
            call.cancel()
