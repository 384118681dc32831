'use strict';
/**
 * Promise-based client for softmaxd. Tensors are `{ data, shape }` with `data`
 * a Float32Array or Float64Array in row-major order; results come back the
 * same way, in the dtype of the request's primary tensor.
 */
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { encodeTensor, decodeTensor, isTensorLike, rowsOf } = require('./tensor');

const PROTO = path.join(__dirname, '..', 'proto', 'softmax', 'v1', 'softmax.proto');
const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/**
 * Calls refused with UNAVAILABLE (server unreachable, restarting or draining)
 * are tried again: every softmaxd RPC is a pure function of its request, so a
 * retry is safe. gRPC retries a call only until its first response, so streams
 * are never retried midway; other codes are not retried (a retry on
 * RESOURCE_EXHAUSTED would add to an overload). The Rust and Python clients
 * use the same policy. Replace it with `channelOptions['grpc.service_config']`,
 * or turn retries off with `'grpc.enable_retries': 0`.
 */
const SERVICE_CONFIG = JSON.stringify({
  methodConfig: [
    {
      name: [{ service: 'softmax.v1.SoftmaxService' }],
      retryPolicy: {
        maxAttempts: 5,
        initialBackoff: '0.1s',
        maxBackoff: '1s',
        backoffMultiplier: 2,
        retryableStatusCodes: ['UNAVAILABLE'],
      },
    },
  ],
});

const definition = protoLoader.loadSync(PROTO, {
  includeDirs: [path.join(__dirname, '..', 'proto')],
  keepCase: true,
  longs: Number,
  defaults: false,
  oneofs: false,
});
const ServiceClient = grpc.loadPackageDefinition(definition).softmax.v1.SoftmaxService;

/** A call that softmaxd (or the transport) answered with a non-OK status. */
class SoftmaxError extends Error {
  constructor(code, details) {
    super(`${grpc.status[code] ?? code}: ${details}`);
    this.name = 'SoftmaxError';
    /** Numeric gRPC status code (compare with `grpc.status.INVALID_ARGUMENT`). */
    this.code = code;
    /** Name of the code, e.g. "INVALID_ARGUMENT". */
    this.codeName = grpc.status[code] ?? String(code);
    this.details = details;
  }

  static from(err) {
    if (err instanceof SoftmaxError) return err;
    const code = typeof err?.code === 'number' ? err.code : grpc.status.UNKNOWN;
    return new SoftmaxError(code, err?.details ?? err?.message ?? String(err));
  }
}

function credentials(tls) {
  if (!tls) return grpc.credentials.createInsecure();
  if (tls === true) return grpc.credentials.createSsl();
  if (Buffer.isBuffer(tls)) return grpc.credentials.createSsl(tls);
  return tls; // already a grpc.ChannelCredentials
}

class Client {
  /**
   * @param {string} addr host:port of a softmaxd
   * @param {object} [opts]
   * @param {boolean|Buffer|grpc.ChannelCredentials} [opts.tls] false: plaintext; true: system roots; Buffer: PEM roots
   * @param {string} [opts.token] bearer token sent with every call
   * @param {number} [opts.timeout] deadline of each call, in seconds
   * @param {'raw'|'typed'} [opts.encoding] raw little-endian bytes (default) or typed repeated fields
   * @param {number} [opts.maxMessageBytes] the server's message limit; larger Jacobians are streamed
   */
  constructor(addr, opts = {}) {
    const { tls = false, token, timeout, encoding = 'raw', maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES } = opts;
    if (encoding !== 'raw' && encoding !== 'typed') throw new TypeError("encoding must be 'raw' or 'typed'");
    this.raw = encoding === 'raw';
    this.timeout = timeout;
    this.maxMessageBytes = maxMessageBytes;
    this.token = token;
    this.stub = new ServiceClient(addr, credentials(tls), {
      // softmaxd enforces its own limit; the client must not cut below it.
      'grpc.max_send_message_length': -1,
      'grpc.max_receive_message_length': -1,
      'grpc.enable_retries': 1,
      'grpc.service_config': SERVICE_CONFIG,
      // A call is retried only while its request fits in these buffers (1 MiB
      // per call, 16 MiB per channel by default): allow the message limit.
      'grpc.per_rpc_retry_buffer_size': DEFAULT_MAX_MESSAGE_BYTES,
      'grpc.retry_buffer_size': 4 * DEFAULT_MAX_MESSAGE_BYTES,
      ...(opts.channelOptions ?? {}),
    });
  }

  close() {
    this.stub.close();
  }

  /** Resolves once connected; rejects with SoftmaxError(UNAVAILABLE) after `seconds`. */
  waitReady(seconds = 10) {
    return new Promise((resolve, reject) => {
      this.stub.waitForReady(Date.now() + seconds * 1000, (err) =>
        err ? reject(new SoftmaxError(grpc.status.UNAVAILABLE, err.message)) : resolve(),
      );
    });
  }

  _callArgs() {
    const metadata = new grpc.Metadata();
    if (this.token) metadata.set('authorization', `Bearer ${this.token}`);
    const options = this.timeout ? { deadline: Date.now() + this.timeout * 1000 } : {};
    return [metadata, options];
  }

