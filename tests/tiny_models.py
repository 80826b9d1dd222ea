"""Random tiny HF models (llama, gpt2) written with save_pretrained, for parity tests."""

import torch
import transformers


def llama_dir(tmp_path, *, kv_heads=2, tie=False, rope_theta=10_000.0, bias=False, seed=0):
  torch.manual_seed(seed)
  cfg = transformers.LlamaConfig(
      vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=64,
      rope_theta=rope_theta, tie_word_embeddings=tie, attention_bias=bias)
  model = transformers.LlamaForCausalLM(cfg).eval()
  _randomize_norms(model)
  model.save_pretrained(tmp_path, safe_serialization=True)
  return model


def gpt2_dir(tmp_path, seed=0):
  torch.manual_seed(seed)
  cfg = transformers.GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=64)
  model = transformers.GPT2LMHeadModel(cfg).eval()
  _randomize_norms(model)
  model.save_pretrained(tmp_path, safe_serialization=True)
  return model


def _randomize_norms(model):
  """Norm scales default to 1 and biases to 0: perturb them so a mix-up cannot hide."""
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name or "ln_" in name:
        p.add_(0.1 * torch.randn_like(p))
