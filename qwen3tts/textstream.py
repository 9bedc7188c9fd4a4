"""Text that arrives in pieces (an LLM writing its answer): `TextStream` collects it and cuts it
into the same pieces `textsplit.split_text` cuts the whole text into; `IncrementalTokenizer`
turns a growing piece into exactly the token ids of the whole piece, committing only tokens
that later text can no longer change. Pure Python (no torch): the server's sessions push text
into a `TextStream`, the generation side (`textfeed.TextUtterance`) reads it.

**Tokens.** The text tokenizer (text.py) splits added tokens, normalises (NFC), pre-tokenizes
with a regex, then runs BPE inside each pre-token. A position p is a final pre-token boundary
once the text has a non-whitespace character at p-1 and a space or tab at p: no alternative of
either pre-tokenizer regex (Qwen2, Mistral-fix) runs from a non-space character into a following
space or tab (letter runs, digits, punctuation runs and contractions all stop there; only
newlines are taken into a punctuation run), everything before p is decided by the text up to p,
no added token contains whitespace, and NFC never composes across a space. So the text is
encoded in segments between such cuts, and everything after the last cut (an unfinished word,
a BPE merge across the boundary, a whitespace run that may end in a newline, the regex's
lookahead) is held until a later cut or the end: the ids equal those of the whole text.

**Pieces.** Long text is spoken piece by piece (`textsplit`: sentences packed greedily up to
the budget). A streamed piece is open while text arrives; a following sentence joins it once it
is complete (its boundary is certain: followed by a non-space character, or the input ended)
and fits, and the piece closes when one does not fit (known as soon as the known part is too
long). Text after a sentence end that is still undecided is not tokenized for the piece yet, so
generation waits at that sentence end until the next sentence decides. The pieces equal
`split_text(whole)` when the whole text fits the budget (one piece, its whitespace as sent) and
when every sentence fits and sentences are separated by one space (`split_text` joins its pieces
with one space); a sentence longer than the budget is cut at the last space that fits (else hard
at the budget), where `split_text` prefers clause punctuation.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .textsplit import _SENT, DEFAULT_BUDGET, _join, sentence_end

CUT_WS = " \t"


def last_cut(text: str, lo: int, hi: int) -> int | None:
    """The largest final pre-token boundary p with lo < p <= hi (text[p] must be known)."""
    for p in range(min(hi, len(text) - 1), lo, -1):
        if text[p] in CUT_WS and not text[p - 1].isspace():
            return p
    return None


class IncrementalTokenizer:
    """Token ids of one growing text (a piece, stripped at its start), committed in segments
    that end at final pre-token boundaries. `ids` always is a prefix of the whole text's ids."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.done = 0  # characters encoded into `ids`
        self.final = False

    def update(self, text: str, limit: int, final: bool) -> int:
        """`text`: the piece so far; cuts allowed at positions <= `limit` only; `final`: `text`
        is the whole piece (stripped). Returns how many ids were added."""
        if self.final:
            return 0
        if final:
            end = len(text)
        else:
            end = last_cut(text, self.done, limit)
            if end is None:
                return 0
        seg = text[self.done : end]
        new = self.tokenizer.encode(seg) if seg else []
        self.ids.extend(new)
        self.done, self.final = end, final
        return len(new)


@dataclass
class _Piece:
    start: int  # index in the received text of the piece's first character (not whitespace)
    end: int | None = None  # index after its last character once closed
    decided: int | None = None  # text before this index surely belongs to the piece (None: all so far does)
    packed: int = 0  # its length as split_text counts it (stripped sentences + joiners)
    last_char: str = ""


