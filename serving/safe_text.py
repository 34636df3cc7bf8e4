"""Text that may cross the gateway: checked on the way in, escaped on the way out.

Why a module of its own: a lone UTF-16 surrogate (``"\\ud800"`` is valid JSON) or a NUL byte
gets through pydantic's ``str`` but breaks the encoders behind it (redis-py, numpy's bytes
arrays silently drop trailing NULs, orjson refuses surrogates), and an error message that
quotes such input breaks the error handler itself.  One regular expression (C speed, no
per-character Python loop) decides what is refused, and one function makes any text safe
to put in a response.
"""
from __future__ import annotations

import re

# C0 and C1 control characters, DEL and the UTF-16 surrogate range.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
EXCERPT_CHARS = 32


def check_text(value: str) -> str:
    """``value`` unchanged, or ValueError naming the first unsafe character's position."""
    bad = _UNSAFE.search(value)
    if bad is not None:
        kind = "a lone UTF-16 surrogate" if "\ud800" <= bad.group() <= "\udfff" else "a control character"
        raise ValueError(f"contains {kind} at position {bad.start()} (only printable Unicode text is accepted)")
    return value


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """A short, ASCII-only, escaped quote of client input for an error message."""
    text = value if isinstance(value, str) else repr(value)
    cut = text[:limit]
    return ascii(cut)[1:-1] + ("..." if len(text) > limit else "")


def safe_message(message: str, limit: int = 2000) -> str:
    """Any message made encodable as UTF-8 JSON (surrogates and controls escaped) and bounded."""
    if len(message) > limit:
        message = message[:limit] + "…"
    if _UNSAFE.search(message) is None:
        return message
    return _UNSAFE.sub(lambda m: ascii(m.group())[1:-1], message)
