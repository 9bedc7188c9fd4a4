"""Voices store: a directory of named voices (speak-protocol.md §6).

    VOICES_DIR/<id>/manifest.json      {"id","name","language","description","reference","transcript","mode"}
    VOICES_DIR/<id>/reference.wav      the clip (24 kHz mono PCM16, decoded from the upload)
    VOICES_DIR/<id>/prompt.safetensors cached VoicePrompt (reference codes + x-vector), keyed by a
                                       fingerprint of clip + transcript + mode + model

Writes are atomic (a voice is built in a temp folder and renamed into place; the cached prompt is
written to a temp file and renamed), so a crash never leaves a half-written voice. A corrupt
manifest or a missing clip makes that one voice unusable with a clear error; the others still
load. An in-memory LRU with TTL sits in front of the disk cache. This module does not import
torch (the server lists and adds voices without it); computing a prompt needs the model.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MIN_SECONDS, MAX_SECONDS = 3.0, 30.0
CLIP_NAME, PROMPT_NAME, MANIFEST = "reference.wav", "prompt.safetensors", "manifest.json"


class VoiceError(Exception):
    """`code`: BAD_ID | EXISTS | NOT_FOUND | BAD_AUDIO | BAD_DURATION | NO_TRANSCRIPT | BAD_MODE |
    IS_DEFAULT | BROKEN; `status`: the HTTP status the server answers with."""

    STATUS = {"BAD_ID": 400, "EXISTS": 409, "NOT_FOUND": 404, "BAD_AUDIO": 400, "BAD_DURATION": 400, "NO_TRANSCRIPT": 400,
              "BAD_MODE": 400, "IS_DEFAULT": 409, "BROKEN": 500}

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message
        self.status = self.STATUS.get(code, 400)


@dataclass
class VoiceInfo:
    id: str
    name: str
    language: str = "auto"
    description: str = ""
    transcript: str = ""
    mode: str = "icl"
    reference: str = CLIP_NAME
    durationSec: float = 0.0  # noqa: N815 (protocol field name)
    isDefault: bool = False  # noqa: N815

    def public(self) -> dict:
        d = asdict(self)
        d.pop("reference")
        d.pop("transcript")
        return d


def validate_id(voice_id: str) -> str:
    if not isinstance(voice_id, str) or not ID_RE.fullmatch(voice_id):
        raise VoiceError("BAD_ID", "voice id must match [a-z0-9][a-z0-9_-]{0,63}")
    return voice_id


def slugify(name: str) -> str:
    s = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_")[:64]
    return s if s and ID_RE.fullmatch(s) else f"voice-{uuid.uuid4().hex[:8]}"


def decode_clip(data) -> tuple["object", int]:
    """bytes / path / (samples, rate) -> (mono float32 numpy array at 24 kHz, 24000)."""
    from .audio import AudioError, load_audio

    try:
        wav = load_audio(data)
    except AudioError as e:
        raise VoiceError("BAD_AUDIO", f"could not read the audio clip: {e}") from None
    except Exception as e:  # any decoder failure
        raise VoiceError("BAD_AUDIO", f"could not read the audio clip ({type(e).__name__})") from None
    return wav, 24000


class VoiceStore:
    def __init__(self, root: str | os.PathLike, default_id: str | None = None, cache_size: int = 16, ttl: float = 3600.0,
                 model_tag: str = ""):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.default_id = default_id
        self.model_tag = model_tag  # part of the prompt fingerprint: prompts depend on the model
        self._lock = threading.RLock()
        self._mem: OrderedDict[str, tuple[float, str, object]] = OrderedDict()  # id -> (time, fingerprint, VoicePrompt)
        self.cache_size, self.ttl = cache_size, ttl
        self.prompt_computations = 0  # counted for tests and metrics

    # ------------------------------------------------------------------ reading
    def _dir(self, voice_id: str) -> Path:
        return self.root / validate_id(voice_id)

    def get(self, voice_id: str) -> VoiceInfo:
        d = self._dir(voice_id)
        if not d.is_dir():
            raise VoiceError("NOT_FOUND", f"voice {voice_id!r} not found")
        try:
            m = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
            if not isinstance(m, dict):
                raise ValueError("manifest is not a JSON object")
            info = VoiceInfo(
                id=voice_id, name=str(m.get("name") or voice_id), language=str(m.get("language") or "auto"),
                description=str(m.get("description") or ""), transcript=str(m.get("transcript") or ""),
                mode=str(m.get("mode") or "icl"), reference=str(m.get("reference") or CLIP_NAME),
                durationSec=float(m.get("durationSec") or 0.0),
            )
        except (OSError, ValueError, TypeError) as e:
            raise VoiceError("BROKEN", f"voice {voice_id!r} has an unreadable manifest.json ({e})") from None
        if info.mode not in ("icl", "xvector"):
            raise VoiceError("BROKEN", f"voice {voice_id!r}: unknown mode {info.mode!r}")
        if Path(info.reference).name != info.reference or not (d / info.reference).is_file():
            raise VoiceError("BROKEN", f"voice {voice_id!r}: reference clip {info.reference!r} is missing")
        info.isDefault = voice_id == self.default_id
        return info

    def list(self) -> tuple[list[VoiceInfo], dict[str, str]]:
        """(usable voices sorted by id, {id: error} for broken ones)."""
        ok, broken = [], {}
        for d in sorted(self.root.iterdir()):
            if not d.is_dir() or d.name.startswith(".") or not ID_RE.fullmatch(d.name):
                continue
            try:
                ok.append(self.get(d.name))
            except VoiceError as e:
                broken[d.name] = e.message
        return ok, broken

    def exists(self, voice_id: str) -> bool:
        try:
            return self._dir(voice_id).is_dir()
        except VoiceError:
            return False

    # ------------------------------------------------------------------ writing
    def add(self, audio, transcript: str = "", name: str | None = None, voice_id: str | None = None, language: str = "auto",
            description: str = "", mode: str | None = None) -> VoiceInfo:
        """Validate and store a voice atomically. `audio`: bytes, a path, or (samples, rate)."""
        import soundfile as sf

        mode = mode or ("icl" if (transcript or "").strip() else "xvector")
        if mode not in ("icl", "xvector"):
            raise VoiceError("BAD_MODE", "mode must be 'icl' or 'xvector'")
        if mode == "icl" and not (transcript or "").strip():
            raise VoiceError("NO_TRANSCRIPT", "an 'icl' voice needs the exact transcript of the clip")
        voice_id = validate_id(voice_id) if voice_id else slugify(name or "voice")
        name = (name or voice_id).strip()[:200]
        wav, sr = decode_clip(audio)
        secs = len(wav) / sr
        if secs < MIN_SECONDS or secs > MAX_SECONDS:
            raise VoiceError("BAD_DURATION", f"the clip is {secs:.1f} s long; it must be {MIN_SECONDS:.0f} to {MAX_SECONDS:.0f} s")
        manifest = {"id": voice_id, "name": name, "language": language or "auto", "description": description or "",
                    "reference": CLIP_NAME, "transcript": (transcript or "").strip(), "mode": mode, "durationSec": round(secs, 3)}
        with self._lock:
            if self._dir(voice_id).exists():
                raise VoiceError("EXISTS", f"voice {voice_id!r} already exists")
            tmp = self.root / f".tmp-{uuid.uuid4().hex}"
            tmp.mkdir()
            try:
                sf.write(str(tmp / CLIP_NAME), wav, sr, subtype="PCM_16")
                _write_json(tmp / MANIFEST, manifest)
                os.rename(tmp, self._dir(voice_id))
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        return self.get(voice_id)

    def remove(self, voice_id: str) -> None:
        with self._lock:
            d = self._dir(voice_id)
            if not d.is_dir():
                raise VoiceError("NOT_FOUND", f"voice {voice_id!r} not found")
            if voice_id == self.default_id:
                raise VoiceError("IS_DEFAULT", f"voice {voice_id!r} is the server's default voice")
            trash = self.root / f".trash-{uuid.uuid4().hex}"
            os.rename(d, trash)
            self._mem.pop(voice_id, None)
        shutil.rmtree(trash, ignore_errors=True)

    # ------------------------------------------------------------------ prompts
    def fingerprint(self, info: VoiceInfo) -> str:
        h = hashlib.sha256()
        h.update((self._dir(info.id) / info.reference).read_bytes())
        h.update(json.dumps([info.transcript, info.mode, self.model_tag]).encode())
        return h.hexdigest()

    def prompt(self, voice_id: str, tts):
        """The voice's VoicePrompt: memory (LRU + TTL) -> disk (if the fingerprint matches) ->
        computed with `tts` and saved atomically."""
        from .voice import VoicePrompt

        info = self.get(voice_id)
        fp = self.fingerprint(info)
        now = time.monotonic()
        with self._lock:
            hit = self._mem.get(voice_id)
            if hit and hit[1] == fp and now - hit[0] < self.ttl:
                self._mem.move_to_end(voice_id)
                return hit[2]
        path = self._dir(voice_id) / PROMPT_NAME
        prompt = None
        if path.exists():
            try:
                cached = VoicePrompt.load(path)
                if getattr(cached, "fingerprint", None) == fp:
                    prompt = cached
            except (ValueError, OSError):
                prompt = None  # corrupt cache: rebuild
        if prompt is None:
            prompt = tts.create_voice_prompt(self._dir(voice_id) / info.reference, ref_text=info.transcript or None,
                                             x_vector_only=info.mode == "xvector")
            prompt.fingerprint = fp
            self.prompt_computations += 1
            try:
                prompt.save(path)
            except OSError:
                pass  # a read-only store still works, just without the disk cache
        else:
            tts.prime_voice(prompt)  # loaded: its codec state now, not on its first request
        with self._lock:
            self._mem[voice_id] = (now, fp, prompt)
            self._mem.move_to_end(voice_id)
            while len(self._mem) > self.cache_size:
                self._mem.popitem(last=False)
        return prompt

    def default_prompt(self, tts):
        """(VoicePrompt or None, warning or None): the default voice, or no reference at all."""
        if not self.default_id:
            return None, "no default voice configured: speaking without a reference voice"
        try:
            return self.prompt(self.default_id, tts), None
        except VoiceError as e:
            return None, f"default voice unusable ({e.message}): speaking without a reference voice"


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def wav_bytes(wav, sr: int = 24000) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, wav, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()
