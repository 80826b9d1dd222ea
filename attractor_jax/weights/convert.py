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

  Linear weights come in PyTorch's [out, in] layout (gpt2's Conv1D is already [in, out]);
  the decoder wants [in, out], one dict per layer.
  Raises InputError naming the tensor when one is missing or has the wrong shape.
  """
  build = _llama if cfg.family == "llama" else _gpt2
  try:
    params = build(get, cfg)
  except KeyError as e:
    raise InputError(f"{source}: tensor {e.args[0]!r} is missing from the weights") from None
  _check_shapes(params, param_shapes(cfg), source)
  return params


def _llama(get: Getter, cfg: ModelConfig) -> dict:
  def lin(pre, names, bias):
    """One [in, sum of outs] kernel for the projections `names` (side by side)."""
    out = {"kernel": np.concatenate([get(f"{pre}{n}.weight").T for n in names], axis=1)}
    if bias:
      out["bias"] = np.concatenate([get(f"{pre}{n}.bias") for n in names])
    return out

  def layer(i):
    pre, ab, mb = f"model.layers.{i}.", cfg.attention_bias, cfg.mlp_bias
    return {
        "attn_norm": {"scale": get(pre + "input_layernorm.weight")},
        "attn": {"qkv": lin(pre, ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ab),
                 "o": lin(pre, ["self_attn.o_proj"], False)},
        "mlp_norm": {"scale": get(pre + "post_attention_layernorm.weight")},
        "mlp": {"gate_up": lin(pre, ["mlp.gate_proj", "mlp.up_proj"], mb),
                "down": lin(pre, ["mlp.down_proj"], mb)},
    }

  params = {
      "embed": {"embedding": get("model.embed_tokens.weight")},
      "layers": [layer(i) for i in range(cfg.num_layers)],
      "final_norm": {"scale": get("model.norm.weight")},
  }
  if not cfg.tie_embeddings:
    params["lm_head"] = {"kernel": get("lm_head.weight").T}
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

  return _as_float32({
      "embed": {"embedding": get("wte.weight")},
      "pos_embed": {"embedding": get("wpe.weight")},
      "layers": [layer(i) for i in range(cfg.num_layers)],
      "final_norm": affine("ln_f"),
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
