"""Text tokenizer: byte-level BPE from the checkpoint's `vocab.json` + `merges.txt` +
`tokenizer_config.json`, built with the `tokenizers` library as transformers builds
`Qwen2TokenizerFast` from the slow files (talker.md §2.1):

    added tokens split off first (literal, not normalised) -> NFC -> Split(regex, isolated) ->
    ByteLevel(no prefix space, no regex) -> BPE (no unk, no byte fallback) -> ids

**Regex choice.** `Qwen3TTSModel.from_pretrained(local_dir)` with transformers 4.57.3 swaps
the Qwen2 pre-tokenizer regex for a "fixed Mistral" pattern (`fix_mistral_regex=True`
misfires on local directories whose config says transformers 4.57.3 and whose vocabulary has
> 100000 tokens). Loading the checkpoint by hub id keeps the Qwen2 regex, which is also what the
vocabulary was built with. We use the **Qwen2 regex** by default (`regex="qwen2"`); pass
`regex="mistral_fix"` to reproduce the official local-directory behaviour. The two differ only
on mixed-case words (`iPhone`, `McDonald`).
"""

from __future__ import annotations

import json
from pathlib import Path

QWEN2_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
MISTRAL_FIX_REGEX = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|"
    r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
REGEXES = {"qwen2": QWEN2_REGEX, "mistral_fix": MISTRAL_FIX_REGEX}


class TextTokenizer:
    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], added: list[dict], regex: str = "qwen2"):
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

        if regex not in REGEXES:
            raise ValueError(f"regex must be one of {sorted(REGEXES)}, not {regex!r}")
        self.regex = regex
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(REGEXES[regex]), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tok.decoder = decoders.ByteLevel()
        # added tokens in id order; they must land on their configured ids
        for a in sorted(added, key=lambda a: a["id"]):
            t = AddedToken(a["content"], single_word=a.get("single_word", False), lstrip=a.get("lstrip", False),
                           rstrip=a.get("rstrip", False), normalized=a.get("normalized", False), special=a.get("special", True))
            (tok.add_special_tokens if a.get("special", True) else tok.add_tokens)([t])
            got = tok.token_to_id(a["content"])
            if got != a["id"]:
                raise ValueError(f"added token {a['content']!r} got id {got}, config says {a['id']}")
        self._tok = tok

    @classmethod
    def from_pretrained(cls, path, regex: str = "qwen2") -> "TextTokenizer":
        path = Path(path)
        try:
            vocab = json.loads((path / "vocab.json").read_text(encoding="utf-8"))
            lines = (path / "merges.txt").read_text(encoding="utf-8").splitlines()
            cfg = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise FileNotFoundError(f"text tokenizer files missing in {path}: {e.filename}") from None
        merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
        added = [dict(v, id=int(k)) for k, v in cfg.get("added_tokens_decoder", {}).items()]
        return cls(vocab, merges, added, regex=regex)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def tokens(self, text: str) -> list[str]:
        return self._tok.encode(text, add_special_tokens=False).tokens

    def decode(self, ids) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def token_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    # ---- templates (qwen_tts inference/qwen3_tts_model.py `_build_*`)
    @staticmethod
    def assistant_text(text: str) -> str:
        return f"<|im_start|>assistant\n{text}<|im_end|>\n<|im_start|>assistant\n"

    @staticmethod
    def ref_text(text: str) -> str:
        return f"<|im_start|>assistant\n{text}<|im_end|>\n"

    @staticmethod
    def instruct_text(text: str) -> str:
        return f"<|im_start|>user\n{text}<|im_end|>\n"
