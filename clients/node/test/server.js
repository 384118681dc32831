'use strict';
/**
 * The softmaxd under test: SOFTMAX_ADDR when set, else the release binary
 * (SOFTMAXD_BIN, or target/release/softmaxd of the repo) on a free loopback port.
 */
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { Client } = require('..');

const REPO = path.resolve(__dirname, '..', '..', '..');

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Starts the binary on `addr`; resolves to { stop(), kill() } once it answers. */
async function spawnServer(addr) {
  const bin = process.env.SOFTMAXD_BIN ?? path.join(REPO, 'target', 'release', 'softmaxd');
  if (!fs.existsSync(bin)) throw new Error(`${bin} not found: run cargo build --release or set SOFTMAX_ADDR`);
  const child = spawn(bin, ['--listen', addr, '--metrics-listen', ''], { stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const probe = new Client(addr);
  try {
    await Promise.race([
      probe.waitReady(30),
      exited.then((code) => Promise.reject(new Error(`softmaxd exited with ${code}`))),
    ]);
  } finally {
    probe.close();
  }
  const signal = async (name) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(name);
    await exited;
  };
  return { stop: () => signal('SIGTERM'), kill: () => signal('SIGKILL') };
}

/** Resolves to { addr, stop() }. */
async function startServer() {
  if (process.env.SOFTMAX_ADDR) return { addr: process.env.SOFTMAX_ADDR, stop: async () => {} };
  const addr = `127.0.0.1:${await freePort()}`;
  const { stop } = await spawnServer(addr);
  return { addr, stop };
}

module.exports = { startServer, spawnServer, freePort, REPO };
