"""GGUF tensor data -> float32: ggml's block formats in NumPy, bit for bit as `gguf.quants`.

Each kernel fills a preallocated output a few thousand blocks at a time, so no temporary is
larger than a cache-sized chunk (`gguf.quants` builds whole-tensor temporaries). The float
operations are the ones `gguf.quants` does, in the same order. Types without a kernel here go
to `gguf.quants.dequantize`.
"""

from __future__ import annotations

import gguf
import numpy as np

Q = gguf.GGMLQuantizationType
_CHUNK_VALUES = 1 << 18  # values per chunk


def dequantize(data: np.ndarray, qtype: Q) -> np.ndarray:
  """Raw tensor bytes [..., bytes per row] (uint8) -> float32 values [..., values per row]."""
  if qtype == Q.F32:
    return data.view(np.float32)
  kernel = _KERNELS.get(qtype)
  if kernel is None:
    return gguf.quants.dequantize(data, qtype)
  block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
  blocks = data.reshape(-1, type_size)
  out = np.empty((blocks.shape[0], block_size), np.float32)
  step = max(1, _CHUNK_VALUES // block_size)
  for start in range(0, blocks.shape[0], step):
    kernel(blocks[start:start + step], out[start:start + step])
  return out.reshape(gguf.quants.quant_shape_from_byte_shape(data.shape, qtype))


def _half(b: np.ndarray, at: int) -> np.ndarray:
  """The float16 scale at byte `at` of each block, as float32 [n, 1]."""
  return b[:, at:at + 2].view(np.float16).astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
  """[n, k] packed bytes -> [n, 2k]: the k low nibbles, then the k high nibbles."""
  return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _bits(qh: np.ndarray) -> np.ndarray:
  """[n, 4] bytes (one little-endian uint32) -> its 32 bits, lowest first, [n, 32]."""
  return np.unpackbits(qh, axis=1, bitorder="little")


def _f16(b, out):
  out[:] = b.view(np.float16)


def _bf16(b, out):
  out.view(np.uint32)[:] = b.view(np.uint16).astype(np.uint32) << 16


def _q4_0(b, out):  # d, 16 bytes of 4-bit q: x = d * (q - 8)
  np.multiply(_half(b, 0), _nibbles(b[:, 2:]).view(np.int8) - np.int8(8), out=out)


def _q4_1(b, out):  # d, m, 16 bytes of 4-bit q: x = d * q + m
  np.multiply(_half(b, 0), _nibbles(b[:, 4:]), out=out)
  out += _half(b, 2)


def _q5_0(b, out):  # d, 32 high bits, 16 bytes of low nibbles: x = d * (q - 16)
  q = _nibbles(b[:, 6:]) | (_bits(b[:, 2:6]) << 4)
  np.multiply(_half(b, 0), q.view(np.int8) - np.int8(16), out=out)


def _q5_1(b, out):  # d, m, 32 high bits, 16 bytes of low nibbles: x = d * q + m
  np.multiply(_half(b, 0), _nibbles(b[:, 8:]) | (_bits(b[:, 4:8]) << 4), out=out)
  out += _half(b, 2)


def _q8_0(b, out):  # d, 32 int8: x = q * d
  np.multiply(b[:, 2:].view(np.int8), _half(b, 0), out=out)


def _k_scales(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Q4_K/Q5_K's 12 bytes -> eight 6-bit scales and eight 6-bit mins, [n, 8] each."""
  d, m, md = s[:, 0:4], s[:, 4:8], s[:, 8:12]
  scale = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=1)
  low = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=1)
  return scale, low


def _k_affine(b, q_Nx8x32, out):  # x = (d * scale) * q - dmin * min, per sub-block of 32
  scale, low = _k_scales(b[:, 4:16])
  out3 = out.reshape(-1, 8, 32)
  np.multiply((_half(b, 0) * scale)[:, :, None], q_Nx8x32, out=out3)
  out3 -= (_half(b, 2) * low)[:, :, None]


def _q4_k(b, out):  # d, dmin, 12 scale bytes, 128 bytes of 4-bit q
  _k_affine(b, _nibbles_by_32(b[:, 16:144]), out)


def _q5_k(b, out):  # d, dmin, 12 scale bytes, 32 bytes of high bits, 128 bytes of 4-bit q
  high = np.unpackbits(b[:, None, 16:48], axis=1, bitorder="little")  # [n, 8, 32]
  _k_affine(b, _nibbles_by_32(b[:, 48:176]) | (high << 4), out)


def _nibbles_by_32(qs: np.ndarray) -> np.ndarray:
  """[n, 128] bytes -> [n, 8, 32]: per 32 bytes, their low nibbles, then their high nibbles."""
  qs = qs.reshape(-1, 4, 1, 32)
  return np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(-1, 8, 32)


def _q6_k(b, out):  # 128 bytes low 4 bits, 64 bytes high 2 bits, 16 int8 scales, d
  low = b[:, :128].reshape(-1, 2, 1, 64)
  low = np.concatenate([low & 0x0F, low >> 4], axis=2).reshape(-1, 8, 32)
  high = b[:, 128:192].reshape(-1, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8)[:, None]
  q = (low | ((high.reshape(-1, 8, 32) & 0x03) << 4)).view(np.int8) - np.int8(32)
  scale = _half(b, 208) * b[:, 192:208].view(np.int8)
  np.multiply(scale[:, :, None], q.reshape(-1, 16, 16), out=out.reshape(-1, 16, 16))


def _q8_k(b, out):  # float32 d, 256 int8, 16 int16 block sums (unused here): x = d * q
  np.multiply(b[:, :4].view(np.float32), b[:, 4:260].view(np.int8), out=out)


_KERNELS = {
    Q.F16: _f16, Q.BF16: _bf16, Q.Q4_0: _q4_0, Q.Q4_1: _q4_1, Q.Q5_0: _q5_0, Q.Q5_1: _q5_1,
    Q.Q8_0: _q8_0, Q.Q4_K: _q4_k, Q.Q5_K: _q5_k, Q.Q6_K: _q6_k, Q.Q8_K: _q8_k,
}
