"""HF tensor names -> the decoder's nested param dict (the one renaming both loaders share)."""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from attractor_jax.config import ModelConfig
from attractor_jax.errors import InputError
from attractor_jax.transformer import param_shapes

Getter = Callable[[str], np.ndarray]


def to_params(get: Getter, cfg: ModelConfig, source: str) -> dict:
  """Builds decoder params from HF-named tensors (`get(name)` returns a NumPy array).

  Linear weights come in PyTorch's [out, in] layout (gpt2's Conv1D is already [in, out]).
  Raises InputError naming the tensor when one is missing or has the wrong shape.
  """
  build = _llama if cfg.family == "llama" else _gpt2
  try:
    params = build(get, cfg)
  except KeyError as e:
    raise InputError(f"{source}: tensor {e.args[0]!r} is missing from the weights") from None
  _check_shapes(params, param_shapes(cfg), source)
  return params


def _stack(get: Getter, cfg: ModelConfig, name: str, transpose: bool = False) -> np.ndarray:
  arrays = [get(name.format(i=i)) for i in range(cfg.num_layers)]
  return np.stack([a.T if transpose else a for a in arrays]).astype(np.float32)


def _llama(get: Getter, cfg: ModelConfig) -> dict:
  pre = "model.layers.{i}."

  def lin(name, bias):
    out = {"kernel": _stack(get, cfg, pre + name + ".weight", transpose=True)}
    if bias:
      out["bias"] = _stack(get, cfg, pre + name + ".bias")
    return out

  ab, mb = cfg.attention_bias, cfg.mlp_bias
  params = {
      "embed": {"embedding": get("model.embed_tokens.weight")},
      "layers": {
          "attn_norm": {"scale": _stack(get, cfg, pre + "input_layernorm.weight")},
          "attn": {"q": lin("self_attn.q_proj", ab), "k": lin("self_attn.k_proj", ab),
                   "v": lin("self_attn.v_proj", ab), "o": lin("self_attn.o_proj", False)},
          "mlp_norm": {"scale": _stack(get, cfg, pre + "post_attention_layernorm.weight")},
          "mlp": {"gate": lin("mlp.gate_proj", mb), "up": lin("mlp.up_proj", mb),
                  "down": lin("mlp.down_proj", mb)},
      },
      "final_norm": {"scale": get("model.norm.weight")},
  }
  if not cfg.tie_embeddings:
    params["lm_head"] = {"kernel": get("lm_head.weight").T}
  return _as_float32(params)


def _gpt2(get: Getter, cfg: ModelConfig) -> dict:
  pre = "h.{i}."

  def conv(name):
    return {"kernel": _stack(get, cfg, pre + name + ".weight"),
            "bias": _stack(get, cfg, pre + name + ".bias")}

  def ln(name, stacked=True):
    if not stacked:
      return {"scale": get(name + ".weight"), "bias": get(name + ".bias")}
    return {"scale": _stack(get, cfg, pre + name + ".weight"),
            "bias": _stack(get, cfg, pre + name + ".bias")}

  return _as_float32({
      "embed": {"embedding": get("wte.weight")},
      "pos_embed": {"embedding": get("wpe.weight")},
      "layers": {"attn_norm": ln("ln_1"), "attn": {"qkv": conv("attn.c_attn"), "o": conv("attn.c_proj")},
                 "mlp_norm": ln("ln_2"), "mlp": {"fc": conv("mlp.c_fc"), "proj": conv("mlp.c_proj")}},
      "final_norm": ln("ln_f", stacked=False),
  })


def _as_float32(tree):
  return jax.tree.map(lambda a: np.ascontiguousarray(a, dtype=np.float32), tree)


def _check_shapes(params, shapes, source):
  got = jax.tree_util.tree_flatten_with_path(params)[0]
  want = dict(jax.tree_util.tree_flatten_with_path(
      shapes, is_leaf=lambda s: isinstance(s, tuple))[0])
  for path, array in got:
    expected = want.get(path)
    if expected is None or tuple(array.shape) != tuple(expected):
      raise InputError(
          f"{source}: weight {jax.tree_util.keystr(path)} has shape {tuple(array.shape)}, "
          f"but the config implies {expected}; the weights do not match config.json")
