"""The built-in default voice: a licence-clean clip shipped in the package (CMU ARCTIC slt,
`presets/voices/arctic_slt/`, notice in its `COPYING`), used when no voice is named.

The Base checkpoint is trained to speak with a reference (shared spec talker.md §2.6 (c)); with
none at all it is out of distribution. The built-in voice is the clip + transcript; its prompt is
made by the model in use (x-vector mode: the speaker encoder of that model), once per model
instance, so it works with any Base checkpoint, the tiny test fixture included.

Who uses it:
* the library: `Qwen3TTS.generate(text, voice="default")` (`voice=None` keeps meaning "no
  reference", the official model's behaviour and the parity mode);
* the server and the CLI: `VoiceStoreWithBuiltin` is a `VoiceStore` that lists the built-in
  voice (`builtIn: true`, not deletable: `BUILT_IN`, 409) and uses it as the default voice unless
  another one is named (`--default-voice ID`; `--default-voice none`: no reference).
This module does not import torch (the server lists voices without it).
"""

from __future__ import annotations

import json
import weakref
from functools import lru_cache
from pathlib import Path

from .voices import VoiceError, VoiceInfo, VoiceStore

DIR = Path(__file__).resolve().parent / "presets" / "voices" / "arctic_slt"
NO_VOICE = "none"  # --default-voice none: speak without a reference (the old behaviour)
DEFAULT_ALIAS = "default"  # the library's name for "the built-in voice"

BUILTIN_ID = "arctic-slt"
_prompts: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # Qwen3TTS -> VoicePrompt


@lru_cache(maxsize=1)
def manifest() -> dict:
    return json.loads((DIR / "voice.json").read_text(encoding="utf-8"))



def clip_path() -> Path:
    return DIR / manifest()["reference"]


class BuiltinVoiceInfo(VoiceInfo):
    """A `VoiceInfo` whose public form says `builtIn: true`."""

    def public(self) -> dict:
        d = super().public()
        d["builtIn"] = True
        return d


def info(is_default: bool = False) -> VoiceInfo:
    m = manifest()
    import soundfile as sf

    secs = sf.info(str(clip_path())).duration
    return BuiltinVoiceInfo(id=m["id"], name=m["name"], language=m["language"], description=m["description"], transcript=m["transcript"],
                            mode=m["mode"], reference=m["reference"], durationSec=round(secs, 3), isDefault=is_default)


def prompt(tts):
    """The built-in voice's `VoicePrompt` for this model instance (computed once per instance)."""
    p = _prompts.get(tts)
    if p is None:
        if tts.config.tts_model_type != "base":
            raise VoiceError("BAD_MODE", f"the built-in voice clones a voice: it needs a Base checkpoint (this one is "
                                         f"{tts.config.tts_model_type!r}, which has its own speakers)")
        m = manifest()
        p = tts.create_voice_prompt(clip_path(), ref_text=m["transcript"] if m["mode"] == "icl" else None,
                                    x_vector_only=m["mode"] == "xvector")
        _prompts[tts] = p
    return p


class VoiceStoreWithBuiltin(VoiceStore):
    """A `VoiceStore` that also holds the built-in voice (read-only, listed first) and makes it
    the default when `default_id` is None. `default_id == "none"`: no default voice at all."""

    def __init__(self, root, default_id: str | None = None, **kw):
        if default_id == NO_VOICE:
            default_id = None
        elif not default_id:
            default_id = BUILTIN_ID
        super().__init__(root, default_id=default_id, **kw)

    def get(self, voice_id: str) -> VoiceInfo:
        if voice_id == BUILTIN_ID:
            return info(is_default=self.default_id == BUILTIN_ID)
        return super().get(voice_id)

    def list(self):
        voices, broken = super().list()
        return [info(is_default=self.default_id == BUILTIN_ID)] + [v for v in voices if v.id != BUILTIN_ID], broken

    def exists(self, voice_id: str) -> bool:
        return voice_id == BUILTIN_ID or super().exists(voice_id)

    def add(self, audio, transcript: str = "", name: str | None = None, voice_id: str | None = None, **kw) -> VoiceInfo:
        from .voices import slugify

        if (voice_id or slugify(name or "voice")) == BUILTIN_ID:
            raise VoiceError("EXISTS", f"voice {voice_id!r} already exists (it is built in)")
        return super().add(audio, transcript=transcript, name=name, voice_id=voice_id, **kw)

    def remove(self, voice_id: str) -> None:
        if voice_id == BUILTIN_ID:
            e = VoiceError("BUILT_IN", f"voice {voice_id!r} is built in and cannot be deleted")
            e.status = 409
            raise e
        super().remove(voice_id)

    def prompt(self, voice_id: str, tts):
        if voice_id == BUILTIN_ID:
            return prompt(tts)
        return super().prompt(voice_id, tts)

    def default_prompt(self, tts):
        """As `VoiceStore.default_prompt`; a checkpoint that does not clone voices (CustomVoice,
        VoiceDesign) has no use for the built-in voice: no prompt, no warning."""
        if self.default_id == BUILTIN_ID and tts.config.tts_model_type != "base":
            return None, None
        return super().default_prompt(tts)
