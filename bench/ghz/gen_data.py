#!/usr/bin/env python3
"""Writes the binary request files the ghz configs in this folder send (-B).

Each file holds length-delimited (varint size prefix) serialized softmax.v1
messages, the form ghz reads for unary and streaming calls alike. Values are
pseudo-random but fixed by a seed, so every run sends the same bytes.
Standard library only: the few protobuf fields are encoded by hand.

    python3 bench/ghz/gen_data.py            # writes bench/ghz/data/*.bin
"""
import math
import os
import random
import struct
import sys

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_bytes(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3 | 0) + varint(value)


def tensor_f32_le(shape, values) -> bytes:
    """softmax.v1.Tensor with shape (field 1, packed) and f32_le (field 4)."""
    packed_shape = b"".join(varint(d) for d in shape)
    raw = struct.pack(f"<{len(values)}f", *values)
    return field_bytes(1, packed_shape) + field_bytes(4, raw)


def logits(rng, count, scale=3.0):
    return [rng.gauss(0.0, scale) for _ in range(count)]


def softmax_rows(values, k):
    out = []
    for start in range(0, len(values), k):
        row = values[start : start + k]
        m = max(row)
        exps = [math.exp(v - m) for v in row]
        total = sum(exps)
        out.extend(e / total for e in exps)
    return out


def forward_request(shape, values, log=False) -> bytes:
    msg = field_bytes(1, tensor_f32_le(shape, values))
    if log:
        msg += field_varint(3, 1)
    return msg


def delimited(*messages) -> bytes:
    return b"".join(varint(len(m)) + m for m in messages)


def count(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def main() -> int:
    os.makedirs(OUT, exist_ok=True)
    rng = random.Random(20261128)
    files = {}

    # Attention scores: 8 heads x 128 queries x 128 keys.
    shape = [8, 128, 128]
    files["forward_attention.bin"] = delimited(
        forward_request(shape, logits(rng, count(shape)))
    )

    # Language-model head: 4 positions over a 32 000-token vocabulary, log-softmax.
    shape = [4, 32000]
    files["forward_vocab_log.bin"] = delimited(
        forward_request(shape, logits(rng, count(shape)), log=True)
    )

    # Backward of an ImageNet-sized classifier: s = softmax(x) and g = dE/ds.
    shape = [32, 1000]
    probs = softmax_rows(logits(rng, count(shape)), shape[-1])
    grad = [rng.gauss(0.0, 1.0) for _ in range(count(shape))]
    files["backward_classifier.bin"] = delimited(
        field_bytes(1, tensor_f32_le(shape, probs))
        + field_bytes(3, tensor_f32_le(shape, grad))
    )

    # Jacobian: 8 vectors of k = 128, a 512 KiB response.
    shape = [8, 128]
    files["jacobian_k128.bin"] = delimited(
        field_bytes(1, tensor_f32_le(shape, logits(rng, count(shape))))
    )

    # ForwardStream: 8 different messages of 16 attention rows of 1024 keys;
    # the config repeats them (stream-call-count) on each stream.
    shape = [16, 1024]
    files["forward_stream_rows.bin"] = delimited(
        *(forward_request(shape, logits(rng, count(shape))) for _ in range(8))
    )

    for name, data in files.items():
        path = os.path.join(OUT, name)
        with open(path, "wb") as f:
            f.write(data)
        print(f"{path}: {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
