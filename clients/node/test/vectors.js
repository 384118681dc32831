'use strict';
/** Reads the shared test vectors (tests/vectors/*.json) and runs a case through the client. */
const fs = require('node:fs');
const path = require('node:path');
const assert = require('node:assert/strict');
const { REPO } = require('./server');

const TYPES = { f32: Float32Array, f64: Float64Array };
const num = (v) => (typeof v === 'string' ? Number(v.replace('inf', 'Infinity').replace('nan', 'NaN')) : v);

function loadCases(name) {
  const doc = JSON.parse(fs.readFileSync(path.join(REPO, 'tests', 'vectors', `${name}.json`), 'utf8'));
  return doc.cases.flatMap((c) => c.dtypes.map((dtype) => ({ c, dtype, tol: doc.tolerance[dtype] })));
}

function tensor(t, dtype) {
  const Type = TYPES[t.dtype ?? dtype];
  const count = t.shape.reduce((a, b) => a * b, 1);
  const data = 'fill' in t ? new Type(count).fill(t.fill) : Type.from(t.values.map(num));
  return { data, shape: t.shape };
}

async function run(client, c, dtype) {
  const ins = c.inputs;
  const t = (name) => (ins[name] ? tensor(ins[name], dtype) : undefined);
  const opts = { temperature: c.temperature === undefined ? undefined : num(c.temperature), log: !!c.log };
  switch (c.rpc) {
    case 'forward':
      return { output: await client.forward(t('logits'), opts) };
    case 'backward':
      return { grad_logits: await client.backward({ output: t('output'), logits: t('logits'), gradOutput: t('grad_output') }, opts) };
    case 'jacobian':
    case 'jacobian_stream': {
      const stream = c.stream ?? c.rpc === 'jacobian_stream';
      return { jacobian: await client.jacobian({ logits: t('logits'), output: t('output') }, { ...opts, stream }) };
    }
    case 'cross_entropy': {
      const res = await client.crossEntropy({ logits: t('logits'), labels: ins.labels, target: t('target') }, opts);
      return { loss: res.loss, grad_logits: res.gradLogits };
    }
    case 'forward_stream': {
      const outputs = [];
      for await (const o of client.forwardStream(ins.messages.map((m) => tensor(m, dtype)), opts)) outputs.push(o);
      return { outputs };
    }
    default:
      throw new Error(`unknown rpc ${c.rpc}`);
  }
}

function assertClose(got, want, tol, dtype, what) {
  assert.ok(got.data instanceof TYPES[dtype], `${what}: array type ${got.data?.constructor?.name}`);
  assert.deepEqual(got.shape, want.shape, `${what}: shape`);
  assert.equal(got.data.length, want.data.length, `${what}: length`);
  for (let i = 0; i < want.data.length; i++) {
    const g = got.data[i];
    const w = want.data[i];
    if (!Number.isFinite(w)) {
      assert.equal(g, w, `${what}[${i}]: ${g} != ${w}`);
      continue;
    }
    const bound = tol.atol + tol.rtol * Math.abs(w);
    assert.ok(Math.abs(g - w) <= bound, `${what}[${i}]: |${g} - ${w}| > ${bound}`);
  }
}

function check(got, c, dtype, tol) {
  for (const [name, w] of Object.entries(c.expect)) {
    if (name === 'outputs') {
      assert.equal(got.outputs.length, w.length);
      w.forEach((ww, i) => assertClose(got.outputs[i], tensor(ww, 'f64'), tol, dtype, `${c.name} message ${i}`));
    } else {
      assertClose(got[name], tensor(w, 'f64'), tol, dtype, `${c.name} ${name}`);
    }
  }
}

module.exports = { loadCases, run, check, tensor };
