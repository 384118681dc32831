'use strict';
/**
 * Retries and reconnects: the default service config retries UNAVAILABLE (and
 * only that, a bounded number of times), and one client object keeps working
 * across a restart of the server on the same port.
 */
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const grpc = require('@grpc/grpc-js');
const { Client, SoftmaxError, status } = require('..');
const { spawnServer, freePort } = require('./server');

const identity = (b) => b;

/**
 * A stand-in server whose Forward refuses its first `fail` calls with `code`,
 * then echoes the request (ForwardRequest.logits and ForwardResponse.output
 * are both field 1, so the echo is a valid answer).
 */
async function flaky(fail, code) {
  const server = new grpc.Server();
  const state = { calls: 0 };
  const forward = {
    path: '/softmax.v1.SoftmaxService/Forward',
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  };
  server.addService({ Forward: forward }, {
    Forward(call, callback) {
      state.calls += 1;
      if (state.calls <= fail) callback({ code, details: 'refused by the test' });
      else callback(null, call.request);
    },
  });
  const port = await new Promise((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  state.addr = `127.0.0.1:${port}`;
  state.close = () => server.forceShutdown();
  return state;
}

const X = { data: Float32Array.of(1, 2, 3), shape: [1, 3] };

function softmaxF64(values) {
  const m = Math.max(...values);
  const e = Array.from(values, (v) => Math.exp(v - m));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

function assertSoftmax(got) {
  assert.deepEqual(got.shape, [1, 3]);
  softmaxF64(X.data).forEach((want, i) => assert.ok(Math.abs(got.data[i] - want) < 2e-7, `${got.data[i]} vs ${want}`));
}

/** Runs `body(client, server)` against a flaky server, then closes both. */
async function withFlaky(fail, code, channelOptions, body) {
  const server = await flaky(fail, code);
  const client = new Client(server.addr, { timeout: 30, channelOptions });
  try {
    await body(client, server);
  } finally {
    client.close();
    server.close();
  }
}

describe('retries', () => {
  it('retries UNAVAILABLE until the call succeeds', () =>
    withFlaky(2, status.UNAVAILABLE, {}, async (client, server) => {
      const got = await client.forward(X);
      assert.deepEqual(Array.from(got.data), [1, 2, 3]);
      assert.equal(server.calls, 3);
    }));

  for (const [name, code, tries] of [
    ['UNAVAILABLE', status.UNAVAILABLE, 5],
    // A retry on RESOURCE_EXHAUSTED would add to an overload.
    ['RESOURCE_EXHAUSTED', status.RESOURCE_EXHAUSTED, 1],
  ]) {
    it(`tries ${name} ${tries} time(s) at most`, () =>
      withFlaky(100, code, {}, async (client, server) => {
        await assert.rejects(client.forward(X), (e) => e instanceof SoftmaxError && e.code === code);
        assert.equal(server.calls, tries);
      }));
  }

  it('can be turned off', () =>
    withFlaky(1, status.UNAVAILABLE, { 'grpc.enable_retries': 0 }, async (client, server) => {
      await assert.rejects(client.forward(X), (e) => e.code === status.UNAVAILABLE);
      assert.equal(server.calls, 1);
    }));

  it('reconnects one client after the server restarts on the same port', async () => {
    const addr = `127.0.0.1:${await freePort()}`;
    let server = await spawnServer(addr);
    const client = new Client(addr, { timeout: 30 });
    try {
      assertSoftmax(await client.forward(X));
      await server.kill(); // no drain: connections reset
      server = await spawnServer(addr);
      assertSoftmax(await client.forward(X));
    } finally {
      client.close();
      await server.kill();
    }
  });
});
