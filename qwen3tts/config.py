"""Frozen configuration dataclasses read from the official checkpoint JSON files.

Mirrors `qwen_tts/core/models/configuration_qwen3_tts.py` (talker, code predictor, speaker
encoder) and `qwen_tts/core/tokenizer_12hz/configuration_qwen3_tts_tokenizer_v2.py` plus
`transformers.MimiConfig` (speech tokenizer). Field names are the JSON key names, so `from_dict`
is a checked copy; a key absent from the file takes the official *class* default (which can
differ wildly from the shipped values — always read the file). Unknown keys are ignored (the
official files carry ~50 Hugging Face boilerplate keys).

Runtime knobs are not here: device and dtype are `from_pretrained` arguments, sampling is
`generator.GenerationSettings`, kernels are chosen by `QWEN3TTS_KERNELS`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .settings import QUANTIZE_MODES  # noqa: F401 (re-exported: the --quantize modes)


def _from_dict(cls, d: dict[str, Any] | None, **override):
    """Build dataclass `cls` from the keys of `d` that name its fields (others are ignored)."""
    d = dict(d or {})
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: v for k, v in d.items() if k in names}
    kw.update(override)
    for f in dataclasses.fields(cls):  # JSON lists -> tuples (frozen + hashable)
        if isinstance(kw.get(f.name), list):
            kw[f.name] = tuple(kw[f.name])
    return cls(**kw)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"missing config file: {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


# --------------------------------------------------------------------------- speech tokenizer


@dataclass(frozen=True)
class CodecDecoderConfig:
    """`decoder_config` of speech_tokenizer/config.json (Qwen3TTSTokenizerV2DecoderConfig)."""

    codebook_dim: int  # no class default: must be in the file. RVQ inner dim = codebook_dim // 2
    codebook_size: int = 2048
    latent_dim: int = 1024
    decoder_dim: int = 1536
    hidden_size: int = 512
    intermediate_size: int = 1024
    num_hidden_layers: int = 8
    num_attention_heads: int = 16
    num_key_value_heads: int = 16
    head_dim: int = 64
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    sliding_window: int = 72
    num_quantizers: int = 16
    upsample_rates: tuple[int, ...] = (8, 5, 4, 3)
    upsampling_ratios: tuple[int, ...] = (2, 2)
    attention_bias: bool = False

    @property
    def total_upsample(self) -> int:
        return math.prod(self.upsample_rates) * math.prod(self.upsampling_ratios)


@dataclass(frozen=True)
class CodecEncoderConfig:
    """`encoder_config` of speech_tokenizer/config.json (a stock transformers MimiConfig)."""

    hidden_size: int = 512
    num_filters: int = 64
    upsampling_ratios: tuple[int, ...] = (8, 6, 5, 4)  # applied reversed in the encoder
    kernel_size: int = 7
    last_kernel_size: int = 3
    residual_kernel_size: int = 3
    num_residual_layers: int = 1
    dilation_growth_rate: int = 2
    compress: int = 2
    use_conv_shortcut: bool = False
    audio_channels: int = 1
    num_hidden_layers: int = 8
    num_attention_heads: int = 8
    num_key_value_heads: int = 8
    head_dim: int | None = None
    intermediate_size: int = 2048
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    sliding_window: int = 250  # NOT applied by transformers 4.57.3 (eager/SDPA): full causal
    codebook_size: int = 2048
    codebook_dim: int = 256
    vector_quantization_hidden_dimension: int | None = None  # None -> hidden_size (MimiConfig)
    num_quantizers: int = 32
    num_semantic_quantizers: int = 1
    sampling_rate: int = 24000
    _frame_rate: float = 12.5

    @property
    def attn_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def vq_hidden(self) -> int:
        return self.vector_quantization_hidden_dimension or self.hidden_size

    @property
    def downsample_stride(self) -> int:
        # MimiModel: encodec_frame_rate = ceil(sr / prod(ratios)); stride = encodec rate / frame rate
        encodec_rate = math.ceil(self.sampling_rate / math.prod(self.upsampling_ratios))
        return int(encodec_rate / self._frame_rate)


@dataclass(frozen=True)
class SpeechTokenizerConfig:
    """speech_tokenizer/config.json (Qwen3TTSTokenizerV2Config)."""

    decoder: CodecDecoderConfig
    encoder: CodecEncoderConfig
    encoder_valid_num_quantizers: int = 16
    input_sample_rate: int = 24000
    output_sample_rate: int = 24000
    encode_downsample_rate: int = 1920
    decode_upsample_rate: int = 1920

    @classmethod
    def from_dict(cls, d: dict) -> "SpeechTokenizerConfig":
        if "decoder_config" not in d or "codebook_dim" not in d["decoder_config"]:
            raise ValueError("speech tokenizer config needs decoder_config.codebook_dim")
        return _from_dict(
            cls,
            d,
            decoder=_from_dict(CodecDecoderConfig, d["decoder_config"]),
            encoder=_from_dict(CodecEncoderConfig, d.get("encoder_config")),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> "SpeechTokenizerConfig":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        return cls.from_dict(_read_json(path))


# --------------------------------------------------------------------------- talker side


@dataclass(frozen=True)
class CodePredictorConfig:
    """`talker_config.code_predictor_config` (Qwen3TTSTalkerCodePredictorConfig)."""

    vocab_size: int = 2048
    hidden_size: int = 1024
    intermediate_size: int = 3072
    num_hidden_layers: int = 5
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int | None = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    num_code_groups: int = 16
    attention_bias: bool = False
    hidden_act: str = "silu"

    @property
    def attn_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads


@dataclass(frozen=True)
class TalkerConfig:
    """`talker_config` (Qwen3TTSTalkerConfig). Defaults are the official class defaults."""

    code_predictor: CodePredictorConfig
    vocab_size: int = 3072
    text_vocab_size: int = 151936
    text_hidden_size: int = 2048
    hidden_size: int = 1024
    intermediate_size: int = 2048
    num_hidden_layers: int = 20
    num_attention_heads: int = 16
    num_key_value_heads: int = 2
    head_dim: int | None = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    num_code_groups: int = 32
    attention_bias: bool = False
    hidden_act: str = "silu"
    codec_pad_id: int = 4196
    codec_bos_id: int = 4197
    codec_eos_token_id: int = 4198
    codec_think_id: int = 4202
    codec_nothink_id: int = 4203
    codec_think_bos_id: int = 4204
    codec_think_eos_id: int = 4205
    codec_language_id: dict = field(default_factory=dict, hash=False)
    spk_id: dict = field(default_factory=dict, hash=False)
    spk_is_dialect: dict = field(default_factory=dict, hash=False)

    @property
    def attn_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads


@dataclass(frozen=True)
class SpeakerEncoderConfig:
    """`speaker_encoder_config` (Qwen3TTSSpeakerEncoderConfig); the file carries 2 keys."""

    mel_dim: int = 128
    enc_dim: int = 1024
    enc_channels: tuple[int, ...] = (512, 512, 512, 512, 1536)
    enc_kernel_sizes: tuple[int, ...] = (5, 3, 3, 3, 1)
    enc_dilations: tuple[int, ...] = (1, 2, 3, 4, 1)
    enc_attention_channels: int = 128
    enc_res2net_scale: int = 8
    enc_se_channels: int = 128
    sample_rate: int = 24000


@dataclass(frozen=True)
class Qwen3TTSConfig:
    """config.json (Qwen3TTSConfig)."""

    talker: TalkerConfig
    speaker_encoder: SpeakerEncoderConfig
    tts_model_type: str = "base"
    tts_model_size: str = "0b6"
    tts_pad_token_id: int = 151671
    tts_bos_token_id: int = 151672
    tts_eos_token_id: int = 151673
    im_start_token_id: int = 151644
    im_end_token_id: int = 151645
    assistant_token_id: int = 77091
    transformers_version: str = ""

    @classmethod
    def from_dict(cls, d: dict) -> "Qwen3TTSConfig":
        if "talker_config" not in d:
            raise ValueError("config.json has no talker_config: is this a Qwen3-TTS checkpoint?")
        t = dict(d["talker_config"])
        cp = _from_dict(CodePredictorConfig, t.get("code_predictor_config"))
        return _from_dict(
            cls,
            d,
            talker=_from_dict(TalkerConfig, t, code_predictor=cp),
            speaker_encoder=_from_dict(SpeakerEncoderConfig, d.get("speaker_encoder_config")),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> "Qwen3TTSConfig":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        return cls.from_dict(_read_json(path))


@dataclass(frozen=True)
class GenerationDefaults:
    """generation_config.json, merged as `Qwen3TTSModel._merge_generate_kwargs` does."""

    do_sample: bool = True
    top_k: int = 50
    top_p: float = 1.0
    temperature: float = 0.9
    repetition_penalty: float = 1.05
    subtalker_dosample: bool = True
    subtalker_top_k: int = 50
    subtalker_top_p: float = 1.0
    subtalker_temperature: float = 0.9
    max_new_tokens: int = 2048

    @classmethod
    def from_file(cls, path: str | Path) -> "GenerationDefaults":
        path = Path(path)
        if path.is_dir():
            path = path / "generation_config.json"
        if not path.exists():
            return cls()
        return _from_dict(cls, _read_json(path))


def cuda_graphs_option(value) -> str:
    """Normalise a CUDA-graphs switch (`--cuda-graphs`, `QWEN3TTS_CUDA_GRAPHS`, the
    `cuda_graphs=` argument) to "auto", "on" or "off": accepts those, 1/0, true/false, yes/no
    and booleans; None is "auto". Raises ValueError otherwise."""
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "on" if value else "off"
    v = str(value).strip().lower()
    if v in ("auto", ""):
        return "auto"
    if v in ("1", "on", "true", "yes"):
        return "on"
    if v in ("0", "off", "false", "no"):
        return "off"
    raise ValueError(f"cuda graphs must be on, off or auto, not {value!r}")