  _unary(method, request) {
    return new Promise((resolve, reject) => {
      this.stub[method](request, ...this._callArgs(), (err, res) =>
        err ? reject(SoftmaxError.from(err)) : resolve(res),
      );
    });
  }

  _tensor(t, name) {
    return t === undefined || t === null ? undefined : encodeTensor(t, name, this.raw);
  }

  /** softmax(logits / temperature) over the last axis; log-softmax with `log`. */
  async forward(logits, { temperature, log = false } = {}) {
    const req = { logits: this._tensor(logits, 'logits'), temperature, log };
    const res = await this._unary('Forward', req);
    return decodeTensor(res.output, logits, logits.shape);
  }

  /** Gradient with respect to the logits, from `output` (the Forward result) or `logits`. */
  async backward({ output, logits, gradOutput }, { temperature, log = false } = {}) {
    const req = {
      output: this._tensor(output, 'output'),
      logits: this._tensor(logits, 'logits'),
      grad_output: this._tensor(gradOutput, 'gradOutput'),
      temperature,
      log,
    };
    const res = await this._unary('Backward', req);
    return decodeTensor(res.grad_logits, output ?? logits ?? gradOutput, gradOutput.shape);
  }

  /**
   * J[..., i, j] = ds_i/dx_j with shape batch dims + [k, k]. Streams (JacobianStream)
   * when the result would not fit comfortably in one message, unless `stream` says otherwise.
   */
  async jacobian({ logits, output }, { temperature, log = false, stream } = {}) {
    const primary = logits ?? output;
    const shape = primary ? primary.shape ?? [primary.data.length] : [0];
    const k = shape.length ? shape[shape.length - 1] : 0;
    const rows = rowsOf(shape);
    const outShape = [...shape.slice(0, -1), k, k];
    const bytes = rows * k * k * (primary?.data instanceof Float32Array ? 4 : 8);
    const useStream = stream ?? bytes > this.maxMessageBytes / 2;
    const req = { logits: this._tensor(logits, 'logits'), output: this._tensor(output, 'output'), temperature, log };
    if (!useStream) {
      const res = await this._unary('Jacobian', req);
      return decodeTensor(res.jacobian, primary, outShape);
    }
    const Out = primary?.data instanceof Float32Array ? Float32Array : Float64Array;
    const data = new Out(rows * k * k);
    let received = 0;
    for await (const { firstRow, jacobian } of this._jacobianChunks(req, primary)) {
      const n = jacobian.shape[0] ?? 0;
      if (firstRow + n > rows || jacobian.data.length !== n * k * k) {
        throw new Error(`JacobianStream chunk at row ${firstRow} has shape [${jacobian.shape}]`);
      }
      data.set(jacobian.data, firstRow * k * k);
      received += n;
    }
    if (received !== rows) throw new Error(`JacobianStream sent ${received} of ${rows} vectors`);
    return { data, shape: outShape };
  }

  /** JacobianStream as it arrives: `{ firstRow, jacobian: { data, shape: [n, k, k] } }`. */
  jacobianStream({ logits, output }, { temperature, log = false } = {}) {
    const req = { logits: this._tensor(logits, 'logits'), output: this._tensor(output, 'output'), temperature, log };
    return this._jacobianChunks(req, logits ?? output);
  }

  async *_jacobianChunks(req, like) {
    const call = this.stub.JacobianStream(req, ...this._callArgs());
    try {
      for await (const msg of call) {
        yield { firstRow: Number(msg.first_row ?? 0), jacobian: decodeTensor(msg.jacobian, like, [0]) };
      }
    } catch (err) {
      throw SoftmaxError.from(err);
    } finally {
      call.cancel();
    }
  }

  /** Loss per vector (shape = batch dims) and its gradient, against `labels` or a `target`. */
  async crossEntropy({ logits, labels, target }, { temperature } = {}) {
    const req = {
      logits: this._tensor(logits, 'logits'),
      labels: labels ? Array.from(labels) : undefined,
      target: this._tensor(target, 'target'),
      temperature,
    };
    const res = await this._unary('CrossEntropy', req);
    const shape = logits.shape ?? [logits.data.length];
    return {
      loss: decodeTensor(res.loss, logits, shape.slice(0, -1)),
      gradLogits: decodeTensor(res.grad_logits, logits, shape),
    };
  }

  /**
   * Forward over one bidirectional stream: yields one output per input tensor, in order.
   * `tensors` may be an iterable or an async iterable.
   */
  async *forwardStream(tensors, { temperature, log = false } = {}) {
    const call = this.stub.ForwardStream(...this._callArgs());
    const pending = [];
    let writeError;
    const writer = (async () => {
      try {
        for await (const t of tensors) {
          pending.push(t);
          if (!call.write({ logits: this._tensor(t, 'logits'), temperature, log })) {
            await new Promise((resolve) => call.once('drain', resolve));
          }
        }
      } catch (err) {
        writeError = err;
        call.cancel();
      } finally {
        call.end();
      }
    })();
    try {
      for await (const msg of call) {
        const like = pending.shift();
        yield decodeTensor(msg.output, like, like.shape);
      }
    } catch (err) {
      if (writeError) throw writeError;
      throw SoftmaxError.from(err);
    } finally {
      await writer;
    }
    if (writeError) throw writeError;
  }
}

module.exports = { Client, SoftmaxError, SERVICE_CONFIG, status: grpc.status, isTensorLike };
