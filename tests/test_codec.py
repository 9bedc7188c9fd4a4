"""Speech tokenizer parity with the official implementation (tiny fixture) and the shape of the
public API on other configurations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import TINY, TINY_MODEL, max_abs, rel_err
from qwen3tts import SpeechTokenizer
from qwen3tts.config import SpeechTokenizerConfig
from qwen3tts.weights import WeightsError


@pytest.mark.parametrize("stage", ["quantized", "pre_conv_out", "pre_transformer_out", "upsample_out", "decoder0_out"])
def test_decoder_intermediates(tiny_codec, expected, stage):
    taps = {}
    tiny_codec.decode(expected["decode.codes"], taps=taps)
    assert rel_err(taps[stage], expected[f"decode.{stage}"]) < 1e-4


def test_decode_wav(tiny_codec, expected):
    wav = tiny_codec.decode(expected["decode.codes"])
    assert wav.shape == (24 * 1920,) and wav.dtype == torch.float32
    assert max_abs(wav, expected["decode.wav"]) < 1e-4
    # the fixture exercises the output clamp
    assert (wav.abs() >= 1.0).any()


def test_official_chunked_decode(tiny_codec, expected):
    wav = tiny_codec.decode(expected["decode.codes"], chunk_size=10, left_context=4)
    assert max_abs(wav, expected["decode.wav_chunked"]) < 1e-4
    # and it really differs from the exact single pass (the fixture's chunking is lossy)
    assert max_abs(wav, tiny_codec.decode(expected["decode.codes"])) > 1e-4


@pytest.mark.parametrize("stage", ["seanet_out", "transformer_out", "downsample_out"])
def test_encoder_intermediates(tiny_codec, expected, stage):
    taps = {}
    tiny_codec.encode(expected["ref.wav"], 24000, taps=taps)
    assert rel_err(taps[stage], expected[f"enc.{stage}"]) < 1e-4


def test_encoder_codes(tiny_codec, expected):
    codes = tiny_codec.encode(expected["ref.wav"], 24000)
    assert codes.dtype == torch.int64 and codes.shape == (38, 16)
    assert torch.equal(codes, expected["ref.codes"])
    all_q = tiny_codec.encode(expected["ref.wav"], 24000, num_quantizers=32)
    assert torch.equal(all_q.T, expected["enc.codes_all_quantizers"])


def test_encode_inputs(tiny_codec, expected):
    wav = expected["ref.wav"]
    ref = tiny_codec.encode(wav, 24000)
    # numpy input, a WAV file path, and stereo input averaged to mono all give the same codes
    assert torch.equal(tiny_codec.encode(wav.numpy(), 24000), ref)
    assert torch.equal(tiny_codec.encode(TINY / "reference.wav"), ref)
    stereo = torch.stack([wav, wav], dim=1).numpy()
    assert torch.equal(tiny_codec.encode(stereo, 24000), ref)
    # frames = ceil(L / 1920)
    for n in (1, 1919, 1920, 1921, 5000):
        assert tiny_codec.encode(wav[:n], 24000).shape == (-(-n // 1920), 16)
    # another rate is resampled to 24 kHz: 16 kHz audio of the same length in seconds
    import soxr

    x16 = soxr.resample(wav.numpy(), 24000, 16000)
    assert tiny_codec.encode(x16, 16000).shape[0] == -(-round(len(x16) * 1.5) // 1920)


def test_decode_rejects_bad_codes(tiny_codec):
    with pytest.raises(ValueError, match=r"\(T, 16\)"):
        tiny_codec.decode(torch.zeros(5, 15, dtype=torch.long))
    with pytest.raises(ValueError, match="range"):
        tiny_codec.decode(torch.full((2, 16), 64))
    with pytest.raises(ValueError, match="integers"):
        tiny_codec.decode(torch.zeros(2, 16))


def test_strict_loading_names_the_tensor(tmp_path):
    from safetensors.torch import load_file

    tensors = load_file(str(TINY_MODEL / "speech_tokenizer" / "model.safetensors"))
    cfg = SpeechTokenizerConfig.from_file(TINY_MODEL / "speech_tokenizer")
    t = dict(tensors)
    del t["decoder.pre_conv.conv.bias"]
    with pytest.raises(WeightsError, match="missing.*decoder|pre_conv.conv.bias"):
        SpeechTokenizer(cfg).load_state(t)
    t = dict(tensors)
    t["decoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match="extra.weight"):
        SpeechTokenizer(cfg).load_state(t)
    t = dict(tensors)
    t["decoder.pre_conv.conv.bias"] = torch.zeros(3)
    with pytest.raises(WeightsError, match="shape mismatch"):
        SpeechTokenizer(cfg).load_state(t)


def _random_tokenizer(tmp_path, overrides: dict | None, seed=3):
    """A random-weight speech tokenizer written in the official layout from the real config."""
    from safetensors.torch import save_file

    from qwen3tts.dev.random_model import PRESETS, _deep_merge, random_state, speech_tokenizer_shapes

    d = json.loads((PRESETS / "0.6b-base" / "speech_tokenizer" / "config.json").read_text())
    if overrides:
        _deep_merge(d, overrides)
    out = tmp_path / "speech_tokenizer"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(d))
    cfg = SpeechTokenizerConfig.from_dict(d)
    save_file(random_state(speech_tokenizer_shapes(cfg), seed), str(out / "model.safetensors"))
    return out


@pytest.mark.slow
def test_real_config_decodes(tmp_path):
    """The real speech_tokenizer/config.json values (codec.md §2) with random weights."""
    path = _random_tokenizer(tmp_path, None)
    tok = SpeechTokenizer.from_pretrained(path)
    assert tok.decoder.pre_transformer.layers[0].self_attn.qkv_proj.weight.shape == (3 * 1024, 512)  # fused q|k|v (16 heads x 64)
    codes = torch.randint(0, 2048, (3, 16), generator=torch.Generator().manual_seed(0))
    wav = tok.decode(codes)
    assert wav.shape == (3 * 1920,) and torch.isfinite(wav).all() and wav.abs().max() <= 1.0
    dec = tok.streaming_decoder()
    assert max_abs(torch.cat([dec.push(codes[:1]), dec.push(codes[1:])]), wav) < 1e-5
    x = torch.randn(24000) * 0.1
    c = tok.encode(x, 24000)
    assert c.shape == (13, 16) and c.max() < 2048


def test_other_shapes(tmp_path):
    """Same API, unchanged, on a random official-layout codec of different shapes."""
    over = {
        "decoder_config": {"hidden_size": 24, "latent_dim": 40, "codebook_dim": 24, "decoder_dim": 32, "head_dim": 12,
                           "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 40, "num_hidden_layers": 3,
                           "sliding_window": 5, "codebook_size": 32},
        "encoder_config": {"hidden_size": 16, "num_filters": 2, "num_hidden_layers": 1, "num_attention_heads": 2,
                           "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 24, "codebook_dim": 8,
                           "vector_quantization_hidden_dimension": 8, "codebook_size": 32, "num_quantizers": 20},
    }
    tok = SpeechTokenizer.from_pretrained(_random_tokenizer(tmp_path, over))
    codes = torch.randint(0, 32, (12, 16), generator=torch.Generator().manual_seed(1))
    wav = tok.decode(codes)
    assert wav.shape == (12 * 1920,)
    dec = tok.streaming_decoder()
    assert max_abs(torch.cat([dec.push(codes[i : i + 5]) for i in range(0, 12, 5)]), wav) < 1e-5
    c = tok.encode(np.sin(np.arange(9000) / 7.0).astype(np.float32) * 0.3, 24000)
    assert c.shape == (5, 16) and c.max() < 32
