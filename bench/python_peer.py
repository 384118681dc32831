#!/usr/bin/env python3
"""A straightforward grpcio + numpy implementation of softmax.v1 Forward and
Backward (raw and typed encodings, f32 and f64): the peer softmaxd's service
throughput is compared against. The stubs are generated from the same
proto/softmax/v1/softmax.proto with grpcio-tools at startup, in a temp dir.

    python3 bench/python_peer.py --port 50053 [--workers 4]
"""

import argparse
import os
import signal
import sys
import tempfile
from concurrent import futures

import grpc
import numpy as np
from grpc_tools import protoc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO_DIR = os.path.join(ROOT, "proto")


def generate_stubs():
    out = tempfile.mkdtemp(prefix="softmax_pb_")
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main([
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        os.path.join(PROTO_DIR, "softmax", "v1", "softmax.proto"),
    ])
    if rc != 0:
        sys.exit(f"protoc failed with {rc}")
    sys.path.insert(0, out)
    from softmax.v1 import softmax_pb2, softmax_pb2_grpc  # noqa: E402

    return softmax_pb2, softmax_pb2_grpc


pb, pb_grpc = generate_stubs()


def decode(t):
    """Tensor -> (array [rows, k], dtype name, raw?)."""
    shape = list(t.shape)
    if len(t.f32_le):
        a, dt, raw = np.frombuffer(t.f32_le, dtype="<f4"), "f32", True
    elif len(t.f64_le):
        a, dt, raw = np.frombuffer(t.f64_le, dtype="<f8"), "f64", True
    elif len(t.f64):
        a, dt, raw = np.asarray(t.f64, dtype=np.float64), "f64", False
    else:
        a, dt, raw = np.asarray(t.f32, dtype=np.float32), "f32", False
    if not shape or a.size != int(np.prod(shape)):
        raise ValueError("shape does not match the values")
    return a.reshape(-1, shape[-1]), dt, raw, shape


def encode(a, dt, raw, shape):
    t = pb.Tensor(shape=shape)
    flat = a.reshape(-1)
    if raw:
        if dt == "f32":
            t.f32_le = flat.astype("<f4").tobytes()
        else:
            t.f64_le = flat.astype("<f8").tobytes()
    elif dt == "f32":
        t.f32.extend(flat.tolist())
    else:
        t.f64.extend(flat.tolist())
    return t


def softmax(x, inv_t, log):
    z = x * inv_t if inv_t != 1 else x
    z = z - z.max(axis=1, keepdims=True)
    if log:
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def inv_temperature(req):
    if req.HasField("temperature"):
        if not (req.temperature > 0 and np.isfinite(req.temperature)):
            raise ValueError("temperature must be positive and finite")
        return 1.0 / req.temperature
    return 1.0


class Peer(pb_grpc.SoftmaxServiceServicer):
    def Forward(self, request, context):
        try:
            x, dt, raw, shape = decode(request.logits)
            y = softmax(x, inv_temperature(request), request.log)
            return pb.ForwardResponse(output=encode(y, dt, raw, shape))
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))

    def Backward(self, request, context):
        try:
            inv_t = inv_temperature(request)
            if request.HasField("output"):
                s, dt, raw, shape = decode(request.output)
            else:
                x, dt, raw, shape = decode(request.logits)
                s = softmax(x, inv_t, request.log)
            g, _, _, _ = decode(request.grad_output)
            if request.log:
                p = np.exp(s)
                grad = inv_t * (g - p * g.sum(axis=1, keepdims=True))
            else:
                grad = inv_t * s * (g - (g * s).sum(axis=1, keepdims=True))
            return pb.BackwardResponse(grad_logits=encode(grad, dt, raw, shape))
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=50053)
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()
    limit = 64 << 20
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=args.workers),
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ],
    )
    pb_grpc.add_SoftmaxServiceServicer_to_server(Peer(), server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(f"python peer listening on 127.0.0.1:{args.port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    server.wait_for_termination()


if __name__ == "__main__":
    main()
