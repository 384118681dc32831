'use strict';
/** The shared vectors through the Node client, with both encodings. */
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Client, SoftmaxError, status } = require('..');
const { startServer } = require('./server');
const { loadCases, run, check } = require('./vectors');

const RESULTS = ['forward', 'backward', 'jacobian', 'cross_entropy', 'forward_stream'].flatMap(loadCases);
const ERRORS = loadCases('errors');

let server;
const clients = {};
before(async () => {
  server = await startServer();
  clients.raw = new Client(server.addr, { timeout: 120 });
  clients.typed = new Client(server.addr, { timeout: 120, encoding: 'typed' });
});
after(async () => {
  Object.values(clients).forEach((c) => c.close());
  await server.stop();
});

for (const encoding of ['raw', 'typed']) {
  describe(`vectors (${encoding})`, () => {
    for (const { c, dtype, tol } of RESULTS) {
      it(`${c.name} ${dtype}`, async () => check(await run(clients[encoding], c, dtype), c, dtype, tol));
    }
  });
}

describe('error vectors', () => {
  for (const { c, dtype } of ERRORS) {
    it(`${c.name} ${dtype}`, async () => {
      await assert.rejects(run(clients.raw, c, dtype), (err) => {
        assert.ok(err instanceof SoftmaxError, `not a SoftmaxError: ${err}`);
        assert.equal(err.code, status[c.error], err.message);
        assert.equal(err.codeName, c.error);
        for (const word of c.message_contains ?? []) assert.ok(err.details.includes(word), `${word} not in ${err.details}`);
        return true;
      });
    });
  }
});
