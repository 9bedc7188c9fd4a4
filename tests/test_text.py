"""Text tokenizer ids: tiny vocabulary and the real Qwen vocabulary, both pre-tokenizer regexes."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import FIXTURES, TINY_MODEL
from qwen3tts import TextTokenizer
from qwen3tts.dev.random_model import PRESETS


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("qwen_tok")
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(PRESETS / "qwen_tokenizer" / f, d / f)
    shutil.copy(PRESETS / "0.6b-base" / "tokenizer_config.json", d / "tokenizer_config.json")
    return d


@pytest.mark.parametrize("regex,field", [("qwen2", "ids_qwen2_regex"), ("mistral_fix", "ids_mistral_fix_regex")])
def test_tiny_vocab_ids(expected_info, regex, field):
    tok = TextTokenizer.from_pretrained(TINY_MODEL, regex=regex)
    for key, t in expected_info["texts"].items():
        assert tok.encode(t["prompt"]) == t[field], key


def test_tiny_default_is_official_path(expected_info):
    tok = TextTokenizer.from_pretrained(TINY_MODEL)
    for t in expected_info["texts"].values():
        assert tok.encode(t["prompt"]) == t["ids"]
        assert tok.tokens(t["prompt"]) == t["tokens"]
    # the two regexes really differ on the mixed-case text
    mixed = expected_info["texts"]["mixed"]
    assert mixed["ids_qwen2_regex"] != mixed["ids_mistral_fix_regex"]


@pytest.mark.parametrize("regex,field", [("qwen2", "ids_qwen2_regex"), ("mistral_fix", "ids_mistral_fix_regex")])
def test_real_vocab_ids(real_dir, regex, field):
    exp = json.loads((FIXTURES / "qwen_expected_ids.json").read_text(encoding="utf-8"))
    tok = TextTokenizer.from_pretrained(real_dir, regex=regex)
    assert len(exp["strings"]) >= 20
    for s in exp["strings"]:
        assert tok.encode(s["text"]) == s[field], s["text"]
    for content, i in exp["added_tokens"].items():
        assert tok.token_id(content) == i


def test_real_vocab_golden_templates(real_dir):
    """talker.md §2.1 golden ids, and the regex trap on mixed-case words."""
    tok = TextTokenizer.from_pretrained(real_dir)
    assert tok.encode(tok.assistant_text("Hello")) == [151644, 77091, 198, 9707, 151645, 198, 151644, 77091, 198]
    assert tok.encode(tok.assistant_text("你好，世界！")) == [151644, 77091, 198, 108386, 3837, 99489, 6313, 151645, 198, 151644, 77091, 198]
    assert tok.encode(tok.ref_text("Ref text.")) == [151644, 77091, 198, 3945, 1467, 13, 151645, 198]
    s = "I visited McDonald's on YouTube with my iPhone."
    assert tok.encode(s) == [40, 11994, 30914, 594, 389, 13370, 448, 847, 12167, 13]
    fixed = TextTokenizer.from_pretrained(real_dir, regex="mistral_fix")
    assert fixed.encode(s) == [40, 11994, 4483, 18234, 594, 389, 1446, 11851, 448, 847, 600, 6939, 13]
    assert tok.decode(tok.encode("Grüße, 世界 👋")) == "Grüße, 世界 👋"


def test_bad_regex_name():
    with pytest.raises(ValueError, match="regex"):
        TextTokenizer.from_pretrained(TINY_MODEL, regex="gpt2")