class TextStream:
    """Text pushed in pieces from any thread (`push`, `end`); read by the generation side.

    `budget`: characters per piece (as `split_text`); `split=False`: one piece, however long.
    `max_chars`: a limit on the whole text (ValueError when a push would exceed it)."""

    def __init__(self, budget: int = DEFAULT_BUDGET, split: bool = True, max_chars: int | None = None):
        if budget < 1:
            raise ValueError("budget must be >= 1")
        self.budget, self.split, self.max_chars = budget, split, max_chars
        self.lock = threading.Condition()
        self._text = ""
        self.ended = False
        self.cancelled = False
        self.pieces: list[_Piece] = []
        self._scan = 0  # where the next sentence-boundary search starts (finditer's position)
        self._last = 0  # start of the current sentence (split_text's `last`)
        self.last_push = time.monotonic()
        self.version = 0  # bumped on every change (waiters compare)

    # ------------------------------------------------------------------ writer side
    def push(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"text pieces must be str, not {type(text).__name__}")
        with self.lock:
            if self.ended:
                raise ValueError("text stream already ended")
            if "\x00" in text:
                raise ValueError("text contains NUL characters")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("text contains a lone surrogate (not valid Unicode)") from None
            if self.max_chars is not None and len(self._text) + len(text) > self.max_chars:
                raise ValueError(f"text is longer than {self.max_chars} characters")
            self.last_push = time.monotonic()
            if text:
                self._text += text
                self._advance()
            self.version += 1
            self.lock.notify_all()

    def end(self, text: str = "") -> None:
        """Append `text` (may be empty) and end the input."""
        if text:
            self.push(text)
        with self.lock:
            if self.ended:
                return
            self.ended = True
            self._advance()
            self.version += 1
            self.lock.notify_all()

    def cancel(self) -> None:
        """Stop waiting for more text: the input ends where it is (readers drop the request)."""
        with self.lock:
            self.cancelled = True
            self.ended = True
            self.version += 1
            self.lock.notify_all()

    @property
    def text(self) -> str:
        return self._text

    def wait(self, version: int, timeout: float) -> int:
        """Block until the stream changed since `version` (or `timeout` s); returns the version."""
        with self.lock:
            if self.version == version:
                self.lock.wait(timeout)
            return self.version

    # ------------------------------------------------------------------ reader side (hold `lock`)
    def piece_view(self, i: int):
        """Piece i as (text, limit, final): its text so far, the last position where its tokens
        may be cut, and whether it is complete; None while piece i does not exist yet."""
        if i >= len(self.pieces):
            return None
        p, R = self.pieces[i], self._text
        if p.end is not None:
            return R[p.start : p.end], p.end - p.start, True
        if p.decided is None:  # its first sentence is open: everything so far belongs to it
            t = R[p.start :]
            return t, (len(t) - 1 if not self.split else min(len(t) - 1, self.budget)), False
        t = R[p.start : min(len(R), p.decided + 1)]  # the char after the decided part decides a cut there
        return t, p.decided - p.start, False

    @property
    def complete(self) -> bool:
        """Every piece is known and closed."""
        return self.ended and all(p.end is not None for p in self.pieces)

    # ------------------------------------------------------------------ segmentation
    def _open(self, at: int) -> bool:
        R = self._text
        while at < len(R) and R[at].isspace():
            at += 1
        if at >= len(R):
            return False
        self.pieces.append(_Piece(at))
        self._last = max(self._last, at)
        return True

    def _close(self, end: int) -> None:
        p, R = self.pieces[-1], self._text
        while end > p.start and R[end - 1].isspace():
            end -= 1
        p.end = end

    def _current(self) -> _Piece | None:
        return self.pieces[-1] if self.pieces and self.pieces[-1].end is None else None

    def _sentence(self, s0: int, s1: int) -> None:
        """The sentence R[s0:s1] (raw) is complete: it joins the current piece or starts one."""
        R = self._text
        sent = R[s0:s1].strip()
        if not sent:
            return
        p = self._current()
        if p is not None and p.decided is not None and p.packed + len(_join(p.last_char, sent)) + len(sent) > self.budget:
            self._close(p.decided)
            p = None
        if p is None:
            self._open(s0)
            p = self._current()
        if p.decided is None:  # the piece's first sentence
            self._cut_long(s1)
            p = self._current()
            sent = R[p.start : s1].strip()
            p.packed = len(sent)
        else:
            p.packed += len(_join(p.last_char, sent)) + len(sent)
        p.last_char = sent[-1]
        p.decided = s0 + len(R[s0:s1].rstrip())

    def _cut_long(self, end: int) -> None:
        """While the current piece (its first sentence, up to `end`) is longer than the budget,
        cut it at the last space that fits (else hard at the budget) and go on with the rest."""
        R = self._text
        p = self._current()
        while p is not None and len(R[p.start : end].rstrip()) > self.budget:
            cut = last_cut(R, p.start, p.start + self.budget) or p.start + self.budget
            self._close(cut)
            self._open(cut)
            p = self._current()

    def _advance(self) -> None:
        R = self._text
        if not self.split:
            if not self.pieces:
                self._open(0)
            if self.ended and self._current():
                self._close(len(R))
            return
        while True:
            p = self._current()
            if p is None and not self._open(max(self._last, self._scan, self.pieces[-1].end if self.pieces else 0)):
                break
            m = _SENT.search(R, self._scan) if self._scan <= len(R) else None
            if m is not None and (m.end() < len(R) or self.ended):
                self._scan = m.end() + (m.end() == m.start())
                if m.start() > self._last and m.end() > self._last:
                    self._sentence(self._last, sentence_end(m))
                    self._last = m.end()
                continue
            break
        p = self._current()
        if p is None:
            return
        tail = R[self._last :].strip()
        if p.decided is not None and tail and p.packed + len(_join(p.last_char, tail)) + len(tail) > self.budget:
            self._close(p.decided)  # the sentence being written cannot fit: the piece ends
            self._open(self._last)
            p = self._current()
        if p is not None and p.decided is None:
            self._cut_long(len(R))
            p = self._current()
        if self.ended and p is not None:
            if R[self._last :].strip():
                self._sentence(self._last, len(R))
                self._last = len(R)
            p = self._current()
            if p is not None:
                self._close(p.decided if p.decided is not None else len(R))
