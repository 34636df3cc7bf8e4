"""The text checks of the request edge: what is refused, and how client text is quoted back."""
from __future__ import annotations

import json

import orjson
import pytest

from ratingctr.serving.safe_text import check_text, excerpt, safe_message


@pytest.mark.parametrize("text", ["u1", "Zoë", "用户", "emoji \U0001f600", "a b", "x" * 1000])
def test_printable_unicode_passes_unchanged(text: str) -> None:
    assert check_text(text) == text


@pytest.mark.parametrize("text,kind,position", [
    ("\ud800", "surrogate", 0), ("ab\udfff", "surrogate", 2), ("50\x00", "control", 2), ("a\nb", "control", 1),
    ("\x7f", "control", 0), ("c1\x85", "control", 2), ("\x1b[31m", "control", 0),
])
def test_surrogates_and_control_characters_are_refused_with_their_position(text: str, kind: str,
                                                                           position: int) -> None:
    with pytest.raises(ValueError, match=f"{kind}.* at position {position} "):
        check_text(text)


def test_excerpts_are_short_ascii_and_escaped() -> None:
    quoted = excerpt("\ud800" + "x" * 100)
    assert quoted.isascii() and quoted.startswith("\\ud800") and quoted.endswith("...")
    assert len(quoted) < 50
    assert excerpt("\x00") == "\\x00" and excerpt(42) == "42"


def test_safe_messages_always_encode_as_json() -> None:
    hostile = "bad key \ud800\udc00\ud83d and \x00 nul" + "y" * 5000
    message = safe_message(hostile)
    assert len(message) < 2100  # 2000 characters, a few of them escaped
    assert json.loads(orjson.dumps({"error": message}))["error"] == message
    assert "\\ud800" in message and "\\x00" in message
    assert safe_message("plain") == "plain"
