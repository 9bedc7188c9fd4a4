"""Write a random-weight model directory in the official Qwen3-TTS layout.

    python -m qwen3tts dev random-model --preset 0.6b-base OUT

The directory has the official file set (config.json, generation_config.json,
preprocessor_config.json, tokenizer_config.json, vocab.json, merges.txt, model.safetensors,
speech_tokenizer/{config.json, preprocessor_config.json, model.safetensors}) with the official
tensor names and shapes, so it loads here and in the official package alike. Tensor names come
from our module trees, which load the official fixtures strictly, plus the few official tensors
that inference never reads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..config import Qwen3TTSConfig, SpeechTokenizerConfig
from ..weights import TensorView
from .random_init import random_tensor

PRESETS = Path(__file__).resolve().parent.parent / "presets"

# The other 12 Hz checkpoints, as overrides of the 0.6B-Base files. Shapes follow talker.md
# (1.7B: talker hidden 2048 with a 2048 -> 1024 `small_to_mtp_projection` into the unchanged
# 1024-wide code predictor; the x-vector must match the talker width). The CustomVoice speaker
# and dialect ids are placeholders in the documented ranges (only `ryan: 3061` is confirmed):
# a real checkpoint brings its own config.json, which is always what the code reads.
_SPEAKERS = {"vivian": 3065, "serena": 3066, "uncle_fu": 3010, "dylan": 2878, "eric": 2875, "ryan": 3061, "aiden": 2861,
             "ono_anna": 2873, "sohee": 2864}
_1P7 = {"talker_config": {"hidden_size": 2048, "intermediate_size": 6144}, "tts_model_size": "1b7"}
_CUSTOM = {"tts_model_type": "custom_voice",
           "talker_config": {"spk_id": _SPEAKERS, "spk_is_dialect": {"dylan": "beijing_dialect", "eric": "sichuan_dialect"},
                             "codec_language_id": {"beijing_dialect": 2074, "sichuan_dialect": 2062}}}
_DESIGN = {"tts_model_type": "voice_design"}
VARIANTS = {
    "0.6b-base": {},
    "1.7b-base": {"config.json": {**_1P7, "speaker_encoder_config": {"enc_dim": 2048}}},
    "0.6b-customvoice": {"config.json": _CUSTOM},
    "1.7b-customvoice": {"config.json": {**_CUSTOM, **_1P7, "talker_config": {**_CUSTOM["talker_config"], **_1P7["talker_config"]}}},
    "1.7b-voicedesign": {"config.json": {**_DESIGN, **_1P7}},
}


def _shapes(module: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def speech_tokenizer_shapes(cfg: SpeechTokenizerConfig) -> dict[str, tuple]:
    from ..codec.decoder import CodecDecoder
    from ..codec.encoder import CodecEncoder

    with torch.device("meta"):
        dec, enc = CodecDecoder(cfg.decoder), CodecEncoder(cfg.encoder)
    shapes = {f"decoder.{k}": s for k, s in _shapes(dec).items()}
    shapes.update({f"encoder.{k}": s for k, s in _shapes(enc).items()})
    e = cfg.encoder
    n_sem = e.num_semantic_quantizers
    for branch, n in (("semantic", n_sem), ("acoustic", e.num_quantizers - n_sem)):
        p = f"encoder.quantizer.{branch}_residual_vector_quantizer"
        shapes[f"{p}.output_proj.weight"] = (e.hidden_size, e.vq_hidden, 1)
        for i in range(n):
            shapes[f"{p}.layers.{i}.codebook.initialized"] = (1,)
    return shapes


def model_shapes(cfg: Qwen3TTSConfig) -> dict[str, tuple]:
    from ..model.speaker_encoder import SpeakerEncoder
    from ..model.talker import Talker

    with torch.device("meta"):
        talker = Talker(cfg.talker)
        shapes = {f"talker.{k}": s for k, s in _shapes(talker).items()}
        if cfg.tts_model_type == "base":
            shapes.update({f"speaker_encoder.{k}": s for k, s in _shapes(SpeakerEncoder(cfg.speaker_encoder)).items()})
    return shapes


def random_state(shapes: dict[str, tuple], seed: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    return {k: random_tensor(k, s, seed).to(dtype).contiguous() for k, s in sorted(shapes.items())}


def write_random_model(out: str | Path, preset: str = "0.6b-base", seed: int = 0, dtype: str = "bfloat16",
                       config_overrides: dict | None = None, weights: bool = True) -> Path:
    """Write a full model directory from a preset's JSON files (optionally deep-merged overrides,
    keyed by file: {"config.json": {...}, "speech_tokenizer/config.json": {...}}). With
    `weights=False` only the JSON and tokenizer files are written (see `random_tts`)."""
    out = Path(out)
    if preset not in VARIANTS:
        raise ValueError(f"unknown preset {preset!r}; available: {', '.join(VARIANTS)}")
    src = PRESETS / "0.6b-base"
    config_overrides = _merged(VARIANTS[preset], config_overrides or {})
    (out / "speech_tokenizer").mkdir(parents=True, exist_ok=True)
    for f in src.rglob("*.json"):
        dst = out / f.relative_to(src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dst)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(PRESETS / "qwen_tokenizer" / f, out / f)
    if config_overrides:
        for rel, over in config_overrides.items():
            p = out / rel
            d = json.loads(p.read_text())
            _deep_merge(d, over)
            p.write_text(json.dumps(d, indent=2, ensure_ascii=False) + "\n")
    if not weights:
        return out
    cfg = Qwen3TTSConfig.from_file(out)
    st_cfg = SpeechTokenizerConfig.from_file(out / "speech_tokenizer")
    tdtype = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}[dtype]
    save_file(random_state(model_shapes(cfg), seed, tdtype), str(out / "model.safetensors"), metadata={"format": "pt"})
    save_file(random_state(speech_tokenizer_shapes(st_cfg), seed + 1), str(out / "speech_tokenizer" / "model.safetensors"), metadata={"format": "pt"})
    return out


def _merged(a: dict, b: dict) -> dict:
    import copy

    out = copy.deepcopy(a)
    _deep_merge(out, copy.deepcopy(b))
    return out


def _deep_merge(d: dict, over: dict) -> None:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            _deep_merge(d[k], v)
        else:
            d[k] = v


class RandomTensors(TensorView):
    """The tensors `random_state` makes, each made when it is read (the loaders read it as they
    read a weights.TensorFile: tensor by tensor, layer by layer), so a full-size model is built
    without its tensors existing twice. `bf16`: names whose values are bfloat16, as the
    bfloat16 checkpoint `write_random_model` writes holds them."""

    def __init__(self, shapes: dict[str, tuple], seed: int, dtype=torch.float32, bf16=(), prefix: str = ""):
        self.shapes, self.seed, self.dtype_, self.bf16 = shapes, seed, dtype, tuple(bf16)
        self._see(shapes, prefix)

    def view(self, prefix: str) -> "RandomTensors":
        return RandomTensors(self.shapes, self.seed, self.dtype_, self.bf16, self.prefix + prefix)

    def shape(self, name: str) -> tuple:
        return tuple(self.shapes[self.prefix + name])

    def dtype(self, name: str) -> torch.dtype:
        return torch.bfloat16 if self.prefix + name in self.bf16 else self.dtype_

    def read(self, name: str, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
        full = self.prefix + name
        t = random_tensor(full, self.shapes[full], self.seed).to(self.dtype(name))
        return t.to(device=device or "cpu", dtype=dtype or t.dtype).contiguous()


def random_tts(path: str | Path, seed: int = 0, device="cpu", dtype=torch.float32, quantize: str | None = None):
    """A `Qwen3TTS` over the JSON files in `path` with random weights made in memory (no
    multi-GB safetensors on disk): what `write_random_model` would write, loaded as
    `Qwen3TTS.from_pretrained` loads it (layer by layer, quantized as they arrive). The text
    embedding is bfloat16 (the checkpoint's dtype), the other talker weights `dtype`."""
    from ..codec.tokenizer import SpeechTokenizer
    from ..pipeline import Qwen3TTS
    from ..weights import limit_heap_retention, load_into

    path = Path(path)
    cfg = Qwen3TTSConfig.from_file(path)
    limit_heap_retention()  # as from_pretrained
    tts = Qwen3TTS(path, cfg, device=device, dtype=dtype)
    shapes = model_shapes(cfg)
    tensors = RandomTensors(shapes, seed, dtype, bf16=("talker.model.text_embedding.weight",))
    each_layer = None
    if quantize not in (None, "none"):
        from ..quant import layer_quantizer

        each_layer = layer_quantizer(tts.talker, quantize, tts.device)
    tts.talker.load(tensors.view("talker."), device=tts.device, each_layer=each_layer)
    tts.quantize(quantize)
    if tts.speaker_encoder is not None:
        load_into(tts.speaker_encoder, {k[16:]: random_tensor(k, s, seed) for k, s in shapes.items() if k.startswith("speaker_encoder.")})
    st_cfg = SpeechTokenizerConfig.from_file(path / "speech_tokenizer")
    tok = SpeechTokenizer(st_cfg, device=device, dtype=dtype)
    tok.load_state(RandomTensors(speech_tokenizer_shapes(st_cfg), seed + 1))
    if quantize not in (None, "none"):
        from ..codec_quant import quantize_decoder

        quantize_decoder(tok.decoder, quantize)
    tts.speech_tokenizer = tok
    return tts
