"""Reference ids (and other ids) as hostile as a host application may choose them, for the tests."""

from __future__ import annotations

from hypothesis import strategies as st

# Each of these has broken a URL somewhere: a separator, a dot segment, a query or fragment start, an
# escape (literal or looking like one), space, a plus (form-decoded as a space), unicode beyond the BMP.
TRICKY = [
    "/",
    ".",
    "..",
    "?",
    "#",
    "%",
    " ",
    "%2F",
    "%2E",
    "%25",
    "&",
    "=",
    "+",
    ";",
    "\\",
    "~",
    "é",
    "日本",
    "\U0001f600",
    "\t",
]
# Whole ids that are only separators and dots: a naive client turns them into another route.
DOTS_AND_SLASHES = [".", "..", "...", "/", "//", "./", "/.", "../", "/..", "../x", "a/../b", "a/./b", "%2E%2E"]
# Examples for parametrised tests: one of each kind.
EXAMPLES = [
    "team/alice", "/leading", "trailing/", "a//b", ".", "..", "...", "a/../b", "?x=1#frag", "100% sure",
    "%2Fnot-a-slash", "two words", "ünïcødé", "日本/ユーザー", "x/inquiries", "x/actions",
]  # fmt: skip


def reference_ids(max_pieces: int = 8):
    """Non-empty strings mixing TRICKY pieces with arbitrary unicode (lone surrogates excluded: no UTF-8
    encoding, hence no URL, can carry them)."""
    anything = st.text(st.characters(codec="utf-8"), min_size=1, max_size=4)
    piece = st.one_of(st.sampled_from(TRICKY), anything)
    mixed = st.lists(piece, min_size=1, max_size=max_pieces).map("".join)
    return st.one_of(st.sampled_from(DOTS_AND_SLASHES), mixed)
