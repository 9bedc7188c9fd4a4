"""`VoicePrompt`: a reusable, savable voice (the official `VoiceClonePromptItem`).

Computed once from a reference clip: the reference codes (ICL mode only), the speaker
embedding (x-vector) and the transcript. Saved as one safetensors file whose metadata holds
the JSON fields (no pickle); loading checks shapes and mode.

An ICL voice also carries, in memory only, the streaming codec state after its reference codes
(`Qwen3TTS.prime_voice`, run when the voice is created or loaded through the voices store): read
only, shared by every stream of the voice, each of which starts from a copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch

MODES = ("icl", "xvector")
FORMAT_VERSION = 1


@dataclass
class VoicePrompt:
    speaker_embedding: torch.Tensor  # (D,) float32
    ref_codes: torch.Tensor | None = None  # (T_ref, 16) int64, ICL only
    ref_text: str | None = None
    mode: str = "icl"  # "icl" (clip + transcript) | "xvector" (speaker embedding only)
    ref_seconds: float | None = None
    fingerprint: str | None = None  # what it was computed from (set by the voices store)
    # (weakref to the codec it was computed with, reference-codes digest, codec state snapshot)
    _primed: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"voice mode must be one of {MODES}, not {self.mode!r}")
        if self.speaker_embedding.dim() != 1:
            raise ValueError("speaker_embedding must be 1-D")
        if self.mode == "icl":
            if self.ref_codes is None or self.ref_codes.dim() != 2:
                raise ValueError("an ICL voice needs reference codes of shape (T, 16)")
            if not (self.ref_text or "").strip():
                raise ValueError("an ICL voice needs the transcript of the reference clip (ref_text)")

    @property
    def icl(self) -> bool:
        return self.mode == "icl"

    def _codes_digest(self) -> str:
        return hashlib.sha1(self.ref_codes.detach().long().cpu().contiguous().numpy().tobytes()).hexdigest()

    def primed_state(self, codec):
        """The streaming state of `codec` (a SpeechTokenizer) after this voice's reference codes,
        as kept by `keep_primed_state`; None if it was not computed for this codec and these
        codes. Read only: copy it (`StreamState.restore`), never write to it."""
        p = self._primed
        if p is None or p[0]() is not codec or p[1] != self._codes_digest():
            return None
        return p[2]

    def keep_primed_state(self, codec, snapshot) -> None:
        self._primed = (weakref.ref(codec), self._codes_digest(), snapshot)

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file + rename)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"speaker_embedding": self.speaker_embedding.detach().float().cpu().contiguous()}
        if self.ref_codes is not None:
            tensors["ref_codes"] = self.ref_codes.detach().long().cpu().contiguous()
        meta = {"format": "qwen3tts.voice", "version": str(FORMAT_VERSION),
                "json": json.dumps({"mode": self.mode, "ref_text": self.ref_text, "ref_seconds": self.ref_seconds,
                                    "fingerprint": self.fingerprint}, ensure_ascii=False)}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".safetensors")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=meta)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "VoicePrompt":
        from safetensors import safe_open

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"voice prompt not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:
            raise ValueError(f"{path} is not a voice prompt file ({e})") from None
        if meta.get("format") != "qwen3tts.voice" or "speaker_embedding" not in tensors:
            raise ValueError(f"{path} is not a qwen3tts voice prompt")
        info = json.loads(meta.get("json", "{}"))
        return cls(speaker_embedding=tensors["speaker_embedding"], ref_codes=tensors.get("ref_codes"),
                   ref_text=info.get("ref_text"), mode=info.get("mode", "icl"), ref_seconds=info.get("ref_seconds"),
                   fingerprint=info.get("fingerprint"))
