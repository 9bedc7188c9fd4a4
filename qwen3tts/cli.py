"""`python -m qwen3tts` / `qwen3tts`: say, voices, download, dev.

    qwen3tts say "Hello there." -o hello.wav          (the built-in voice; --no-voice: no reference)
    qwen3tts say "Hello." --ref-audio me.wav --ref-text "What I say in the clip." -o out.wav
    qwen3tts voices add me.wav --transcript "What I say in the clip." --name Me
    qwen3tts say "Hello." --voice me --stream --stdout-pcm | aplay -r 24000 -f S16_LE
    my-llm | qwen3tts say - --stream --stdout-pcm | aplay ...   # speaks as the text arrives
    qwen3tts download Qwen/Qwen3-TTS-12Hz-0.6B-Base
    qwen3tts dev random-model --preset 0.6b-base /tmp/random-0.6b

Exit codes: 0 ok, 1 failure (message on stderr), 2 bad usage. Long work shows a progress bar on
stderr when it is a terminal (`--quiet` hides it); `say` ends with one summary line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .settings import MODEL_SETTINGS, add_arguments, setting


class CLIError(Exception):
    pass


def _model_arg(p):
    """--model, --device, --dtype, --quantize: the settings table the server reads too."""
    add_arguments(p, MODEL_SETTINGS, skip=("voices-dir",))


def _voices_dir_arg(p):
    """--voices-dir: the server's default store too (QWEN3TTS_VOICES_DIR, XDG_DATA_HOME)."""
    add_arguments(p, [setting("voices-dir")])


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="qwen3tts", description="Qwen3-TTS text to speech (voice cloning, streaming).")
    sub = ap.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("say", help="speak text to a WAV file or raw PCM on stdout")
    s.add_argument("text", help="the text to speak ('-' reads standard input)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--voice", help="a voice id from the voices store (default: the built-in voice arctic-slt)")
    g.add_argument("--no-voice", action="store_true", help="speak without a reference voice (out of distribution for Base models)")
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
    _voices_dir_arg(s)
    s.add_argument("-v", "--verbose", action="store_true")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary line")
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
        _voices_dir_arg(p)
    va.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    d = sub.add_parser("download", help="download a model from the Hugging Face hub into its cache")
    d.add_argument("model", nargs="?", default="Qwen/Qwen3-TTS-12Hz-0.6B-Base")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

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

    from .settings import resolve_dtype

    dtype = resolve_dtype(args.dtype, args.device)
    return Qwen3TTS.from_pretrained(args.model, device=args.device, dtype=getattr(torch, dtype), quantize=args.quantize)


