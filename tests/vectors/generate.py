#!/usr/bin/env python3
"""Writes the shared client test vectors (tests/vectors/*.json).

Every expected value is computed here in float64 with numpy straight from the
formulas of the design notes, independently of the server's kernel. Inputs are
rounded to float32 first, so one case serves both dtypes with identical inputs.

Run from anywhere: `python3 tests/vectors/generate.py [OUT_DIR]` (needs numpy
only; OUT_DIR defaults to this directory). The output is deterministic (fixed
seed), and the Python client suite checks that the committed files match it.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RNG = np.random.default_rng(20261128)
BOTH = ["f32", "f64"]


def f32(a):
    """Rounds to float32 and back, so the value is exact in both dtypes."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def enc(v):
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def tensor(a, dtype=None):
    a = np.asarray(a, dtype=np.float64)
    t = {"shape": list(a.shape), "values": [enc(v) for v in a.reshape(-1)]}
    if dtype:
        t["dtype"] = dtype
    return t


def logits(*shape, scale=3.0, offset=0.0):
    return f32(RNG.standard_normal(shape) * scale + offset)


def softmax(x, t=1.0):
    """Safe softmax over the last axis: -inf masks, all -inf gives zeros."""
    z = np.asarray(x, dtype=np.float64) / t
    m = np.max(z, axis=-1, keepdims=True)
    m = np.where(np.isneginf(m), 0.0, m)
    e = np.exp(z - m)
    total = e.sum(axis=-1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def log_softmax(x, t=1.0):
    z = np.asarray(x, dtype=np.float64) / t
    m = np.max(z, axis=-1, keepdims=True)
    m = np.where(np.isneginf(m), 0.0, m)
    total = np.exp(z - m).sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        # A fully masked vector has log-probabilities -inf throughout.
        return np.where(total > 0, z - m - np.log(total), -np.inf)


def backward(s, g, t=1.0, log=False):
    if log:
        return (g - s * g.sum(axis=-1, keepdims=True)) / t
    return s * (g - (g * s).sum(axis=-1, keepdims=True)) / t


def jacobian(s, t=1.0, log=False):
    k = s.shape[-1]
    eye = np.eye(k)
    if log:
        return (eye - s[..., None, :]) / t
    return (s[..., :, None] * eye - s[..., :, None] * s[..., None, :]) / t


def cross_entropy(x, y, t=1.0):
    with np.errstate(invalid="ignore"):
        # 0 * -inf (a masked entry that the target does not want) counts as 0.
        terms = np.where(y > 0, y * log_softmax(x, t), 0.0)
    loss = -terms.sum(axis=-1)
    grad = (softmax(x, t) * y.sum(axis=-1, keepdims=True) - y) / t
    return loss, grad


def one_hot(labels, k):
    return np.eye(k)[np.asarray(labels)]


def case(name, rpc, inputs, expect=None, *, temperature=None, log=False,
         dtypes=BOTH, error=None, message_contains=None, stream=None):
    c = {"name": name, "rpc": rpc, "dtypes": dtypes, "inputs": inputs}
    if temperature is not None:
        c["temperature"] = enc(temperature)
    if log:
        c["log"] = True
    if stream is not None:
        c["stream"] = stream
    if error:
        c["error"] = error
        if message_contains:
            c["message_contains"] = message_contains
    else:
        c["expect"] = expect
    return c


def forward_cases():
    out = []
    for shape in [(5,), (3, 4), (2, 3, 6), (1, 1), (1, 1000)]:
        for t in [None, 0.5, 2.0]:
            for log in [False, True]:
                x = logits(*shape)
                fn = log_softmax if log else softmax
                name = f"forward_{'x'.join(map(str, shape))}_T{t}_{'log' if log else 'probs'}"
                out.append(case(name, "forward", {"logits": tensor(x)},
                                {"output": tensor(fn(x, t or 1.0))}, temperature=t, log=log))
    # Large offsets: subtracting the max keeps exp from overflowing.
    for off in [1e4, -1e4]:
        x = logits(2, 7, offset=off)
        out.append(case(f"forward_offset_{off:+g}", "forward", {"logits": tensor(x)},
                        {"output": tensor(softmax(x))}))
        out.append(case(f"forward_offset_{off:+g}_log", "forward", {"logits": tensor(x)},
                        {"output": tensor(log_softmax(x))}, log=True))
    x = f32([[1234.0, 0.0]])
    out.append(case("forward_extreme_gap", "forward", {"logits": tensor(x)},
                    {"output": tensor([[1.0, 0.0]])}))
    masked = f32([[0.5, -np.inf, 1.5, -np.inf], [-np.inf] * 4, [2.0, 1.0, 0.0, -1.0]])
    out.append(case("forward_masks", "forward", {"logits": tensor(masked)},
                    {"output": tensor(softmax(masked))}))
    out.append(case("forward_masks_log", "forward", {"logits": tensor(masked)},
                    {"output": tensor(log_softmax(masked))}, log=True))
    out.append(case("forward_empty_batch", "forward", {"logits": tensor(np.zeros((0, 5)))},
                    {"output": tensor(np.zeros((0, 5)))}))
    out.append(case("forward_k1", "forward", {"logits": tensor(f32([[3.0], [-7.0]]))},
                    {"output": tensor([[1.0], [1.0]])}))
    return out


def backward_cases():
    out = []
    for shape in [(6,), (3, 5), (2, 2, 4)]:
        for t in [None, 2.0]:
            for log in [False, True]:
                x = logits(*shape)
                g = f32(RNG.standard_normal(shape))
                tt = t or 1.0
                s = softmax(x, tt)
                exp = backward(s, g, tt, log)
                tag = f"{'x'.join(map(str, shape))}_T{t}_{'log' if log else 'probs'}"
                out.append(case(f"backward_logits_{tag}", "backward",
                                {"logits": tensor(x), "grad_output": tensor(g)},
                                {"grad_logits": tensor(exp)}, temperature=t, log=log))
                # From the Forward output, rounded to f32 like a real client's.
                so = f32(log_softmax(x, tt) if log else s)
                s_in = np.exp(so) if log else so
                out.append(case(f"backward_output_{tag}", "backward",
                                {"output": tensor(so), "grad_output": tensor(g)},
                                {"grad_logits": tensor(backward(s_in, g, tt, log))},
                                temperature=t, log=log))
    x = logits(2, 5)
    out.append(case("backward_uniform_grad_is_zero", "backward",
                    {"logits": tensor(x), "grad_output": tensor(np.full((2, 5), 0.75))},
                    {"grad_logits": tensor(np.zeros((2, 5)))}))
    masked = f32([[0.5, -np.inf, 1.5], [-np.inf] * 3])
    g = f32(RNG.standard_normal((2, 3)))
    out.append(case("backward_masks", "backward",
                    {"logits": tensor(masked), "grad_output": tensor(g)},
                    {"grad_logits": tensor(backward(softmax(masked), g))}))
    return out


def jacobian_cases():
    out = []
    for shape in [(4,), (3, 3), (2, 2, 5)]:
        for t in [None, 0.5]:
            for log in [False, True]:
                x = logits(*shape)
                tt = t or 1.0
                s = softmax(x, tt)
                tag = f"{'x'.join(map(str, shape))}_T{t}_{'log' if log else 'probs'}"
                exp = tensor(jacobian(s, tt, log))
                for rpc in ["jacobian", "jacobian_stream"]:
                    out.append(case(f"{rpc}_logits_{tag}", rpc, {"logits": tensor(x)},
                                    {"jacobian": exp}, temperature=t, log=log))
                so = f32(log_softmax(x, tt) if log else s)
                s_in = np.exp(so) if log else so
                out.append(case(f"jacobian_output_{tag}", "jacobian", {"output": tensor(so)},
                                {"jacobian": tensor(jacobian(s_in, tt, log))},
                                temperature=t, log=log))
    masked = f32([[0.5, -np.inf, 1.5], [-np.inf] * 3])
    out.append(case("jacobian_masks", "jacobian", {"logits": tensor(masked)},
                    {"jacobian": tensor(jacobian(softmax(masked)))}))
    # Many vectors, so a stream may split them over several messages.
    x = logits(40, 16)
    out.append(case("jacobian_stream_40x16", "jacobian_stream", {"logits": tensor(x)},
                    {"jacobian": tensor(jacobian(softmax(x)))}))
    return out


def cross_entropy_cases():
    out = []
    for shape in [(5,), (4, 3), (2, 3, 4)]:
        for t in [None, 2.0]:
            x = logits(*shape)
            tt = t or 1.0
            k = shape[-1]
            rows = int(np.prod(shape[:-1]))
            labels = RNG.integers(0, k, size=rows)
            loss, grad = cross_entropy(x, one_hot(labels, k).reshape(shape), tt)
            tag = f"{'x'.join(map(str, shape))}_T{t}"
            out.append(case(f"cross_entropy_labels_{tag}", "cross_entropy",
                            {"logits": tensor(x), "labels": [int(v) for v in labels]},
                            {"loss": tensor(loss), "grad_logits": tensor(grad)}, temperature=t))
            y = f32(RNG.dirichlet(np.ones(k), size=rows).reshape(shape))
            loss, grad = cross_entropy(x, y, tt)
            out.append(case(f"cross_entropy_target_{tag}", "cross_entropy",
                            {"logits": tensor(x), "target": tensor(y)},
                            {"loss": tensor(loss), "grad_logits": tensor(grad)}, temperature=t))
    # The gradient vanishes where softmax already equals the target.
    x = f32([[0.0, 1.0, 2.0]])
    y = f32(softmax(x))
    loss, grad = cross_entropy(x, y)
    out.append(case("cross_entropy_target_equals_softmax", "cross_entropy",
                    {"logits": tensor(x), "target": tensor(y)},
                    {"loss": tensor(loss), "grad_logits": tensor(grad)}))
    masked = f32([[0.5, -np.inf, 1.5, 0.0]])
    loss, grad = cross_entropy(masked, one_hot([2], 4))
    out.append(case("cross_entropy_masked_entry", "cross_entropy",
                    {"logits": tensor(masked), "labels": [2]},
                    {"loss": tensor(loss), "grad_logits": tensor(grad)}))
    return out


def forward_stream_cases():
    xs = [logits(3), logits(2, 4), logits(2, 2, 3), logits(1, 6)]
    out = [case("forward_stream_mixed_shapes", "forward_stream",
                {"messages": [tensor(x) for x in xs]},
                {"outputs": [tensor(softmax(x)) for x in xs]})]
    out.append(case("forward_stream_log_T2", "forward_stream",
                    {"messages": [tensor(x) for x in xs]},
                    {"outputs": [tensor(log_softmax(x, 2.0)) for x in xs]},
                    temperature=2.0, log=True))
    return out


def error_cases():
    bad = "INVALID_ARGUMENT"
    x = logits(2, 3)
    g = f32(RNG.standard_normal((2, 3)))
    nan_x = x.copy()
    nan_x[1, 2] = np.nan
    inf_x = x.copy()
    inf_x[0, 1] = np.inf
    out = [
        case("error_forward_nan_logits", "forward", {"logits": tensor(nan_x)},
             error=bad, message_contains=["logits", "5"]),
        case("error_forward_pos_inf_logits", "forward", {"logits": tensor(inf_x)},
             error=bad, message_contains=["logits", "1"]),
        case("error_forward_temperature_zero", "forward", {"logits": tensor(x)},
             temperature=0.0, error=bad, message_contains=["temperature"]),
        case("error_forward_temperature_negative", "forward", {"logits": tensor(x)},
             temperature=-1.0, error=bad, message_contains=["temperature"]),
        case("error_forward_temperature_nan", "forward", {"logits": tensor(x)},
             temperature=float("nan"), error=bad, message_contains=["temperature"]),
        case("error_forward_temperature_inf", "forward", {"logits": tensor(x)},
             temperature=float("inf"), error=bad, message_contains=["temperature"]),
        case("error_forward_scalar_shape", "forward", {"logits": tensor(np.float64(1.0))},
             error=bad, message_contains=["logits"]),
        case("error_forward_k0", "forward", {"logits": tensor(np.zeros((2, 0)))},
             error=bad, message_contains=["logits"]),
        case("error_backward_shape_mismatch", "backward",
             {"logits": tensor(x), "grad_output": tensor(logits(3, 2))},
             error=bad, message_contains=["grad_output"]),
        case("error_backward_dtype_mismatch", "backward",
             {"logits": tensor(x), "grad_output": tensor(g, dtype="f64")},
             dtypes=["f32"], error=bad, message_contains=["grad_output"]),
        case("error_backward_nan_grad", "backward",
             {"logits": tensor(x), "grad_output": tensor(np.where(g > 0, np.nan, g))},
             error=bad, message_contains=["grad_output"]),
        case("error_backward_both_sources", "backward",
             {"logits": tensor(x), "output": tensor(softmax(x)), "grad_output": tensor(g)},
             error=bad),
        case("error_backward_no_source", "backward", {"grad_output": tensor(g)}, error=bad),
        case("error_jacobian_nan_logits", "jacobian", {"logits": tensor(nan_x)},
             error=bad, message_contains=["logits"]),
        case("error_jacobian_stream_nan_logits", "jacobian_stream", {"logits": tensor(nan_x)},
             error=bad, message_contains=["logits"]),
        case("error_jacobian_nan_output", "jacobian",
             {"output": tensor(np.where(x > 0, np.nan, softmax(x)))},
             error=bad, message_contains=["output"]),
        # 4200² f32 values are 70.6 MB: over the default 64 MiB message limit.
        case("error_jacobian_unary_too_large", "jacobian",
             {"logits": {"shape": [1, 4200], "fill": 0.0}}, stream=False,
             error="RESOURCE_EXHAUSTED", message_contains=["JacobianStream"]),
        case("error_cross_entropy_label_out_of_range", "cross_entropy",
             {"logits": tensor(x), "labels": [0, 3]}, error=bad, message_contains=["labels"]),
        case("error_cross_entropy_label_count", "cross_entropy",
             {"logits": tensor(x), "labels": [0, 1, 2]}, error=bad, message_contains=["labels"]),
        case("error_cross_entropy_negative_target", "cross_entropy",
             {"logits": tensor(x), "target": tensor([[0.5, 0.5, 0.0], [1.5, -0.5, 0.0]])},
             error=bad, message_contains=["target"]),
        case("error_cross_entropy_both_targets", "cross_entropy",
             {"logits": tensor(x), "labels": [0, 1],
              "target": tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])}, error=bad),
        case("error_forward_stream_bad_message", "forward_stream",
             {"messages": [tensor(x), tensor(nan_x)]}, error=bad, message_contains=["logits"]),
    ]
    return out


def write(out_dir, name, cases):
    head = {
        "about": "Generated by tests/vectors/generate.py; expected values in float64.",
        "tolerance": {"f32": {"atol": 2e-6, "rtol": 1e-5}, "f64": {"atol": 1e-12, "rtol": 1e-12}},
    }
    # One case per line: small diffs, and still plain JSON for every parser.
    lines = [json.dumps(c, allow_nan=False, separators=(",", ":")) for c in cases]
    body = json.dumps(head, allow_nan=False)[:-1] + ',\n "cases": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n"
    json.loads(body)
    (out_dir / f"{name}.json").write_text(body)


def main(out_dir=HERE):
    out_dir = Path(out_dir)
    write(out_dir, "forward", forward_cases())
    write(out_dir, "backward", backward_cases())
    write(out_dir, "jacobian", jacobian_cases())
    write(out_dir, "cross_entropy", cross_entropy_cases())
    write(out_dir, "forward_stream", forward_stream_cases())
    write(out_dir, "errors", error_cases())


if __name__ == "__main__":
    main(*sys.argv[1:])
