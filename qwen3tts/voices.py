"""Voices store: a directory of named voices (speak-protocol.md §6).

    VOICES_DIR/<id>/manifest.json      {"id","name","language","description","reference","transcript","mode"}
    VOICES_DIR/<id>/reference.wav      the clip (24 kHz mono PCM16, decoded from the upload)
    VOICES_DIR/<id>/prompt.safetensors cached VoicePrompt (reference codes + x-vector), keyed by a
                                       fingerprint of clip + transcript + mode + model

Writes are atomic and durable: a voice is built in a temp folder, its files and the folder are
fsynced, then it is renamed into place (and the store folder fsynced), so a crash never leaves a
half-written voice; `.tmp-*` / `.trash-*` leftovers of a crash are removed when a store opens.

Several processes may share one store (replicas on an NFS / EFS / CephFS volume): create,
replace and delete hold a cross-process lock (`fcntl.lockf` on `VOICES_DIR/.lock`, which NFSv4
and CephFS honour across hosts, plus a thread lock within the process), so two uploads of one id
give exactly one success and one `EXISTS`, wherever they land. Reads take no lock: listing reads
the folder every time, and the prompt caches (memory LRU with TTL, then disk) are keyed by a
fingerprint of the voice's content (clip bytes + transcript + mode + model), so a voice replaced
by another process is never served stale. A corrupt manifest, a missing or undecodable clip makes
that one voice unusable with a clear error (no file system paths in it); the others still load.
This module does not import torch (the server lists and adds voices without it); computing a
prompt needs the model.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
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
LOCK_NAME = ".lock"
LEFTOVER_PREFIXES = (".tmp-", ".trash-")


class VoiceError(Exception):
    """`code`: BAD_ID | EXISTS | NOT_FOUND | BAD_AUDIO | BAD_DURATION | NO_TRANSCRIPT | BAD_MODE |
    BAD_LANGUAGE | IS_DEFAULT | BROKEN; `status`: the HTTP status the server answers with."""

    STATUS = {"BAD_ID": 400, "EXISTS": 409, "NOT_FOUND": 404, "BAD_AUDIO": 400, "BAD_DURATION": 400, "NO_TRANSCRIPT": 400,
              "BAD_MODE": 400, "BAD_LANGUAGE": 400, "IS_DEFAULT": 409, "BROKEN": 500}

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
    replaced: bool = False  # set by VoiceStore.add(replace=True) when an older voice was swapped out

    def public(self) -> dict:
        d = asdict(self)
        for k in ("reference", "transcript", "replaced"):
            d.pop(k)
        return d


def validate_id(voice_id: str) -> str:
    if not isinstance(voice_id, str) or not ID_RE.fullmatch(voice_id):
        raise VoiceError("BAD_ID", "voice id must match [a-z0-9][a-z0-9_-]{0,63}")
    return voice_id


def slugify(name: str) -> str:
    s = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_")[:64]
    return s if s and ID_RE.fullmatch(s) else f"voice-{uuid.uuid4().hex[:8]}"


MIN_RATE = 8000  # uploads at a lower rate are refused (from the header, before decoding)


def decode_clip(data) -> tuple["object", int]:
    """bytes / path / (samples, rate) -> (mono float32 numpy array at 24 kHz, 24000). The header
    is checked first and at most MAX_SECONDS are decoded (see `audio.load_audio`'s limits)."""
    from .audio import AudioError, AudioTooLong, load_audio

    try:
        wav = load_audio(data, max_seconds=MAX_SECONDS, min_rate=MIN_RATE)
    except AudioTooLong as e:
        raise VoiceError("BAD_DURATION", f"{e}; it must be {MIN_SECONDS:.0f} to {MAX_SECONDS:.0f} s") from None
    except AudioError as e:
        raise VoiceError("BAD_AUDIO", f"could not read the audio clip: {e}") from None
    except Exception as e:  # any decoder failure
        raise VoiceError("BAD_AUDIO", f"could not read the audio clip ({type(e).__name__})") from None
    return wav, 24000


def public_text(msg: str) -> str:
    """A decoder's message without object addresses or file system paths (it goes to clients)."""
    msg = re.sub(r"Error opening <[^<>]*>: ", "", msg)
    msg = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the clip", msg)
    return re.sub(r"(?<![\w.])/(?:[^\s'\":/]+/)*([^\s'\":/]+)", r"\1", msg)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders atomically (Linux renameat2 RENAME_EXCHANGE), so readers never see the id
    missing during a replace; False where the call or the file system does not support it."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0


def config_languages(model_dir: str | os.PathLike | None) -> list[str] | None:
    """The languages a local checkpoint's text prompt knows ('auto' + `codec_language_id` keys,
    as `prompt.supported_languages` names them), read from its config.json without loading it;
    None when the model is not a local folder."""
    try:
        cfg = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
        ids = cfg["talker_config"]["codec_language_id"]
    except (TypeError, OSError, ValueError, KeyError):
        return None
    return ["auto"] + [k.capitalize() for k in ids if "dialect" not in k] + [k for k in ids if "dialect" in k]


def normalize_language(language: str | None, known: list[str] | None) -> str:
    """'auto' for empty; else the known spelling of `language` (case-insensitive), or BAD_LANGUAGE.
    With `known` None (the model's list is not known yet) any non-empty name is kept."""
    lang = (language or "").strip() or "auto"
    if known is None:
        return lang[:64]
    for k in known:
        if k.lower() == lang.lower():
            return k
    raise VoiceError("BAD_LANGUAGE", f"unsupported language {lang[:64]!r}; supported: {', '.join(known)}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class VoiceStore:
    def __init__(self, root: str | os.PathLike, default_id: str | None = None, cache_size: int = 16, ttl: float = 3600.0,
                 model_tag: str = "", languages: list[str] | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.default_id = default_id
        self.model_tag = model_tag  # part of the prompt fingerprint: prompts depend on the model
        self.languages = languages  # accepted voice languages (None: not known, not checked)
        self._lock = threading.RLock()
        self._mem: OrderedDict[str, tuple[float, object]] = OrderedDict()  # fingerprint -> (time, VoicePrompt)
        self.cache_size, self.ttl = cache_size, ttl
        self.prompt_computations = 0  # counted for tests and metrics
        self.cleaned = self._clean_leftovers()

    @contextlib.contextmanager
    def locked(self):
        """Exclusive over every process sharing the store (and every thread of this one)."""
        with self._lock:
            fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the lock

    def _clean_leftovers(self) -> int:
        """Remove `.tmp-*` / `.trash-*` folders a crash left behind (under the lock: another
        process's write in progress holds it, so only dead writers' leftovers are seen)."""
        n = 0
        with self.locked():
            for d in self.root.iterdir():
                if d.name.startswith(LEFTOVER_PREFIXES):
                    if d.is_dir():
                        shutil.rmtree(d, ignore_errors=True)
                    else:
                        with contextlib.suppress(OSError):
                            d.unlink()
                    n += 1
        return n

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
        except FileNotFoundError:
            if not d.is_dir():  # deleted (or being replaced) by another process just now
                raise VoiceError("NOT_FOUND", f"voice {voice_id!r} not found") from None
            raise VoiceError("BROKEN", f"voice {voice_id!r} has no manifest.json") from None
        except OSError as e:
            raise VoiceError("BROKEN", f"voice {voice_id!r} has an unreadable manifest.json ({e.strerror})") from None
        except (ValueError, TypeError) as e:
            raise VoiceError("BROKEN", f"voice {voice_id!r} has an unreadable manifest.json ({e})") from None
        if info.mode not in ("icl", "xvector"):
            raise VoiceError("BROKEN", f"voice {voice_id!r}: unknown mode {info.mode!r}")
        if Path(info.reference).name != info.reference or not (d / info.reference).is_file():
            raise VoiceError("BROKEN", f"voice {voice_id!r}: reference clip {info.reference!r} is missing")
        self._check_clip(voice_id, d / info.reference)
        info.isDefault = voice_id == self.default_id
        return info

    @staticmethod
    def _check_clip(voice_id: str, path: Path) -> None:
        """The clip's header must decode and hold samples (read the header only: cheap)."""
        import soundfile as sf

        try:
            frames = sf.info(str(path)).frames
        except Exception:  # noqa: BLE001 - any decoder failure
            frames = None
        if not frames:
            what = "is empty" if frames == 0 else "does not decode as audio"
            raise VoiceError("BROKEN", f"voice {voice_id!r}: reference clip {path.name!r} {what}")

    def list(self) -> tuple[list[VoiceInfo], dict[str, str]]:
        """(usable voices sorted by id, {id: error} for broken ones), read from the folder now."""
        ok, broken = [], {}
        for d in sorted(self.root.iterdir()):
            if not d.is_dir() or d.name.startswith(".") or not ID_RE.fullmatch(d.name):
                continue
            try:
                ok.append(self.get(d.name))
            except VoiceError as e:
                if e.code != "NOT_FOUND":  # deleted meanwhile: simply gone
                    broken[d.name] = e.message
        return ok, broken

    def exists(self, voice_id: str) -> bool:
        try:
            return self._dir(voice_id).is_dir()
        except VoiceError:
            return False

    # ------------------------------------------------------------------ writing
    def add(self, audio, transcript: str = "", name: str | None = None, voice_id: str | None = None, language: str = "auto",
            description: str = "", mode: str | None = None, replace: bool = False) -> VoiceInfo:
        """Validate and store a voice atomically. `audio`: bytes, a path, or (samples, rate).
        `replace`: an existing voice of that id is swapped for the new one (`info.replaced` says
        whether there was one); otherwise an existing id is `EXISTS`."""
        import soundfile as sf

        mode = mode or ("icl" if (transcript or "").strip() else "xvector")
        if mode not in ("icl", "xvector"):
            raise VoiceError("BAD_MODE", "mode must be 'icl' or 'xvector'")
        if mode == "icl" and not (transcript or "").strip():
            raise VoiceError("NO_TRANSCRIPT", "an 'icl' voice needs the exact transcript of the clip")
        voice_id = validate_id(voice_id) if voice_id else slugify(name or "voice")
        name = (name or voice_id).strip()[:200]
        language = normalize_language(language, self.languages)
        if not replace and self._dir(voice_id).exists():  # early answer; checked again under the lock
            raise VoiceError("EXISTS", f"voice {voice_id!r} already exists")
        try:
            wav, sr = decode_clip(audio)
        except VoiceError as e:
            raise VoiceError(e.code, public_text(e.message)) from None
        secs = len(wav) / sr
        if secs < MIN_SECONDS or secs > MAX_SECONDS:
            raise VoiceError("BAD_DURATION", f"the clip is {secs:.1f} s long; it must be {MIN_SECONDS:.0f} to {MAX_SECONDS:.0f} s")
        manifest = {"id": voice_id, "name": name, "language": language, "description": description or "",
                    "reference": CLIP_NAME, "transcript": (transcript or "").strip(), "mode": mode, "durationSec": round(secs, 3)}
        dest, replaced = self._dir(voice_id), False
        with self.locked():
            if dest.exists() and not replace:
                raise VoiceError("EXISTS", f"voice {voice_id!r} already exists")
            tmp = self.root / f".tmp-{uuid.uuid4().hex}"
            tmp.mkdir()
            trash = None
            try:
                sf.write(str(tmp / CLIP_NAME), wav, sr, subtype="PCM_16")
                _write_json(tmp / MANIFEST, manifest)
                for f in (CLIP_NAME, MANIFEST):
                    _fsync_file(tmp / f)
                _fsync_dir(tmp)
                if dest.exists():  # replace: the new voice takes the old one's place, the old one is removed
                    replaced = True
                    if not _exchange(tmp, dest):  # atomic swap where supported; else via the trash
                        trash = self.root / f".trash-{uuid.uuid4().hex}"
                        os.rename(dest, trash)
                if not replaced or trash is not None:
                    try:
                        os.rename(tmp, dest)  # fails if a non-empty folder of that name appeared (a writer without the lock)
                    except OSError:
                        if trash is not None:
                            os.rename(trash, dest)
                            trash = None
                        raise VoiceError("EXISTS", f"voice {voice_id!r} already exists") from None
                _fsync_dir(self.root)
            finally:
                if tmp.exists():  # a failed write, or the old voice after a swap
                    shutil.rmtree(tmp, ignore_errors=True)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        # from the manifest just written, not re-read: another process may already have deleted it
        return VoiceInfo(id=voice_id, name=name, language=language, description=manifest["description"], transcript=manifest["transcript"],
                         mode=mode, durationSec=manifest["durationSec"], isDefault=voice_id == self.default_id, replaced=replaced)

    def remove(self, voice_id: str) -> None:
        d = self._dir(voice_id)
        with self.locked():
            if not d.is_dir():
                raise VoiceError("NOT_FOUND", f"voice {voice_id!r} not found")
            if voice_id == self.default_id:
                raise VoiceError("IS_DEFAULT", f"voice {voice_id!r} is the server's default voice")
            trash = self.root / f".trash-{uuid.uuid4().hex}"
            os.rename(d, trash)
            _fsync_dir(self.root)
        shutil.rmtree(trash, ignore_errors=True)

    # ------------------------------------------------------------------ prompts
    def _content(self, info: VoiceInfo) -> tuple[bytes, str]:
        """(clip bytes, fingerprint): the clip is read once, so the prompt is computed from exactly
        the bytes the fingerprint names even if another process replaces the voice meanwhile."""
        try:
            data = (self._dir(info.id) / info.reference).read_bytes()
        except FileNotFoundError:
            raise VoiceError("NOT_FOUND", f"voice {info.id!r} not found") from None
        except OSError as e:
            raise VoiceError("BROKEN", f"voice {info.id!r}: reference clip unreadable ({e.strerror})") from None
        h = hashlib.sha256(data)
        h.update(json.dumps([info.transcript, info.mode, self.model_tag]).encode())
        return data, h.hexdigest()

    def fingerprint(self, info: VoiceInfo) -> str:
        return self._content(info)[1]

    def prompt(self, voice_id: str, tts):
        """The voice's VoicePrompt: memory (LRU + TTL, by fingerprint) -> disk (if the fingerprint
        matches) -> computed with `tts` and saved atomically."""
        from .voice import VoicePrompt

        info = self.get(voice_id)
        data, fp = self._content(info)
        now = time.monotonic()
        with self._lock:
            hit = self._mem.get(fp)
            if hit and now - hit[0] < self.ttl:
                self._mem.move_to_end(fp)
                return hit[1]
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
            try:
                prompt = tts.create_voice_prompt(data, ref_text=info.transcript or None, x_vector_only=info.mode == "xvector")
            except Exception as e:  # noqa: BLE001 - the clip passed the header check but not the decoder
                raise VoiceError("BROKEN", f"voice {voice_id!r}: could not build a prompt from the reference clip "
                                           f"({type(e).__name__})") from None
            prompt.fingerprint = fp
            self.prompt_computations += 1
            self._save_prompt(voice_id, info, fp, prompt, path)
        else:
            tts.prime_voice(prompt)  # loaded: its codec state now, not on its first request
        with self._lock:
            self._mem[fp] = (now, prompt)
            self._mem.move_to_end(fp)
            while len(self._mem) > self.cache_size:
                self._mem.popitem(last=False)
        return prompt

    def _save_prompt(self, voice_id: str, info: VoiceInfo, fp: str, prompt, path: Path) -> None:
        """Write the disk cache only if the voice is still the one it was computed for (under the
        lock: a voice deleted or replaced meanwhile by another process is not resurrected)."""
        try:
            with self.locked():
                cur = self.get(voice_id)
                if self._content(cur)[1] == fp:
                    prompt.save(path)
        except (OSError, VoiceError):
            pass  # gone, replaced, or a read-only store: it still works, just without the disk cache

    def default_prompt(self, tts):
        """(VoicePrompt or None, warning or None): the default voice, or no reference at all."""
        if not self.default_id:
            return None, "no default voice configured: speaking without a reference voice"
        try:
            return self.prompt(self.default_id, tts), None
        except VoiceError as e:
            return None, f"default voice unusable ({e.message}): speaking without a reference voice"


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def wav_bytes(wav, sr: int = 24000) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, wav, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()
