"""The text of generated rows, token by token: incremental UTF-8 and stop strings.

A row's text grows one token at a time through an incremental UTF-8 decoder, so a character split
across tokens appears once complete. Text that could still turn out to be the start of a stop
string is held back; the row ends at the first stop string (not included) or its end-of-text token.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence

from microgpt_data.tokenizer import Tokenizer
from microgpt_infer.errors import InferError

__all__ = ["RowText", "check_stops"]


def check_stops(stop: object) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        stops: tuple = (stop,)
    elif isinstance(stop, list | tuple):
        stops = tuple(stop)
    else:
        raise InferError(f"stop must be a str, a list of str or None, got {type(stop).__name__}")
    for i, s in enumerate(stops):
        which = "stop" if isinstance(stop, str) else f"stop[{i}]"
        if not isinstance(s, str) or not s:
            raise InferError(f"{which} must be a non-empty str, got {s!r}")
        try:
            s.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InferError(f"{which} holds a lone surrogate at index {e.start}: not Unicode") from None
    return stops


class RowText:
    """The text of one generated row, built token by token.

    `push(token)` returns the text that became final with this token: complete characters that can
    no longer turn out to start a stop string. `finish()` returns whatever was held back.
    """

    def __init__(self, tokenizer: Tokenizer, stops: Sequence[str]) -> None:
        self._tokenizer = tokenizer
        self._eot = tokenizer.eot_id
        self._stops = stops
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""  # decoded so far (cut at a stop string once one is found)
        self._emitted = 0
        self.done = False

    def push(self, token: int) -> str:
        if self.done:
            return ""
        if token == self._eot:
            return self.finish()
        self.text += self._decoder.decode(self._tokenizer.token_bytes(token))
        cut = min((i for i in (self.text.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.text = self.text[:cut]
            return self.finish()
        held = max((_overlap(self.text, s) for s in self._stops), default=0)
        return self._emit(len(self.text) - held)

    def finish(self) -> str:
        if not self.done:
            self.done = True
            tail = self._decoder.decode(b"", final=True)
            if tail and not any(s in self.text + tail for s in self._stops):
                self.text += tail
        return self._emit(len(self.text))

    def _emit(self, end: int) -> str:
        out = self.text[self._emitted : end]
        self._emitted = max(self._emitted, end)
        return out


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `stop`."""
    for n in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0
