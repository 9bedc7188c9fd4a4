"""Cut text that arrives in pieces (an LLM's tokens, Wyoming `synthesize-chunk`s) at sentence
ends, so each sentence can be spoken as soon as it is complete. Used by the Wyoming server and
the LiveKit integration until the library's streamed text input takes whole streams.

A sentence ends at . ! ? … (with closing quotes / brackets) followed by white space, at a CJK
full-width ender, or at a blank line; text after the last end waits for more.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"""[.!?…]["'”’)\]]*\s+|[。！？]["'”’」』）]*\s*|\n\s*\n""")


def split_sentences(buf: str) -> tuple[list[str], str]:
    """(complete sentences, stripped; the unfinished rest, as is) of streamed text."""
    out, last = [], 0
    for m in _SENTENCE_END.finditer(buf):
        s = buf[last:m.end()].strip()
        if s:
            out.append(s)
        last = m.end()
    return out, buf[last:]
