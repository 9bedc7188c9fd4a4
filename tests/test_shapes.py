"""The same API on other official-layout configurations: a small model of unusual shapes
(written to disk as safetensors and loaded through `from_pretrained`) and the real 0.6B-Base
shapes (random weights in memory)."""

from __future__ import annotations

import pytest
import torch

from conftest import max_abs
from qwen3tts import Qwen3TTS
from qwen3tts.dev.random_model import random_tts, write_random_model

SMALL = {
    "config.json": {
        "speaker_encoder_config": {"enc_dim": 40, "enc_channels": [16, 16, 16, 16, 48], "enc_attention_channels": 8, "enc_se_channels": 8},
        "talker_config": {
            "hidden_size": 40, "intermediate_size": 72, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
            "head_dim": 20, "text_hidden_size": 24,
            "code_predictor_config": {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 1, "num_attention_heads": 2,
                                      "num_key_value_heads": 2, "head_dim": 16},
        },
    },
    "speech_tokenizer/config.json": {
        "decoder_config": {"hidden_size": 24, "latent_dim": 40, "codebook_dim": 24, "decoder_dim": 32, "head_dim": 12,
                           "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 40, "num_hidden_layers": 1,
                           "sliding_window": 5},
        "encoder_config": {"hidden_size": 16, "num_filters": 2, "num_hidden_layers": 1, "num_attention_heads": 2,
                           "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 24, "codebook_dim": 8,
                           "vector_quantization_hidden_dimension": 8},
    },
}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = write_random_model(tmp_path_factory.mktemp("small"), seed=5, dtype="float32", config_overrides=SMALL)
    return Qwen3TTS.from_pretrained(d)


def test_small_model_other_shapes(small):
    """GQA 4:1, code predictor narrower than the talker (small_to_mtp_projection is a Linear, as
    in 1.7B), head_dim * heads != hidden, 1-layer codec transformer with window 5."""
    assert not isinstance(small.talker.code_predictor.small_to_mtp_projection, torch.nn.Identity)
    wav = torch.sin(torch.arange(24000 * 3) / 9.0) * 0.3
    voice = small.create_voice_prompt((wav, 24000), ref_text="A reference sentence.")
    assert voice.ref_codes.shape == (38, 16) and voice.speaker_embedding.shape == (40,)
    out = small.generate("Another sentence for a model of other shapes.", language="German", voice=voice,
                         do_sample=False, subtalker_dosample=False, max_new_tokens=8)
    assert out.codes.shape == (7, 16) and out.codes.max() < 2048
    assert out.audio.shape[0] in (7 * 1920, 7 * 1920 + 1) and torch.isfinite(out.audio).all()
    streamed = torch.cat([c.audio for c in small.stream("Another sentence for a model of other shapes.", language="German", voice=voice,
                                                       do_sample=False, subtalker_dosample=False, max_new_tokens=8)])
    assert max_abs(streamed, out.audio[out.audio.shape[0] - streamed.shape[0]:]) < 1e-5
    xv = small.generate("Sampled.", voice=small.create_voice_prompt((wav, 24000), x_vector_only=True), max_new_tokens=4, seed=3)
    assert xv.codes.shape == (3, 16)


@pytest.mark.slow
def test_full_size_0_6b_generates_3_frames(tmp_path):
    """The real 0.6B-Base config.json values (28 layers, GQA 16/8 x 128, 151936 x 2048 text
    embedding, 5-layer predictor, real codec) with random weights."""
    d = write_random_model(tmp_path / "m", weights=False)
    tts = random_tts(d, seed=0)
    t = tts.talker
    assert len(t.model.layers) == 28 and t.model.layers[0].self_attn.qkv_proj.weight.shape == (2048 + 1024 + 1024, 1024)  # fused q|k|v
    assert t.model.text_embedding.weight.shape == (151936, 2048) and len(t.code_predictor.model.layers) == 5
    n_params = sum(p.numel() for p in t.parameters()) + sum(p.numel() for p in tts.speaker_encoder.parameters())
    assert n_params == 914_643_008  # the official model.safetensors count
    wav = torch.sin(torch.arange(24000 * 2) / 11.0) * 0.2
    voice = tts.create_voice_prompt((wav, 24000), x_vector_only=True)
    assert voice.speaker_embedding.shape == (1024,)
    out = tts.generate("Hello world.", language="English", voice=voice, do_sample=False, subtalker_dosample=False, max_new_tokens=4)
    assert out.codes.shape == (3, 16) and out.audio.shape == (3 * 1920,) and torch.isfinite(out.audio).all()
