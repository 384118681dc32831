"""Runs one shared test-vector case through a client (sync or async)."""

import numpy as np

from conftest import array, temperature


def _inputs(case, dtype):
    ins = case["inputs"]
    return {k: (v if k == "labels" else array(v, dtype)) for k, v in ins.items() if k != "messages"}


def run(client, case, dtype):
    """The case's outputs as {name: array} (raises SoftmaxError on a server error)."""
    ins = _inputs(case, dtype)
    t, log = temperature(case), case.get("log", False)
    rpc = case["rpc"]
    if rpc == "forward":
        return {"output": client.forward(ins["logits"], temperature=t, log=log)}
    if rpc == "backward":
        return {"grad_logits": client.backward(temperature=t, log=log, **ins)}
    if rpc in ("jacobian", "jacobian_stream"):
        stream = case.get("stream", rpc == "jacobian_stream")
        return {"jacobian": client.jacobian(temperature=t, log=log, stream=stream, **ins)}
    if rpc == "cross_entropy":
        res = client.cross_entropy(temperature=t, **ins)
        return {"loss": res.loss, "grad_logits": res.grad_logits}
    if rpc == "forward_stream":
        msgs = [array(m, dtype) for m in case["inputs"]["messages"]]
        return {"outputs": list(client.forward_stream(msgs, temperature=t, log=log))}
    raise AssertionError(f"unknown rpc {rpc}")


async def run_async(client, case, dtype):
    ins = _inputs(case, dtype)
    t, log = temperature(case), case.get("log", False)
    rpc = case["rpc"]
    if rpc == "forward":
        return {"output": await client.forward(ins["logits"], temperature=t, log=log)}
    if rpc == "backward":
        return {"grad_logits": await client.backward(temperature=t, log=log, **ins)}
    if rpc in ("jacobian", "jacobian_stream"):
        stream = case.get("stream", rpc == "jacobian_stream")
        return {"jacobian": await client.jacobian(temperature=t, log=log, stream=stream, **ins)}
    if rpc == "cross_entropy":
        res = await client.cross_entropy(temperature=t, **ins)
        return {"loss": res.loss, "grad_logits": res.grad_logits}
    if rpc == "forward_stream":
        msgs = [array(m, dtype) for m in case["inputs"]["messages"]]
        return {"outputs": [o async for o in client.forward_stream(msgs, temperature=t, log=log)]}
    raise AssertionError(f"unknown rpc {rpc}")


def expected(case, dtype):
    exp = case["expect"]
    if "outputs" in exp:
        return {"outputs": [array(o, "f64") for o in exp["outputs"]]}
    return {k: array(v, "f64") for k, v in exp.items()}
