'use strict';
/** What the vectors do not cover: large messages, streaming details, errors, identities. */
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { Client, SoftmaxError, status } = require('..');
const { startServer, REPO } = require('./server');

let server;
let client;
before(async () => {
  server = await startServer();
  client = new Client(server.addr, { timeout: 300 });
});
after(async () => {
  client.close();
  await server.stop();
});

function randomTensor(Type, shape, seed = 1) {
  let s = seed;
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Type(n);
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) % 2147483648;
    data[i] = (s / 2147483648) * 8 - 4;
  }
  return { data, shape };
}

function softmaxRow(x, k, off) {
  let m = -Infinity;
  for (let j = 0; j < k; j++) m = Math.max(m, x[off + j]);
  let sum = 0;
  for (let j = 0; j < k; j++) sum += Math.exp(x[off + j] - m);
  return Array.from({ length: k }, (_, j) => Math.exp(x[off + j] - m) / sum);
}

describe('node client', () => {
  it('ships the repo proto', () => {
    const bundled = fs.readFileSync(path.join(__dirname, '..', 'proto', 'softmax', 'v1', 'softmax.proto'));
    const root = fs.readFileSync(path.join(REPO, 'proto', 'softmax', 'v1', 'softmax.proto'));
    assert.ok(bundled.equals(root), 'clients/node/proto is stale: copy proto/softmax/v1/softmax.proto there');
  });

  it('forward of a 32 MiB f32 request (4096 x 2048)', async () => {
    const shape = [4096, 2048];
    const x = randomTensor(Float32Array, shape, 7);
    assert.ok(x.data.byteLength >= 32 * 1024 * 1024);
    const out = await client.forward(x);
    assert.deepEqual(out.shape, shape);
    assert.ok(out.data instanceof Float32Array);
    for (const row of [0, 1234, 4095]) {
      const want = softmaxRow(x.data, 2048, row * 2048);
      for (let j = 0; j < 2048; j++) {
        assert.ok(Math.abs(out.data[row * 2048 + j] - want[j]) <= 2e-6 + 1e-5 * want[j]);
      }
    }
  });

  it('jacobian streams transparently when the result is large', async () => {
    // 80 x 512 x 512 f64 = 160 MiB: over the 64 MiB message limit.
    const x = randomTensor(Float64Array, [80, 512], 3);
    await assert.rejects(client.jacobian({ logits: x }, { stream: false }), (err) => {
      assert.ok(err instanceof SoftmaxError);
      assert.equal(err.code, status.RESOURCE_EXHAUSTED);
      return true;
    });
    const j = await client.jacobian({ logits: x });
    assert.deepEqual(j.shape, [80, 512, 512]);
    for (const row of [0, 79]) {
      const s = softmaxRow(x.data, 512, row * 512);
      const base = row * 512 * 512;
      for (const [a, b] of [[0, 0], [3, 7], [511, 2]]) {
        const want = (a === b ? s[a] : 0) - s[a] * s[b];
        assert.ok(Math.abs(j.data[base + a * 512 + b] - want) < 1e-12);
      }
      // Columns of J sum to 0.
      let col = 0;
      for (let i = 0; i < 512; i++) col += j.data[base + i * 512 + 5];
      assert.ok(Math.abs(col) < 1e-12);
    }
  });

  it('jacobianStream yields consecutive chunks from first_row', async () => {
    const x = randomTensor(Float32Array, [64, 300], 5);
    let next = 0;
    let chunks = 0;
    for await (const { firstRow, jacobian } of client.jacobianStream({ logits: x })) {
      assert.equal(firstRow, next);
      assert.equal(jacobian.shape.length, 3);
      assert.deepEqual(jacobian.shape.slice(1), [300, 300]);
      assert.ok(jacobian.data instanceof Float32Array);
      next += jacobian.shape[0];
      chunks += 1;
    }
    assert.equal(next, 64);
    assert.ok(chunks >= 1);
  });

  it('forwardStream accepts an async iterable and keeps order', async () => {
    async function* gen() {
      for (let i = 1; i <= 20; i++) yield randomTensor(i % 2 ? Float32Array : Float64Array, [i, 3 + i], i);
    }
    let i = 0;
    for await (const out of client.forwardStream(gen(), { log: true })) {
      i += 1;
      assert.deepEqual(out.shape, [i, 3 + i]);
      assert.ok(out.data instanceof (i % 2 ? Float32Array : Float64Array));
    }
    assert.equal(i, 20);
  });

  it('a bad stream message rejects with its status after the good ones', async () => {
    const good = randomTensor(Float32Array, [2, 3]);
    const bad = { data: Float32Array.from([1, NaN, 0]), shape: [3] };
    const seen = [];
    await assert.rejects(
      (async () => {
        for await (const out of client.forwardStream([good, bad, good])) seen.push(out);
      })(),
      (err) => err instanceof SoftmaxError && err.code === status.INVALID_ARGUMENT,
    );
    assert.equal(seen.length, 1);
  });

  it('cross-entropy of 1-D logits has a scalar loss', async () => {
    const res = await client.crossEntropy({ logits: { data: Float64Array.from([0, 1, 2]) }, labels: [2] });
    assert.deepEqual(res.loss.shape, []);
    const s = softmaxRow([0, 1, 2], 3, 0);
    assert.ok(Math.abs(res.loss.data[0] + Math.log(s[2])) < 1e-12);
  });

  it('uniform upstream gradient gives a zero gradient', async () => {
    const x = randomTensor(Float64Array, [3, 2, 5], 9);
    const g = { data: new Float64Array(30).fill(0.3), shape: [3, 2, 5] };
    const out = await client.backward({ logits: x, gradOutput: g }, { temperature: 2 });
    assert.deepEqual(out.shape, [3, 2, 5]);
    for (const v of out.data) assert.ok(Math.abs(v) < 1e-15);
  });

  it('rejects unreachable servers with UNAVAILABLE', async () => {
    const dead = new Client('127.0.0.1:1', { timeout: 5 });
    await assert.rejects(dead.forward({ data: Float32Array.from([1, 2]) }), (err) => {
      assert.ok(err instanceof SoftmaxError);
      assert.equal(err.code, status.UNAVAILABLE);
      return true;
    });
    dead.close();
  });

  it('type errors are raised before sending', async () => {
    await assert.rejects(client.forward({ data: 'abc' }), TypeError);
    await assert.rejects(client.forward({ data: Float32Array.from([1]), shape: [-1] }), TypeError);
  });
});
