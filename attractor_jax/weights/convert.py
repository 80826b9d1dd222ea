"""HF tensor names -> the decoder's nested param dict (the one renaming both loaders share)."""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from attractor_jax.config import ModelConfig
from attractor_jax.errors import InputError
from attractor_jax.transformer import abstract_params

Getter = Callable[[str], np.ndarray]


def to_params(get: Getter, cfg: ModelConfig, source: str) -> dict:
  """Builds decoder params from HF-named tensors (`get(name)` returns a NumPy array).

  Linear weights come in PyTorch's [out, in] layout (gpt2's Conv1D is already [in, out]);
  the decoder wants [in, out], one dict per layer. A tied model's "lm_head" kernel is the
  embedding table's [D, V] transpose, as `Decoder.init` makes it.
  Raises InputError naming the tensor when one is missing or has the wrong shape.
  """
  build = _gpt2 if cfg.family == "gpt2" else _rope_family
  try:
    params = build(get, cfg)
  except KeyError as e:
    raise InputError(f"{source}: tensor {e.args[0]!r} is missing from the weights") from None
  _check_shapes(params, abstract_params(cfg), source)
  return params


def _rope_family(get: Getter, cfg: ModelConfig) -> dict:
  """llama, mistral, qwen2/3, gemma2/3: HF's llama names, plus q/k norms (qwen3, gemma3) and
  gemma's four norms per layer (its post_attention_layernorm follows the attention; in the
  others it is the norm before the MLP)."""

  def lin(pre, names, bias):
    """One [in, sum of outs] kernel for the projections `names` (side by side), C-ordered
    here, one tensor at a time (a whole-tree copy at the end would double the peak memory)."""
    stacked = np.concatenate([get(f"{pre}{n}.weight") for n in names], axis=0)
    out = {"kernel": transposed(stacked)}
    if bias:
      out["bias"] = np.concatenate([get(f"{pre}{n}.bias") for n in names])
    return out

  def layer(i):
    pre, mb = f"model.layers.{i}.", cfg.mlp_bias
    norm = lambda name: {"scale": get(f"{pre}{name}.weight")}
    attn = {"qkv": lin(pre, ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
                       cfg.attention_bias),
            "o": lin(pre, ["self_attn.o_proj"], cfg.out_bias)}
    if cfg.qk_norm:
      attn.update(q_norm=norm("self_attn.q_norm"), k_norm=norm("self_attn.k_norm"))
    out = {"attn_norm": norm("input_layernorm"), "attn": attn,
           "mlp_norm": norm("pre_feedforward_layernorm" if cfg.gemma else
                            "post_attention_layernorm"),
           "mlp": {"gate_up": lin(pre, ["mlp.gate_proj", "mlp.up_proj"], mb),
                   "down": lin(pre, ["mlp.down_proj"], mb)}}
    if cfg.gemma:
      out.update(post_attn_norm=norm("post_attention_layernorm"),
                 post_mlp_norm=norm("post_feedforward_layernorm"))
    return out

  params = {
      "embed": {"embedding": get("model.embed_tokens.weight")},
      "layers": [layer(i) for i in range(cfg.num_layers)],
      "final_norm": {"scale": get("model.norm.weight")},
  }
  head = params["embed"]["embedding"] if cfg.tie_embeddings else get("lm_head.weight")
  params["lm_head"] = {"kernel": transposed(head)}
  return _as_float32(params)


def _gpt2(get: Getter, cfg: ModelConfig) -> dict:
  def affine(name):  # Conv1D weights are already [in, out]; LayerNorm weight is the scale
    return {"kernel" if "ln" not in name else "scale": get(name + ".weight"),
            "bias": get(name + ".bias")}

  def layer(i):
    pre = f"h.{i}."
    return {"attn_norm": affine(pre + "ln_1"),
            "attn": {"qkv": affine(pre + "attn.c_attn"), "o": affine(pre + "attn.c_proj")},
            "mlp_norm": affine(pre + "ln_2"),
            "mlp": {"fc": affine(pre + "mlp.c_fc"), "proj": affine(pre + "mlp.c_proj")}}

  table = get("wte.weight")
  return _as_float32({
      "embed": {"embedding": table},
      "pos_embed": {"embedding": get("wpe.weight")},
      "layers": [layer(i) for i in range(cfg.num_layers)],
      "final_norm": affine("ln_f"),
      "lm_head": {"kernel": table.T},  # tied
  })


def transposed(a_OxI: np.ndarray, tile: int = 128) -> np.ndarray:
  """A C-ordered copy of a 2-D array's transpose, copied tile by tile: NumPy's whole-array
  transposed copy strides across memory and ran 3-7x slower on large matrices (a 151936 x 1536
  output matrix: 6.9 s against 1.0 s on this project's 2-core machine)."""
  out = np.empty(a_OxI.shape[::-1], a_OxI.dtype)
  for r in range(0, a_OxI.shape[0], tile):
    for c in range(0, a_OxI.shape[1], tile):
      out[c:c + tile, r:r + tile] = a_OxI[r:r + tile, c:c + tile].T
  return out


def _as_float32(tree):
  return jax.tree.map(lambda a: np.ascontiguousarray(a, dtype=np.float32), tree)


def _check_shapes(params, abstract, source):
  want = {path: a.shape for path, a in jax.tree_util.tree_flatten_with_path(abstract)[0]}
  for path, array in jax.tree_util.tree_flatten_with_path(params)[0]:
    expected = want.get(path)
    if expected is None or tuple(array.shape) != expected:
      raise InputError(
          f"{source}: weight {jax.tree_util.keystr(path)} has shape {tuple(array.shape)}, "
          f"but the config implies {expected}; the weights do not match config.json")
