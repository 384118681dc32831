'use strict';
/** Conversion between `{ data, shape }` typed arrays and softmax.v1.Tensor messages. */
const os = require('node:os');

// The raw fields are little-endian; typed-array views use the host's order.
const LITTLE_ENDIAN = os.endianness() === 'LE';

function isTensorLike(t) {
  return t !== null && typeof t === 'object' && (t.data instanceof Float32Array || t.data instanceof Float64Array);
}

function rowsOf(shape) {
  return shape.slice(0, -1).reduce((a, b) => a * b, 1);
}

/**
 * A Tensor message for `t`. Float32Array is sent as f32, Float64Array (or a plain
 * array of numbers) as f64. Raw encoding views the array's memory, no copy.
 */
function encodeTensor(t, name, raw) {
  let data = t?.data;
  if (Array.isArray(data)) data = Float64Array.from(data);
  if (!(data instanceof Float32Array || data instanceof Float64Array)) {
    throw new TypeError(`${name}: expected { data: Float32Array | Float64Array, shape }`);
  }
  const shape = t.shape ?? [data.length];
  if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < 0 || d > 0xffffffff)) {
    throw new TypeError(`${name}: shape must be an array of integers in [0, 2^32)`);
  }
  const f32 = data instanceof Float32Array;
  const msg = { shape };
  if (data.length === 0) return msg;
  if (!raw) {
    msg[f32 ? 'f32' : 'f64'] = Array.from(data);
  } else if (LITTLE_ENDIAN) {
    msg[f32 ? 'f32_le' : 'f64_le'] = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  } else {
    const buf = Buffer.alloc(data.byteLength);
    data.forEach((v, i) => (f32 ? buf.writeFloatLE(v, i * 4) : buf.writeDoubleLE(v, i * 8)));
    msg[f32 ? 'f32_le' : 'f64_le'] = buf;
  }
  return msg;
}

function fromBytes(buf, Type) {
  const size = Type.BYTES_PER_ELEMENT;
  if (buf.length % size) throw new Error(`response tensor: ${buf.length} bytes is not whole values`);
  if (LITTLE_ENDIAN && buf.byteOffset % size === 0) {
    // In place: a view of the received message.
    return new Type(buf.buffer, buf.byteOffset, buf.length / size);
  }
  const out = new Type(buf.length / size);
  for (let i = 0; i < out.length; i++) out[i] = size === 4 ? buf.readFloatLE(i * 4) : buf.readDoubleLE(i * 8);
  return out;
}

/**
 * `{ data, shape }` of a response Tensor. `like` (the request's primary tensor)
 * decides the array type of an empty result, and `emptyShape` its shape.
 */
function decodeTensor(msg, like, emptyShape) {
  const Type = like?.data instanceof Float32Array ? Float32Array : Float64Array;
  if (!msg) return { data: new Type(0), shape: emptyShape };
  const shape = (msg.shape ?? []).map(Number);
  let data;
  if (msg.f32_le?.length) data = fromBytes(msg.f32_le, Float32Array);
  else if (msg.f64_le?.length) data = fromBytes(msg.f64_le, Float64Array);
  else if (msg.f32?.length) data = Float32Array.from(msg.f32);
  else if (msg.f64?.length) data = Float64Array.from(msg.f64);
  else data = new Type(0);
  const count = shape.reduce((a, b) => a * b, 1);
  if (data.length !== count) {
    throw new Error(`response tensor of shape [${shape}] holds ${data.length} values`);
  }
  return { data, shape };
}

module.exports = { encodeTensor, decodeTensor, isTensorLike, rowsOf };
