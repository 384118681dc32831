"""The one exception type that every failed call raises."""

from __future__ import annotations

import grpc


class SoftmaxError(Exception):
    """A call that softmaxd (or the transport) answered with a non-OK status.

    `code` is the `grpc.StatusCode` (e.g. `INVALID_ARGUMENT`), `details` the
    server's message, which names the offending field and flat position.
    """

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> "SoftmaxError":
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        details = err.details() if hasattr(err, "details") else str(err)
        return cls(code or grpc.StatusCode.UNKNOWN, details or "")
