"""Fetches an HF hub model id into the local cache (needs network; fails fast and clearly offline)."""

from __future__ import annotations

import os

from attractor_jax.errors import InputError


def download(repo_id: str) -> str:
  """Returns the local directory of `repo_id` (config.json + safetensors + tokenizer files)."""
  import huggingface_hub

  os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
  os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
  try:
    return huggingface_hub.snapshot_download(
        repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"])
  except Exception as e:
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise InputError(
        f"could not fetch hub model {repo_id!r} ({type(e).__name__}: {reason[:200]}): "
        "this machine may be offline; pass a local .gguf file or HF directory, "
        "or 'smollm2-135m'") from None
