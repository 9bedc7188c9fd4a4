"""Talker (28-layer Qwen3 with text projection and codec head) and code predictor (5 layers,
15 embeddings/heads), sharing one transformer block.

Mirrors `Qwen3TTSTalkerForConditionalGeneration` and
`Qwen3TTSTalkerCodePredictorModelForConditionalGeneration` (qwen_tts modeling_qwen3_tts.py,
talker.md §3-4). Module names are the checkpoint names under the `talker.` prefix:

    model.{text_embedding, codec_embedding, layers.N.*, norm}
    text_projection.{linear_fc1, linear_fc2}        fc2(silu(fc1(x))), both with bias
    codec_head                                      hidden -> codec vocab, no bias
    code_predictor.model.{codec_embedding.J, layers.N.*, norm}   (embeddings in TALKER width)
    code_predictor.lm_head.J                        head J predicts codebook J+1
    code_predictor.small_to_mtp_projection          only when the hidden sizes differ (1.7B)
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops
from .layers import Transformer


class TalkerBackbone(Transformer):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.text_embedding = nn.Embedding(cfg.text_vocab_size, cfg.text_hidden_size)
        self.codec_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)


class TextProjection(nn.Module):
    def __init__(self, cin: int, hidden: int, cout: int):
        super().__init__()
        self.linear_fc1 = ops.Linear(cin, hidden, bias=True)
        self.linear_fc2 = ops.Linear(hidden, cout, bias=True)

    def forward(self, x):
        return self.linear_fc2(F.silu(self.linear_fc1(x)))


class CodePredictorBackbone(Transformer):
    def __init__(self, cfg, talker_hidden: int):
        super().__init__(cfg)
        self.codec_embedding = nn.ModuleList([nn.Embedding(cfg.vocab_size, talker_hidden) for _ in range(cfg.num_code_groups - 1)])


class CodePredictor(nn.Module):
    def __init__(self, cfg, talker_hidden: int):
        super().__init__()
        self.cfg = cfg
        self.model = CodePredictorBackbone(cfg, talker_hidden)
        self.lm_head = nn.ModuleList([ops.Linear(cfg.hidden_size, cfg.vocab_size, bias=False) for _ in range(cfg.num_code_groups - 1)])
        if cfg.hidden_size != talker_hidden:
            self.small_to_mtp_projection = ops.Linear(talker_hidden, cfg.hidden_size, bias=True)
        else:
            self.small_to_mtp_projection = nn.Identity()


class Talker(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = TalkerBackbone(cfg)
        self.text_projection = TextProjection(cfg.text_hidden_size, cfg.text_hidden_size, cfg.hidden_size)
        self.codec_head = ops.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.code_predictor = CodePredictor(cfg.code_predictor, cfg.hidden_size)

    def fuse(self) -> None:
        """Load-time fusions for speed (q/k/v and gate/up; numerics are unchanged), then the
        compute plan (qwen3tts/ops) chosen for the loaded weights' device and dtype and bound to
        every module (on CPU in float32: the linears' products in oneDNN, the same product summed
        in another order)."""
        self.model.fuse()
        self.code_predictor.model.fuse()
        ops.prepare(self)

    # Tables that may stay in the checkpoint's bfloat16 in a float32 model (exact: rows are
    # widened as they are looked up): the text embedding is a third of the talker's parameters.
    KEEP_DTYPE = (r"model\.text_embedding\.weight",)

    def load(self, tensors, device=None, each_layer=None) -> None:
        """Load the checkpoint tensors (names without `talker.`; a dict or a weights.TensorFile),
        strictly, into this talker built on the meta device, decoder layer by decoder layer:
        each layer is fused as it arrives and handed to `each_layer` (quant.layer_quantizer), so
        the float weights of one layer at most exist beside the quantized ones. Read from a file
        onto the CPU, the text embedding stays in the file (weights.FileEmbedding)."""
        from ..weights import FileEmbedding, TensorFile, check_names, kept_dtype, load_into, view

        check_names(self, tensors, what="talker weights")
        if isinstance(tensors, TensorFile) and torch.device(device or "cpu").type == "cpu":
            # the text table stays in the file: a step looks up a few of its 151936 rows
            name = "model.text_embedding.weight"
            want = kept_dtype(self.model.text_embedding.weight.dtype, tensors.dtype(name))
            self.model.text_embedding = FileEmbedding(tensors, name, want)
        for prefix, stack in (("model.", self.model), ("code_predictor.model.", self.code_predictor.model)):
            for i, layer in enumerate(stack.layers):
                load_into(layer, view(tensors, f"{prefix}layers.{i}."), what=f"talker {prefix}layers.{i}", device=device)
                layer.self_attn.fuse()
                layer.mlp.fuse()
                if each_layer is not None:
                    each_layer(layer)
        load_into(self, tensors, device=device, keep_dtype=self.KEEP_DTYPE, only_meta=True)
        self.fuse()

    # ---- embeddings (talker.md §2.3)
    def text_embed(self, ids: torch.Tensor) -> torch.Tensor:
        """T(ids): (..., ) int -> (..., hidden). The table may be narrower than the model
        (KEEP_DTYPE): the looked-up rows are widened, exactly."""
        e = self.model.text_embedding(ids)
        return self.text_projection(e.to(self.text_projection.linear_fc2.bias.dtype))

    def codec_embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.codec_embedding(ids)

    def frame_embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Sum of a frame's 16 codebook embeddings: codes (..., G) -> (..., hidden).
        Group 0 from the talker codec table, group g > 0 from code-predictor table g - 1."""
        out = self.model.codec_embedding(codes[..., 0])
        for g, emb in enumerate(self.code_predictor.model.codec_embedding):
            out = out + emb(codes[..., g + 1])
        return out
