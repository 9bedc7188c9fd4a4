"""Split long text into pieces the model handles well: at sentence ends first, then at clause
punctuation, then at spaces, each piece at most `budget` characters. Latin and CJK punctuation
are both understood (CJK punctuation needs no following space).

The pieces concatenate back to the input up to whitespace at the boundaries.
"""

from __future__ import annotations

import re

# a sentence end: Latin .!? (and runs of them, closing quotes/brackets) followed by a space, or
# CJK full-width enders (no space needed); newlines (paragraphs) too
_SENT = re.compile(r"""(?<=[.!?…])["'”’)\]]*\s+|(?<=[。！？])["'”’」』）]*\s*|\n\s*""")
_CLAUSE = re.compile(r"""(?<=[,;:—–])\s+|(?<=[，、；：])\s*""")

DEFAULT_BUDGET = 200


_CLOSERS = "\"'”’)]」』）"


def sentence_end(m: re.Match) -> int:
    """Where the text before a boundary match ends: closing quotes / brackets stay with it."""
    g = m.group()
    return m.start() + len(g) - len(g.lstrip(_CLOSERS))


def _split_keep(text: str, pattern: re.Pattern) -> list[str]:
    out, last = [], 0
    for m in pattern.finditer(text):
        if m.end() > last and m.start() > last:
            out.append(text[last : sentence_end(m)])
            last = m.end()
    out.append(text[last:])
    return [p.strip() for p in out if p.strip()]


def _pack(parts: list[str], budget: int, joiner) -> list[str]:
    """Greedily merge consecutive parts while they fit the budget."""
    out: list[str] = []
    for p in parts:
        if out and len(out[-1]) + len(joiner(out[-1], p)) + len(p) <= budget:
            out[-1] = out[-1] + joiner(out[-1], p) + p
        else:
            out.append(p)
    return out


def _join(a: str, b: str) -> str:
    # no space between CJK characters
    if a and b and (_is_cjk(a[-1]) or _is_cjk(b[0])):
        return ""
    return " "


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return 0x2E80 <= o <= 0x9FFF or 0xAC00 <= o <= 0xD7AF or 0xF900 <= o <= 0xFAFF or 0xFF00 <= o <= 0xFFEF or 0x3000 <= o <= 0x303F


def _hard_split(s: str, budget: int) -> list[str]:
    """Last resort for a clause longer than the budget: at spaces, else every `budget` chars."""
    words = s.split(" ")
    if len(words) > 1:
        out = _pack([w for w in words if w], budget, lambda a, b: " ")
        return [p for w in out for p in (_hard_split(w, budget) if len(w) > budget else [w])]
    return [s[i : i + budget] for i in range(0, len(s), budget)]


def split_text(text: str, budget: int = DEFAULT_BUDGET) -> list[str]:
    """Pieces of at most `budget` characters (a word longer than the budget is cut)."""
    if budget < 1:
        raise ValueError("budget must be >= 1")
    text = text.strip()
    if len(text) <= budget:
        return [text] if text else []
    pieces: list[str] = []
    for sent in _split_keep(text, _SENT):
        if len(sent) <= budget:
            pieces.append(sent)
            continue
        for clause in _split_keep(sent, _CLAUSE):
            pieces.extend([clause] if len(clause) <= budget else _hard_split(clause, budget))
    return _pack(pieces, budget, _join)