def cmd_say(args) -> int:
    import time

    import torch

    from . import progress
    from .audio import float_to_pcm16, write_wav
    from .builtin_voice import VoiceStoreWithBuiltin
    from .voices import VoiceError

    t0 = time.monotonic()
    incremental = args.text == "-" and args.stream  # speak stdin as it is written (e.g. an LLM piped in)
    got: list[str] = []
    text = _stdin_pieces(got) if incremental else (sys.stdin.read() if args.text == "-" else args.text)
    if not incremental and not text.strip():
        raise CLIError("text is empty")
    if args.ref_text and not args.ref_audio:
        raise CLIError("--ref-text needs --ref-audio")
    on = progress.enabled(args.quiet)
    if on:
        sys.stderr.write("loading the model...\r")
        sys.stderr.flush()
    tts = _load_tts(args)
    voice = None
    if args.voice:
        store = VoiceStoreWithBuiltin(args.voices_dir, model_tag=str(tts.path))
        before = store.prompt_computations
        try:
            voice = store.prompt(args.voice, tts)
        except VoiceError as e:
            raise CLIError(e.message) from None
        if args.verbose:
            print(f"voice {args.voice}: prompt {'computed' if store.prompt_computations > before else 'loaded from cache'}", file=sys.stderr)
    elif args.ref_audio:
        voice = tts.create_voice_prompt(args.ref_audio, ref_text=args.ref_text, x_vector_only=not args.ref_text)
    elif not args.no_voice and tts.config.tts_model_type == "base":
        voice = "default"  # the built-in voice (qwen3tts.builtin_voice)
    kw = dict(language=args.language, voice=voice, seed=args.seed, max_new_tokens=args.max_new_tokens)
    if args.greedy:
        kw.update(do_sample=False, subtalker_dosample=False)
    bar = progress.Bar("say", progress.estimate_frames(text) if not incremental else 1, on and not incremental)
    t_synth = time.monotonic()

    def chunks():
        n = 0
        for c in (tts.stream_text(text, **kw) if incremental else tts.stream(text, **kw)):
            n += c.codes.shape[0]
            bar.update(n, f"{n / 12.5:.1f} s of audio")
            yield c

    def generate():
        return tts.generate(text, on_frame=lambda n: bar.update(n, f"{n / 12.5:.1f} s of audio"), **kw)

    samples = 0
    try:
        if args.stdout_pcm:
            target = "PCM16 24 kHz mono to standard output"
            out = sys.stdout.buffer
            if args.stream:
                for chunk in chunks():
                    out.write(float_to_pcm16(chunk.audio))
                    out.flush()
                    samples += chunk.audio.shape[0]
                warnings = tts.last_warnings
            else:
                res = generate()
                out.write(float_to_pcm16(res.audio))
                samples, warnings = res.audio.shape[0], res.warnings
        else:
            path = args.output or Path("out.wav")
            target = str(path)
            if args.stream:
                audio = torch.cat([c.audio for c in chunks()] or [torch.zeros(0)])
                warnings = tts.last_warnings
            else:
                res = generate()
                audio, warnings = res.audio, res.warnings
            write_wav(path, audio, tts.sample_rate)
            samples = audio.shape[0]
    finally:
        bar.close()
    t_end = time.monotonic()
    if incremental and not "".join(got).strip():
        raise CLIError("text is empty")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if not args.quiet:
        print(progress.summary(target, samples / tts.sample_rate, t_end - t0, t_end - t_synth, list(warnings)), file=sys.stderr)
    return 0


def _stdin_pieces(seen: list):
    """Standard input as it arrives (whatever each read returns, UTF-8 decoded incrementally)."""
    import codecs
    import os

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
    from . import progress
    from .builtin_voice import VoiceStoreWithBuiltin

    store = VoiceStoreWithBuiltin(args.voices_dir)
    if args.vcmd == "add":
        if not args.audio.is_file():
            raise CLIError(f"audio file not found: {args.audio}")
        bar = progress.Bar("voices add", 2, progress.enabled(args.quiet))
        bar.update(1, f"reading and checking {args.audio.name}", force=True)
        try:
            info = store.add(args.audio, transcript=args.transcript, name=args.name or args.audio.stem, voice_id=args.voice_id,
                             language=args.language, description=args.description)
            bar.update(2, "stored", force=True)
        finally:
            bar.close()
        print(info.id)
        if not args.quiet:
            print(f"added voice {info.id!r} ({info.mode}, {info.durationSec:.1f} s clip) to {store.root}; its prompt is computed on first use",
                  file=sys.stderr)
    elif args.vcmd == "list":
        voices, broken = store.list()
        for v in sorted(voices, key=lambda v: v.public().get("builtIn", False)):  # stored voices, then the built-in one
            extra = "\tbuilt-in" if v.public().get("builtIn") else ""
            print(f"{v.id}\t{v.name}\t{v.mode}\t{v.language}\t{v.durationSec:.1f}s{extra}")
        for vid, err in broken.items():
            print(f"warning: {err}", file=sys.stderr)
    elif args.vcmd == "rm":
        store.remove(args.voice_id)
    return 0


def cmd_download(args) -> int:
    import time

    from . import progress
    from .hub import resolve_model

    t0 = time.monotonic()
    path = resolve_model(args.model, progress=progress.enabled(args.quiet))
    print(path)
    if not args.quiet:
        size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
        print(f"model {args.model} in {path}: {size / 1e9:.2f} GB, {time.monotonic() - t0:.1f} s", file=sys.stderr)
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
