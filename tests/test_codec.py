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


def test_encode_bounded_still_refuses_what_cannot_be_sent():
    with pytest.raises(EncodeError, match="cannot encode"):
        encode_bounded(2 ** 64)  # beyond 64 bits
    with pytest.raises(EncodeError, match="exceed the 10-byte output limit"):
        encode_bounded("x" * 6, key=b"abc", limit=10)  # '"xxxxxx"' is 8 bytes, + 3 of key = 11 > 10
