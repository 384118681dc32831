import type { ChannelCredentials, status } from '@grpc/grpc-js';

export type FloatArray = Float32Array | Float64Array;
/** Row-major values and their shape; the last dimension is the softmax axis. */
export interface Tensor<T extends FloatArray = FloatArray> {
  data: T;
  shape?: number[];
}
export interface Result<T extends FloatArray = FloatArray> {
  data: T;
  shape: number[];
}
export interface ClientOptions {
  tls?: boolean | Buffer | ChannelCredentials;
  token?: string;
  /** Deadline of each call, in seconds. */
  timeout?: number;
  encoding?: 'raw' | 'typed';
  maxMessageBytes?: number;
  channelOptions?: Record<string, unknown>;
}
export interface CallOptions {
  temperature?: number;
  log?: boolean;
}
/** The default service config: retries on UNAVAILABLE, 5 tries, 0.1 s doubling to 1 s. */
export declare const SERVICE_CONFIG: string;
export declare class SoftmaxError extends Error {
  code: number;
  codeName: string;
  details: string;
}
export declare class Client {
  constructor(addr: string, opts?: ClientOptions);
  close(): void;
  waitReady(seconds?: number): Promise<void>;
  forward(logits: Tensor, opts?: CallOptions): Promise<Result>;
  backward(t: { output?: Tensor; logits?: Tensor; gradOutput: Tensor }, opts?: CallOptions): Promise<Result>;
  jacobian(t: { logits?: Tensor; output?: Tensor }, opts?: CallOptions & { stream?: boolean }): Promise<Result>;
  jacobianStream(
    t: { logits?: Tensor; output?: Tensor },
    opts?: CallOptions,
  ): AsyncGenerator<{ firstRow: number; jacobian: Result }>;
  crossEntropy(
    t: { logits: Tensor; labels?: ArrayLike<number>; target?: Tensor },
    opts?: { temperature?: number },
  ): Promise<{ loss: Result; gradLogits: Result }>;
  forwardStream(tensors: Iterable<Tensor> | AsyncIterable<Tensor>, opts?: CallOptions): AsyncGenerator<Result>;
}
export declare function isTensorLike(t: unknown): t is Tensor;
export { status };
