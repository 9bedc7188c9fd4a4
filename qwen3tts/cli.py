"""`python -m qwen3tts` / `qwen3tts`: say, voices, download, dev.

    qwen3tts say "Hello there." -o hello.wav
    qwen3tts say "Hello." --ref-audio me.wav --ref-text "What I say in the clip." -o out.wav
    qwen3tts voices add me.wav --transcript "What I say in the clip." --name Me
    qwen3tts say "Hello." --voice me --stream --stdout-pcm | aplay -r 24000 -f S16_LE
    my-llm | qwen3tts say - --stream --stdout-pcm | aplay ...   # speaks as the text arrives
    qwen3tts download Qwen/Qwen3-TTS-12Hz-0.6B-Base
    qwen3tts dev random-model --preset 0.6b-base /tmp/random-0.6b

Exit codes: 0 ok, 1 failure (message on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .config import QUANTIZE_MODES

DEFAULT_VOICES_DIR = Path(os.environ.get("QWEN3TTS_VOICES_DIR", Path.home() / ".local" / "share" / "qwen3tts" / "voices"))


class CLIError(Exception):
    pass


def _model_arg(p):
    p.add_argument("--model", default=os.environ.get("QWEN3TTS_MODEL"), help="model directory or hub id (default: Qwen/Qwen3-TTS-12Hz-0.6B-Base)")
    p.add_argument("--device", default=os.environ.get("QWEN3TTS_DEVICE", "cpu"))
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--quantize", default="none", choices=list(QUANTIZE_MODES),
                   help="; ".join(f"{k}: {v}" for k, v in QUANTIZE_MODES.items()))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="qwen3tts", description="Qwen3-TTS text to speech (voice cloning, streaming).")
    sub = ap.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("say", help="speak text to a WAV file or raw PCM on stdout")
    s.add_argument("text", help="the text to speak ('-' reads standard input)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--voice", help="a voice id from the voices store")
    g.add_argument("--ref-audio", type=Path, help="reference clip to clone (3-30 s)")
    s.add_argument("--ref-text", help="transcript of --ref-audio (ICL cloning); without it: x-vector only")
    s.add_argument("--language", default="auto")
    out = s.add_mutually_exclusive_group()
    out.add_argument("-o", "--output", type=Path, help="output WAV (default: out.wav)")
    out.add_argument("--stdout-pcm", action="store_true", help="raw PCM16 little-endian mono 24 kHz on stdout")
    s.add_argument("--seed", type=int)
    s.add_argument("--greedy", action="store_true", help="greedy decoding (deterministic, parity mode)")
    s.add_argument("--max-new-tokens", type=int)
    s.add_argument("--stream", action="store_true", help="write audio as frames are generated")
    s.add_argument("--voices-dir", type=Path, default=DEFAULT_VOICES_DIR)
    s.add_argument("-v", "--verbose", action="store_true")
    _model_arg(s)

    v = sub.add_parser("voices", help="manage the voices store")
    vs = v.add_subparsers(dest="vcmd", required=True)
    va = vs.add_parser("add", help="add a voice from a clip")
    va.add_argument("audio", type=Path)
    va.add_argument("--transcript", default="", help="exact words of the clip (ICL mode); empty: x-vector only")
    va.add_argument("--name")
    va.add_argument("--id", dest="voice_id")
    va.add_argument("--language", default="auto")
    va.add_argument("--description", default="")
    vl = vs.add_parser("list", help="list voices")
    vr = vs.add_parser("rm", help="remove a voice")
    vr.add_argument("voice_id")
    for p in (va, vl, vr):
        p.add_argument("--voices-dir", type=Path, default=DEFAULT_VOICES_DIR)

    d = sub.add_parser("download", help="download a model from the Hugging Face hub into its cache")
    d.add_argument("model", nargs="?", default="Qwen/Qwen3-TTS-12Hz-0.6B-Base")

    dev = sub.add_parser("dev", help="developer tools")
    ds = dev.add_subparsers(dest="dcmd", required=True)
    rm = ds.add_parser("random-model", help="write a random-weight model in the official layout")
    rm.add_argument("out", type=Path)
    rm.add_argument("--preset", default="0.6b-base")
    rm.add_argument("--seed", type=int, default=0)
    rm.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    return ap


def _load_tts(args):
    import torch

    from .pipeline import Qwen3TTS

    return Qwen3TTS.from_pretrained(args.model, device=args.device, dtype=getattr(torch, args.dtype), quantize=args.quantize)


def cmd_say(args) -> int:
    import torch

    from .audio import float_to_pcm16, write_wav
    from .voices import VoiceError, VoiceStore

    incremental = args.text == "-" and args.stream  # speak stdin as it is written (e.g. an LLM piped in)
    got: list[str] = []
    text = _stdin_pieces(got) if incremental else (sys.stdin.read() if args.text == "-" else args.text)
    if not incremental and not text.strip():
        raise CLIError("text is empty")
    if args.ref_text and not args.ref_audio:
        raise CLIError("--ref-text needs --ref-audio")
    tts = _load_tts(args)
    voice = None
    if args.voice:
        store = VoiceStore(args.voices_dir, model_tag=str(tts.path))
        before = store.prompt_computations
        try:
            voice = store.prompt(args.voice, tts)
        except VoiceError as e:
            raise CLIError(e.message) from None
        if args.verbose:
            print(f"voice {args.voice}: prompt {'computed' if store.prompt_computations > before else 'loaded from cache'}", file=sys.stderr)
    elif args.ref_audio:
        voice = tts.create_voice_prompt(args.ref_audio, ref_text=args.ref_text, x_vector_only=not args.ref_text)
    kw = dict(language=args.language, voice=voice, seed=args.seed, max_new_tokens=args.max_new_tokens)
    if args.greedy:
        kw.update(do_sample=False, subtalker_dosample=False)
    if args.stdout_pcm:
        out = sys.stdout.buffer
        if args.stream:
            for chunk in (tts.stream_text(text, **kw) if incremental else tts.stream(text, **kw)):
                out.write(float_to_pcm16(chunk.audio))
                out.flush()
        else:
            out.write(float_to_pcm16(tts.generate(text, **kw).audio))
        warnings = tts.last_warnings if args.stream else []
    else:
        path = args.output or Path("out.wav")
        if args.stream:
            chunks = tts.stream_text(text, **kw) if incremental else tts.stream(text, **kw)
            audio = torch.cat([c.audio for c in chunks] or [torch.zeros(0)])
            warnings = tts.last_warnings
        else:
            res = tts.generate(text, **kw)
            audio, warnings = res.audio, res.warnings
        write_wav(path, audio, tts.sample_rate)
        if args.verbose:
            print(f"wrote {path} ({audio.shape[0] / tts.sample_rate:.2f} s)", file=sys.stderr)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if incremental and not "".join(got).strip():
        raise CLIError("text is empty")
    return 0


def _stdin_pieces(seen: list):
    """Standard input as it arrives (whatever each read returns, UTF-8 decoded incrementally)."""
    import codecs

    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while True:
        b = os.read(sys.stdin.fileno(), 4096)
        piece = dec.decode(b, final=not b)
        if piece:
            seen.append(piece)
            yield piece
        if not b:
            return


def cmd_voices(args) -> int:
    from .voices import VoiceStore

    store = VoiceStore(args.voices_dir)
    if args.vcmd == "add":
        if not args.audio.is_file():
            raise CLIError(f"audio file not found: {args.audio}")
        info = store.add(args.audio, transcript=args.transcript, name=args.name or args.audio.stem, voice_id=args.voice_id,
                         language=args.language, description=args.description)
        print(info.id)
    elif args.vcmd == "list":
        voices, broken = store.list()
        for v in voices:
            print(f"{v.id}\t{v.name}\t{v.mode}\t{v.language}\t{v.durationSec:.1f}s")
        for vid, err in broken.items():
            print(f"warning: {err}", file=sys.stderr)
    elif args.vcmd == "rm":
        store.remove(args.voice_id)
    return 0


def cmd_download(args) -> int:
    from .hub import resolve_model

    print(resolve_model(args.model, progress=True))
    return 0


def cmd_dev(args) -> int:
    from .dev.random_model import write_random_model

    print(write_random_model(args.out, preset=args.preset, seed=args.seed, dtype=args.dtype))
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .audio import AudioError
    from .hub import ModelNotAvailable
    from .voices import VoiceError

    try:
        return {"say": cmd_say, "voices": cmd_voices, "download": cmd_download, "dev": cmd_dev}[args.cmd](args)
    except (CLIError, ModelNotAvailable, AudioError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except VoiceError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
