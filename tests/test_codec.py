"""topics/codec.py: the kept encodings are the same bytes as ``encode``, in objects of their own."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from topics.codec import EncodeError, encode, encode_bounded, encode_kept

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 63 - 1) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30)


@given(json_values)
def test_encode_kept_and_encode_bounded_write_the_same_bytes_as_encode(value):
    assert encode_kept(value) == encode(value)
    assert encode_bounded(value) == encode(value)
    assert type(encode_kept(value)) is bytes and type(encode_bounded(value)) is bytes


# every kind of character a key may hold: quotes, backslashes, control characters, DEL, separators,
# non-ASCII, astral and (lone) surrogates, which neither way can encode
key_text = st.text(alphabet=st.characters(codec=None), max_size=40) | st.text(
    alphabet='"\\\x00\x1f\x7f\u2028\xa0 /<>&\U0001F600\ud800ab', max_size=12)


@given(key_text)
def test_a_key_quoted_without_orjson_is_the_bytes_orjson_writes(key):
    try:
        expected = encode(key)
    except TypeError:  # (a lone surrogate: not UTF-8)
        with pytest.raises(TypeError):
            encode_kept(key)
        return
    assert encode_kept(key) == expected


@pytest.mark.parametrize("key, quoted_here", [
    ("c000123", True), ("a/b <é>", True), ('say "hi"', False), ("back\\slash", False), ("tab\tstop", False),
    ("del\x7f", False)])
def test_the_quick_way_is_taken_only_where_json_writes_the_string_as_it_is(key, quoted_here, monkeypatch):
    import topics.codec as codec

    calls = []
    monkeypatch.setattr(codec.orjson, "dumps", lambda v: calls.append(v) or encode(v))
    assert codec.encode_kept(key) == encode(key)
    assert (calls == []) is quoted_here


def test_encode_bounded_still_refuses_what_cannot_be_sent():
    with pytest.raises(EncodeError, match="cannot encode"):
        encode_bounded(2 ** 64)  # beyond 64 bits
    with pytest.raises(EncodeError, match="exceed the 10-byte output limit"):
        encode_bounded("x" * 6, key=b"abc", limit=10)  # '"xxxxxx"' is 8 bytes, + 3 of key = 11 > 10
