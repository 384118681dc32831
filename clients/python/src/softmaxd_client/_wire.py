"""Protobuf wire format of softmax.v1 messages, written and read around numpy buffers.

Requests are assembled with one `bytes.join`, so an array's memory is copied
once, straight into the message; responses are read in place with
`np.frombuffer` on the received bytes. Only the handful of fields that
softmax.v1 uses are handled; tests check every path byte for byte against the
protobuf module generated from the same proto.
"""

from __future__ import annotations

import struct
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

F32 = np.dtype("<f4")
F64 = np.dtype("<f8")
_LEN, _VARINT, _I64, _I32 = 2, 0, 1, 5

# Tensor value fields: (typed field, raw field) per dtype.
_TENSOR_FIELDS = {F32: (2, 4), F64: (3, 5)}
_FIELD_DTYPE = {2: F32, 4: F32, 3: F64, 5: F64}
_MAX_DIM = 2**32 - 1


def as_array(x, name: str) -> np.ndarray:
    """`x` as a C-contiguous little-endian float32/float64 array (copied only if needed).

    float32 stays float32; float64, integers and bools become float64.
    """
    a = np.asarray(x)
    if a.dtype.kind == "f" and a.dtype.itemsize == 4:
        dtype = F32
    elif a.dtype.kind in "biuf" and a.dtype.itemsize <= 8:
        dtype = F64
    else:
        raise TypeError(f"{name}: expected a float32 or float64 array, got dtype {a.dtype}")
    a = np.asarray(a, dtype=dtype, order="C")
    if any(d > _MAX_DIM for d in a.shape):
        raise ValueError(f"{name}: dimension larger than 2^32-1 in shape {a.shape}")
    return a


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _packed_varints(field: int, values: Iterable[int]) -> bytes:
    body = b"".join(_varint(int(v)) for v in values)
    return _key(field, _LEN) + _varint(len(body)) + body if body else b""


def _tensor_parts(a: np.ndarray, raw: bool) -> Tuple[int, List[object]]:
    """Encoded Tensor as parts (the array itself is one of them) and its length."""
    head = _packed_varints(1, a.shape)
    parts: List[object] = [head]
    if a.size:
        typed, raw_field = _TENSOR_FIELDS[a.dtype]
        # Packed repeated float/double is the same little-endian run of values
        # as the raw bytes fields: only the field number differs.
        data_head = _key(raw_field if raw else typed, _LEN) + _varint(a.nbytes)
        parts += [data_head, a]
        return len(head) + len(data_head) + a.nbytes, parts
    return len(head), parts


def encode(
    tensors: Mapping[int, Optional[np.ndarray]],
    *,
    raw: bool = True,
    temperature: Optional[Tuple[int, float]] = None,
    flag: Optional[Tuple[int, bool]] = None,
    labels: Optional[Tuple[int, Sequence[int]]] = None,
) -> bytes:
    """Serialises one request message, fields in ascending number like protobuf does."""
    fields: Dict[int, List[object]] = {}
    for number, a in tensors.items():
        if a is None:
            continue
        length, parts = _tensor_parts(a, raw)
        fields[number] = [_key(number, _LEN) + _varint(length), *parts]
    if temperature is not None and temperature[1] is not None:
        number, t = temperature
        fields[number] = [_key(number, _I32) + np.float32(t).astype(F32).tobytes()]
    if flag is not None and flag[1]:
        fields[flag[0]] = [_key(flag[0], _VARINT) + b"\x01"]
    if labels is not None and labels[1] is not None:
        fields[labels[0]] = [_packed_varints(labels[0], labels[1])]
    return b"".join(part for number in sorted(fields) for part in fields[number])


def _read_varint(buf: memoryview, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or oversized varint in response")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview, start: int, end: int):
    """Yields (field, wire type, value) where value is an int or a (start, end) span."""
    pos = start
    while pos < end:
        key, pos = _read_varint(buf, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire_type == _LEN:
            length, pos = _read_varint(buf, pos)
            value, pos = (pos, pos + length), pos + length
        elif wire_type == _I32:
            value, pos = (pos, pos + 4), pos + 4
        elif wire_type == _I64:
            value, pos = (pos, pos + 8), pos + 8
        else:
            raise ValueError(f"unsupported wire type {wire_type} in response")
        if pos > end:
            raise ValueError("truncated field in response")
        yield field, wire_type, value


def decode_fields(data: bytes) -> Dict[int, Tuple[int, object]]:
    """Top-level fields of a message (the last occurrence wins, as in protobuf)."""
    buf = memoryview(data)
    return {field: (wt, value) for field, wt, value in _fields(buf, 0, len(buf))}


def decode_tensor(data: bytes, span: Tuple[int, int], fallback: np.dtype) -> np.ndarray:
    """The Tensor at `span` of `data` as a read-only array viewing `data`.

    `fallback` is the dtype of an empty tensor, which carries no value field.
    """
    buf = memoryview(data)
    shape: List[int] = []
    values: Optional[np.ndarray] = None
    loose: Dict[int, List[float]] = {}
    for field, wt, value in _fields(buf, *span):
        if field == 1 and wt == _LEN:
            pos, end = value
            while pos < end:
                dim, pos = _read_varint(buf, pos)
                shape.append(dim)
        elif field == 1 and wt == _VARINT:
            shape.append(value)
        elif field in _FIELD_DTYPE and wt == _LEN:
            dtype = _FIELD_DTYPE[field]
            start, end = value
            if (end - start) % dtype.itemsize:
                raise ValueError(f"tensor field {field}: {end - start} bytes is not whole values")
            values = np.frombuffer(data, dtype, (end - start) // dtype.itemsize, start)
        elif field in (2, 3) and wt in (_I32, _I64):
            # Unpacked repeated values: legal protobuf, never sent by softmaxd.
            fmt = "<f" if field == 2 else "<d"
            loose.setdefault(field, []).append(struct.unpack(fmt, buf[value[0] : value[1]])[0])
    for field, items in loose.items():
        values = np.asarray(items, dtype=_FIELD_DTYPE[field])
    count = int(np.prod(shape, dtype=np.uint64)) if shape else 1
    if values is None:
        if count and shape:
            raise ValueError(f"response tensor of shape {shape} has no values")
        values = np.empty(0, fallback)
    if values.size != count:
        raise ValueError(f"response tensor of shape {shape} holds {values.size} values")
    return values.reshape(shape)
