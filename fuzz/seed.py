#!/usr/bin/env python3
"""Writes seed corpora for the fuzz targets: a few valid (and a few
invalid) encoded requests per target, into fuzz/corpus/<target>/.

Stdlib only: the messages are encoded by hand from
proto/softmax/v1/softmax.proto (field numbers never change), with the
encoders of bench/ghz/gen_data.py."""

import math
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# The hand-written protobuf encoders of the ghz request generator.
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "bench", "ghz"))
from gen_data import field_bytes as ld, field_varint, varint  # noqa: E402


def key(field, wire):
    return varint(field << 3 | wire)


def tensor(shape, values, kind="f32"):
    """A Tensor with values in field f32, f64, f32_le or f64_le."""
    msg = ld(1, b"".join(varint(d) for d in shape))
    if not values:
        return msg
    fmt = "f" if kind.startswith("f32") else "d"
    raw = struct.pack("<%d%s" % (len(values), fmt), *values)
    field = {"f32": 2, "f64": 3, "f32_le": 4, "f64_le": 5}[kind]
    return msg + ld(field, raw)


def temperature(field, t):
    return key(field, 5) + struct.pack("<f", t)


def flag(field):
    return field_varint(field, 1)


def logits(n, offset=0.0):
    return [((i * 2654435761) % 8192) / 1024.0 - 4.0 + offset for i in range(n)]


def probs(n, k):
    return [1.0 / k] * n


NEG_INF = -math.inf

SEEDS = {
    "forward": {
        "f32-typed": ld(1, tensor([2, 3], logits(6))),
        "f64-raw-log-t": ld(1, tensor([4], logits(4), "f64_le")) + temperature(2, 0.5) + flag(3),
        "f32-raw-masked": ld(1, tensor([2, 5], logits(5) + [NEG_INF] * 5, "f32_le")),
        "empty-batch": ld(1, tensor([0, 3], [])),
        "f64-typed-3d": ld(1, tensor([2, 2, 2], logits(8, 1e4), "f64")),
        "pool-path": ld(1, tensor([4, 100], logits(400), "f32_le")),
        "nan": ld(1, tensor([2], [0.0, math.nan])),
    },
    "backward": {
        "output-f32": ld(1, tensor([2, 3], probs(6, 3))) + ld(3, tensor([2, 3], logits(6))),
        "logits-f64-raw-log": ld(2, tensor([3, 4], logits(12), "f64_le"))
        + ld(3, tensor([3, 4], logits(12, 1.0), "f64_le"))
        + temperature(4, 2.0)
        + flag(5),
        "logits-masked": ld(2, tensor([1, 4], [0.0, NEG_INF, 1.0, 2.0]))
        + ld(3, tensor([1, 4], [1.0, 1.0, 1.0, 1.0])),
        "mismatch": ld(1, tensor([2, 3], probs(6, 3))) + ld(3, tensor([3, 2], logits(6))),
    },
    "jacobian": {
        "logits-f32": ld(1, tensor([3, 4], logits(12))),
        "output-f64-raw-log": ld(2, tensor([2, 3], probs(6, 3), "f64_le")) + flag(4),
        "empty-batch": ld(1, tensor([0, 5], [])),
        "masked-t": ld(1, tensor([2, 3], [NEG_INF] * 3 + [1.0, 2.0, 3.0], "f32_le"))
        + temperature(3, 0.25),
    },
    "cross_entropy": {
        "labels-f32": ld(1, tensor([3, 4], logits(12))) + ld(2, b"".join(varint(c) for c in [0, 3, 1])),
        "target-f64-raw": ld(1, tensor([2, 3], logits(6), "f64_le"))
        + ld(3, tensor([2, 3], probs(6, 3), "f64_le"))
        + temperature(4, 1.5),
        "masked-label": ld(1, tensor([2], [NEG_INF, 0.0])) + ld(2, varint(0)),
        "label-out-of-range": ld(1, tensor([1, 2], [0.0, 1.0])) + ld(2, varint(7)),
    },
}
# JacobianStream takes JacobianRequest: the same seeds, plus one that spans
# several messages (the fuzzed service streams 4 KiB messages).
SEEDS["jacobian_stream"] = dict(SEEDS["jacobian"])
SEEDS["jacobian_stream"]["several-messages"] = ld(1, tensor([10, 16], logits(160), "f32_le"))


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "corpus")
    for target, seeds in SEEDS.items():
        d = os.path.join(root, target)
        os.makedirs(d, exist_ok=True)
        for name, body in seeds.items():
            with open(os.path.join(d, "seed-" + name), "wb") as f:
                f.write(body)
        print("%s: %d seeds in %s" % (target, len(seeds), d))


if __name__ == "__main__":
    main()
