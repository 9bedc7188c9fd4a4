"""Resolve a model reference to a local directory: a local path, or a Hugging Face hub id that
is downloaded (only the files inference needs) with `huggingface_hub` into the HF cache.

Offline (`HF_HUB_OFFLINE=1`, or no network) uses the cache if the files are there and otherwise
fails at once with a message that says what to do.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import options

DEFAULT_MODEL = "Qwen/Qwen3-TTS-12Hz-0.6B-Base"
FILES = [
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "model.safetensors",
    "speech_tokenizer/config.json",
    "speech_tokenizer/preprocessor_config.json",
    "speech_tokenizer/model.safetensors",
]
KNOWN = [
    "Qwen/Qwen3-TTS-12Hz-0.6B-Base",
    "Qwen/Qwen3-TTS-12Hz-1.7B-Base",
    "Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice",
    "Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice",
    "Qwen/Qwen3-TTS-12Hz-1.7B-VoiceDesign",
]


class ModelNotAvailable(RuntimeError):
    pass


def _looks_like_repo_id(s: str) -> bool:
    parts = s.split("/")
    return len(parts) == 2 and all(parts) and not s.startswith((".", "/", "~"))


def resolve_model(ref: str | os.PathLike | None = None, *, progress: bool = True, timeout: float = 5.0) -> Path:
    ref = str(ref or DEFAULT_MODEL)
    p = Path(ref).expanduser()
    if p.is_dir():
        if not (p / "config.json").exists():
            raise ModelNotAvailable(f"{p} is not a Qwen3-TTS model directory (no config.json)")
        return p
    if not _looks_like_repo_id(ref):
        raise ModelNotAvailable(f"model {ref!r} is neither a local directory nor a Hugging Face repo id (like {DEFAULT_MODEL})")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - dependency
        raise ModelNotAvailable("huggingface_hub is not installed: pip install huggingface-hub") from None
    options.hub_defaults(timeout, progress)
    try:
        return Path(snapshot_download(repo_id=ref, allow_patterns=FILES))
    except Exception as e:  # offline, no network, auth, missing repo ...
        # a complete copy in the cache is still fine
        try:
            return Path(snapshot_download(repo_id=ref, allow_patterns=FILES, local_files_only=True))
        except Exception:
            pass
        reason = type(e).__name__ + (f": {e}" if str(e) else "")
        first = reason.splitlines()[0][:300]
        raise ModelNotAvailable(
            f"could not download {ref!r} from the Hugging Face hub ({first}).\n"
            f"Either connect to the network (and unset HF_HUB_OFFLINE), or pass a local model directory, e.g.\n"
            f"  huggingface-cli download {ref} --local-dir ./{ref.split('/')[-1]}   (on a machine with network)\n"
            f"  then: --model ./{ref.split('/')[-1]}"
        ) from None
