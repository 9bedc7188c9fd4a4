"""`Qwen3TTS`: the library facade (the official `Qwen3TTSModel` wrapper: `generate_voice_clone`,
`create_voice_clone_prompt`, `extract_speaker_embedding`), plus frame-by-frame `stream`.

    tts = Qwen3TTS.from_pretrained("Qwen/Qwen3-TTS-12Hz-0.6B-Base")   # or a local directory
    voice = tts.create_voice_prompt(ref_audio="me.wav", ref_text="what I say in the clip")
    out = tts.generate("Hello!", language="English", voice=voice)    # out.codes, out.audio
    for chunk in tts.stream("Hello!", voice=voice):                  # 80 ms per frame
        play(chunk.audio)
    out = tts.generate("Hello!", voice="default")   # the built-in voice (qwen3tts.builtin_voice)
    out = tts.generate("Hello!")                    # voice=None: no reference (official default)

Audio: ICL mode decodes `ref_codes ++ frames` (the reference gives the causal codec its acoustic
context) and drops the reference part: `generate` cuts at `int(ref_len / total_len * wav_len)`
as the official wrapper does (float64; up to one sample before `ref_len * 1920`), `stream`
starts the streaming decoder from the state after the reference codes, computed once when the
voice is created or loaded (`prime_voice`) and kept with the voice. The decode is the exact single pass
(identical to the official 300/25 chunked decode up to 300 frames, and better after).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .audio import load_audio
from .batch import AudioChunk, Utterance, piece_settings, step, step_alone  # noqa: F401 (AudioChunk, step: public here too)
from .codec.tokenizer import SpeechTokenizer
from .config import QUANTIZE_MODES, GenerationDefaults, Qwen3TTSConfig
from .generator import FrameGenerator, GenerationSettings
from .model.speaker_encoder import SpeakerEncoder, log_mel
from .model.talker import Talker
from .prompt import build_prompt, supported_languages
from .sampling import SamplingParams
from .text import TextTokenizer
from .textsplit import DEFAULT_BUDGET, split_text
from .voice import VoicePrompt
from .weights import limit_heap_retention, load_into, read_safetensors, release_freed_memory, split_by_prefix


# Runaway guard: a piece may produce at most BASE + PER_TOKEN * (text tokens) frames. Speech runs
# at ~3 text tokens/s (English; CJK ~4 chars/s) = ~4 frames per token, so 8 frames (0.64 s) per
# token plus 2 s is a generous ceiling that only a generation that does not stop reaches.
FRAME_CEILING_PER_TOKEN = 8
FRAME_CEILING_BASE = 25


@dataclass
class GenerationResult:
    codes: torch.Tensor  # (N, 16) int64, EOS frame excluded
    audio: torch.Tensor  # (samples,) float32 at `sample_rate`
    sample_rate: int = 24000
    stopped_by_eos: bool = False
    warnings: list[str] = field(default_factory=list)
    trace: dict | None = None


class Qwen3TTS:
    def __init__(self, path: Path, config: Qwen3TTSConfig, device="cpu", dtype=torch.float32, regex: str = "qwen2"):
        self.path = Path(path)
        self.config = config
        self.device = torch.device(device)
        self.dtype = dtype
        self.text_tokenizer = TextTokenizer.from_pretrained(self.path, regex=regex)
        with torch.device("meta"):  # no storage until the weights are loaded (weights.load_into makes it)
            self.talker = Talker(config.talker).to(dtype=dtype).eval().requires_grad_(False)
        self.speaker_encoder = None
        if config.tts_model_type == "base":
            self.speaker_encoder = SpeakerEncoder(config.speaker_encoder).to(self.device, dtype).eval().requires_grad_(False)
        self.defaults = GenerationDefaults.from_file(self.path)
        self.speech_tokenizer: SpeechTokenizer | None = None
        self._generator: FrameGenerator | None = None  # built on first use, after the weights are loaded
        self.codec_batch = None  # a cuda_graph.CodecBatch decoding frames in fixed shapes (`set_cuda_graphs`)
        self.sample_rate = 24000
        self.samples_per_frame = 1920
        self.piece_budget = DEFAULT_BUDGET
        self.last_warnings: list[str] = []
        self.codec_primings = 0  # streaming codec states primed with a voice's reference codes (see prime_voice)

    @property
    def generator(self) -> FrameGenerator:
        """The frame generator over the talker (made once its weights are loaded)."""
        if self._generator is None:
            if self.talker.model.codec_embedding.weight.is_meta:
                raise RuntimeError("the talker has no weights yet: use Qwen3TTS.from_pretrained (or weights.load_into)")
            self._generator = FrameGenerator(self.talker, self.config.talker.codec_eos_token_id)
        return self._generator

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, name_or_path=None, device="cpu", dtype=torch.float32, regex: str = "qwen2", progress=None,
                        quantize: str | None = None, cuda_graphs=None) -> "Qwen3TTS":
        """A local model directory or a hub id (default: Qwen/Qwen3-TTS-12Hz-0.6B-Base).
        `quantize`: "int8" (weight-only int8 talker and code predictor), "w8a8" (int8 weights
        and activations) or "w4a8" (int4 weights of the decoder stacks, int8 activations: the
        fastest on CPU); all drift from fp32, see docs/benchmarks.md. `cuda_graphs`: "auto" (default; env QWEN3TTS_CUDA_GRAPHS), "on" or
        "off": frames through the fixed-shape batched step (`static_batch`), captured as CUDA
        graphs on a GPU; auto turns it on for CUDA devices."""
        from .hub import resolve_model

        path = resolve_model(name_or_path)
        limit_heap_retention()  # freed activations go back to the system (weights.py)
        tts = cls(path, Qwen3TTSConfig.from_file(path), device=device, dtype=dtype, regex=regex)
        if progress:
            progress("weights", 0.0)
        if quantize not in (None, "none") and quantize not in QUANTIZE_MODES:
            raise ValueError(f"quantize must be None or one of {', '.join(QUANTIZE_MODES)}, not {quantize!r}")
        tensors = read_safetensors(path / "model.safetensors")  # read tensor by tensor, nothing mapped
        talker, spk = split_by_prefix(tensors, ("talker.", "speaker_encoder."), "model.safetensors")
        each_layer = None
        if quantize not in (None, "none"):  # quantize each decoder layer as it is read
            from .quant import layer_quantizer

            quantize_layer = layer_quantizer(tts.talker, quantize, tts.device)

            def each_layer(layer):  # the layer's float weights go back to the system at once
                quantize_layer(layer)
                release_freed_memory()
        tts.talker.load(talker, device=tts.device, each_layer=each_layer)
        tts.quantize(quantize)  # the heads, and the native decode stacks
        if tts.speaker_encoder is not None:
            load_into(tts.speaker_encoder, spk, what="speaker encoder weights")
        del tensors, talker, spk
        if progress:
            progress("weights", 0.7)
        tts.speech_tokenizer = SpeechTokenizer.from_pretrained(path / "speech_tokenizer", device=device, dtype=dtype)
        if quantize not in (None, "none"):  # w8a8 / w4a8: the codec decoder's few-row products in int8
            from .codec_quant import quantize_decoder

            quantize_decoder(tts.speech_tokenizer.decoder, quantize)
        release_freed_memory()
        tts.set_cuda_graphs(cuda_graphs)
        if progress:
            progress("weights", 1.0)
        return tts

    def set_cuda_graphs(self, option=None, capacity: int | None = None) -> bool:
        """Run frames through `static_batch.StaticBatch` (fixed shapes; captured as CUDA graphs
        on a GPU, eager elsewhere) or through the eager path: `option` as in `from_pretrained`.
        `capacity`: talker positions per session (prompt + one text piece's frames; a session
        that does not fit runs eagerly). Switch between requests, not while one is being
        spoken. Returns whether the static path is on."""
        from .cuda_graph import CodecBatch
        from .static_batch import DEFAULT_CAPACITY, StaticBatch, use_graphs

        on = use_graphs(self.device, option)
        self.generator.static = StaticBatch(self.generator, capacity or DEFAULT_CAPACITY) if on else None
        self.codec_batch = CodecBatch(self.speech_tokenizer) if on and self.speech_tokenizer is not None else None
        return on

    def quantize(self, mode: str | None) -> None:
        if mode in (None, "none"):
            return
        if mode not in QUANTIZE_MODES:
            raise ValueError(f"quantize must be None or one of {', '.join(QUANTIZE_MODES)}, not {mode!r}")
        from .quant import quantize_talker

        quantize_talker(self.talker, mode)
        if self.speech_tokenizer is not None:
            from .codec_quant import quantize_decoder

            quantize_decoder(self.speech_tokenizer.decoder, mode)

    @property
    def languages(self) -> list[str]:
        return supported_languages(self.config)

    # ------------------------------------------------------------------ voices
    @torch.inference_mode()
    def speaker_embedding(self, wav, sample_rate: int | None = None) -> torch.Tensor:
        """x-vector of a clip (any rate; resampled to 24 kHz): FloatTensor (enc_dim,)."""
        if self.speaker_encoder is None:
            raise ValueError("this checkpoint has no speaker encoder (only Base models clone voices)")
        x = torch.from_numpy(load_audio(wav, sample_rate, self.config.speaker_encoder.sample_rate))
        mel = log_mel(x.to(self.device), sr=self.config.speaker_encoder.sample_rate, n_mels=self.config.speaker_encoder.mel_dim)
        return self.speaker_encoder(mel.to(self.dtype))[0].float().cpu()

    @torch.inference_mode()
    def create_voice_prompt(self, ref_audio, ref_text: str | None = None, x_vector_only: bool = False, sample_rate: int | None = None) -> VoicePrompt:
        """`ref_audio`: a path, bytes, (samples, rate), or samples with `sample_rate`."""
        wav = load_audio(ref_audio, sample_rate, 24000)
        emb = self.speaker_embedding(wav, 24000)
        if x_vector_only:
            return VoicePrompt(emb, None, ref_text, "xvector", len(wav) / 24000)
        if not (ref_text or "").strip():
            raise ValueError("ICL voice cloning needs ref_text (the transcript of the clip); or pass x_vector_only=True")
        codes = self.speech_tokenizer.encode(wav, 24000)
        voice = VoicePrompt(emb, codes, ref_text, "icl", len(wav) / 24000)
        self.prime_voice(voice)
        return voice

    @torch.inference_mode()
    def prime_voice(self, voice: VoicePrompt) -> bool:
        """Compute the streaming codec state after an ICL voice's reference codes (the acoustic
        context every stream of the voice starts from) and keep it with the voice, so no request
        pays it. `create_voice_prompt` and the voices store call this when a voice is created or
        loaded; a voice made otherwise is primed on its first stream. Returns True when the
        state was computed now, False when the voice already had it (or is x-vector only)."""
        if voice is None or not voice.icl or voice.primed_state(self.speech_tokenizer) is not None:
            return False
        dec = self.speech_tokenizer.streaming_decoder()
        dec.push(voice.ref_codes)
        voice.keep_primed_state(self.speech_tokenizer, (dec.state.bufs, dec.state.frames()))  # the decoder's own tensors: no copy
        del dec
        release_freed_memory()  # the many-frame push's activations go back to the system, not to the heap's free lists
        self.codec_primings += 1
        return True

    # ------------------------------------------------------------------ generation
    def settings(self, do_sample=None, top_k=None, top_p=None, temperature=None, repetition_penalty=None, subtalker_dosample=None,
                 subtalker_top_k=None, subtalker_top_p=None, subtalker_temperature=None, max_new_tokens=None, seed=None) -> GenerationSettings:
        d = self.defaults

        def v(x, dflt):
            return dflt if x is None else x

        return GenerationSettings(
            talker=SamplingParams(v(do_sample, d.do_sample), v(temperature, d.temperature), v(top_k, d.top_k), v(top_p, d.top_p)),
            subtalker=SamplingParams(v(subtalker_dosample, d.subtalker_dosample), v(subtalker_temperature, d.subtalker_temperature),
                                     v(subtalker_top_k, d.subtalker_top_k), v(subtalker_top_p, d.subtalker_top_p)),
            repetition_penalty=v(repetition_penalty, d.repetition_penalty),
            max_new_tokens=v(max_new_tokens, d.max_new_tokens),
            seed=seed,
        )

    @property
    def speakers(self) -> list[str]:
        """Preset speakers of a CustomVoice checkpoint (empty for Base / VoiceDesign)."""
        return sorted(self.config.talker.spk_id)

    def _speaker(self, speaker: str | None, language):
        """CustomVoice: (speaker vector = its codec embedding row, language after the dialect rule)."""
        tc = self.config.talker
        key = speaker.strip().lower()
        if key not in tc.spk_id:
            raise ValueError(f"unknown speaker {speaker!r}; this checkpoint has: {', '.join(self.speakers) or 'none'}")
        vec = self.talker.codec_embed(torch.tensor([tc.spk_id[key]], device=self.device))[0]
        dialect = tc.spk_is_dialect.get(key)
        if dialect and (language or "auto").strip().lower() in ("auto", "chinese") and dialect in tc.codec_language_id:
            language = dialect  # official: a dialect speaker speaking Chinese/auto uses its dialect id
        return vec, language

    def _prompt(self, text: str, language, voice: VoicePrompt | None, non_streaming_mode: bool, speaker: str | None = None,
                instruct: str | None = None):
        tt, kind = self.text_tokenizer, self.config.tts_model_type
        if voice is not None and kind != "base":
            raise ValueError(f"voice cloning needs a Base checkpoint (this one is {kind!r})")
        if speaker is not None and kind != "custom_voice":
            raise ValueError("preset speakers need a CustomVoice checkpoint")
        if kind == "custom_voice" and speaker is None:
            raise ValueError(f"a CustomVoice checkpoint needs speaker=...; one of: {', '.join(self.speakers)}")
        if instruct and kind == "base":
            raise ValueError("instruct text needs a CustomVoice (1.7B) or VoiceDesign checkpoint")
        if instruct and kind == "custom_voice" and self.config.tts_model_size == "0b6":
            raise ValueError("the 0.6B CustomVoice checkpoint does not take instruct text (the 1.7B one does)")
        ids = tt.encode(tt.assistant_text(text))
        ref_ids = tt.encode(tt.ref_text(voice.ref_text)) if voice is not None and voice.icl else None
        spk = voice.speaker_embedding if voice is not None else None
        if speaker is not None:
            spk, language = self._speaker(speaker, language)
        return build_prompt(
            self.talker, self.config, ids, language, speaker=spk,
            ref_ids=ref_ids, ref_codes=voice.ref_codes if voice is not None and voice.icl else None,
            non_streaming=non_streaming_mode, instruct_ids=tt.encode(tt.instruct_text(instruct)) if instruct else None,
        )

    def _pieces(self, text: str, split: bool) -> list[str]:
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text is empty")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text is not valid Unicode (it contains lone surrogates)") from None
        return split_text(text, self.piece_budget) if split else [text]

    def _plan(self, text, language, voice, non_streaming_mode, split, kw) -> "_Plan":
        """Validate a request and build every piece's prompt before the first frame."""
        kw = dict(kw)
        speaker, instruct = kw.pop("speaker", None), kw.pop("instruct", None)
        if voice is not None and not isinstance(voice, VoicePrompt):
            raise TypeError("voice must be a VoicePrompt (see create_voice_prompt) or None")
        pieces = self._pieces(text, split)
        settings = self.settings(**kw)
        settings.validate()
        seed = settings.seed
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not -2**63 <= seed <= 2**64 - len(pieces)):
            # piece i is seeded with seed + i (piece_settings): every one must fit torch's 64-bit seed
            raise ValueError(f"seed must be an integer in [-2**63, 2**64 - {len(pieces)}] for this text of {len(pieces)} piece(s)")
        prompts = [self._prompt(piece, language, voice, non_streaming_mode, speaker, instruct) for piece in pieces]
        ceilings = [FRAME_CEILING_BASE + FRAME_CEILING_PER_TOKEN * len(self.text_tokenizer.encode(p)) for p in pieces]
        return _Plan(prompts, settings, ceilings)

    @torch.inference_mode()
    def generate(self, text: str, language: str | None = "auto", voice: VoicePrompt | str | None = None, non_streaming_mode: bool | None = None,
                 split: bool = True, trace: bool = False, on_frame=None, **kw) -> GenerationResult:
        """Whole utterance: codes (N, 16) and audio. Text longer than `piece_budget` characters is
        split at sentence / clause boundaries and generated piece by piece (`split=False` to
        disable); `max_new_tokens` applies per piece. CustomVoice checkpoints take `speaker=`
        (and on 1.7B `instruct=`), VoiceDesign checkpoints `instruct=`; their
        `non_streaming_mode` defaults to True as in the official wrapper (Base: False).
        `on_frame(n)`: called after each generated frame with the count so far (progress)."""
        u = Utterance(self, text, language, voice, non_streaming_mode, split=split, decode=False, trace=trace, **kw)  # validates
        while not u.done:  # the frames of all pieces, one after the other (same voice, same settings)
            n = len(u.buf)
            step_alone(self, u)
            if on_frame is not None and len(u.buf) > n:
                on_frame(len(u.buf))
        voice, frames = u.voice, u.buf
        G = self.config.talker.num_code_groups
        codes = torch.stack(frames) if frames else torch.zeros(0, G, dtype=torch.long)
        if voice is not None and voice.icl:
            ref = voice.ref_codes
            full = torch.cat([ref, codes])
            wav = self.speech_tokenizer.decode(full)
            cut = int(ref.shape[0] / full.shape[0] * wav.shape[0])  # official: float ratio, may be 1 short
            audio = wav[cut:]
        else:
            audio = self.speech_tokenizer.decode(codes) if codes.shape[0] else torch.zeros(0)
        tr = None
        if u.traced is not None:
            st = u.traced
            tr = {k: torch.stack(v) if v else None for k, v in st.trace.items()}
            tr["prefill_embeds"] = st.prompt.prefill
            tr["trailing_text_hidden"] = st.prompt.trailing
        return GenerationResult(codes, audio, self.sample_rate, u.stopped_by_eos, u.warnings, tr)

    def _prime(self, dec, voice: VoicePrompt) -> None:
        """Start `dec` (a fresh StreamingDecoder) from a copy of the voice's primed codec state."""
        self.prime_voice(voice)  # no-op when the voice was primed at creation / load
        dec.state.restore(voice.primed_state(self.speech_tokenizer))

    @staticmethod
    def frame_ceiling() -> tuple[int, int]:
        """(base, per text token): a text piece is cut after base + per_token x its tokens frames."""
        return FRAME_CEILING_BASE, FRAME_CEILING_PER_TOKEN

    def resolve_voice(self, voice):
        """`voice` as a `VoicePrompt` or None: `"default"` is the built-in voice (`builtin_voice`,
        made by this model once), None is no reference (the official model's default)."""
        if isinstance(voice, str):
            from . import builtin_voice

            if voice not in (builtin_voice.DEFAULT_ALIAS, builtin_voice.BUILTIN_ID):
                raise ValueError(f"unknown voice {voice!r}: pass a VoicePrompt, None or 'default' (the built-in voice)")
            try:
                return builtin_voice.prompt(self)
            except builtin_voice.VoiceError as e:
                raise ValueError(e.message) from None
        return voice

    def _nsm(self, v):
        return (self.config.tts_model_type != "base") if v is None else bool(v)

    @torch.inference_mode()
    def stream(self, text: str, language: str | None = "auto", voice: VoicePrompt | str | None = None, non_streaming_mode: bool | None = None,
               frames_per_chunk: int = 1, split: bool = True, **kw):
        """Yield `AudioChunk`s of `frames_per_chunk` frames (the last may be shorter) as they are
        generated; the exact streaming codec decoder turns each into PCM at once, and keeps
        running across the pieces of a long text. Equals `generate(...).audio`."""
        u = Utterance(self, text, language, voice, non_streaming_mode, frames_per_chunk, split, **kw)  # validates everything
        while not u.done:
            chunk = step_alone(self, u)
            if chunk is not None:
                yield chunk
        self.last_warnings = u.warnings

    def stream_text(self, chunks, language: str | None = "auto", voice: VoicePrompt | None = None, non_streaming_mode: bool | None = None,
                    frames_per_chunk: int = 1, split: bool = True, lookahead: int = 0, **kw):
        """`stream` for text that is still being written (an LLM's tokens): `chunks` is an
        iterable or async iterable of text pieces (any cut, inside words too), or a
        `TextStream` another thread / task pushes into (`push(text)`, `end()`). Speech starts
        after the first words and takes the rest as it arrives; a generator (an async generator
        for an async iterable) of `AudioChunk`s, the same samples as `stream(whole text)` (see
        `textfeed` for when). `lookahead`: hold that many text tokens before starting."""
        from .textfeed import stream_text

        return stream_text(self, chunks, language, voice, non_streaming_mode, frames_per_chunk, split, lookahead, **kw)

    def warm_up(self, frames: int = 3) -> float:
        """Run one short greedy synthesis (no reference voice, `frames` frames, 1-frame chunks)
        and return its seconds: the first call after loading pays one-time costs (the native
        library's load, oneDNN's kernel generation and weight packing, first-touch allocations:
        first audio ~280 vs ~95 ms on the CPU of docs/benchmarks.md), which a server pays at
        startup instead of in its first request."""
        t0 = time.perf_counter()
        for _ in self.stream("Hello.", language="auto", frames_per_chunk=1, max_new_tokens=max(1, frames),
                             do_sample=False, subtalker_dosample=False):
            pass
        return time.perf_counter() - t0


@dataclass
class _Plan:
    prompts: list
    settings: GenerationSettings
    ceilings: list[int]

    def piece_settings(self, i: int) -> GenerationSettings:
        return piece_settings(self.settings, i, self.ceilings[i])
