"""Hypothesis strategies of twin patches shared by the differential tests of the device
path (TwinService message by message, and the core's batch call)."""

from __future__ import annotations

from hypothesis import strategies as st

KEYS = st.sampled_from(["a", "b", "é"])
LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.integers(2**63, 2**70),
    st.sampled_from([1.0, 0.1, 1e16, -0.0, "x", "\n", []]),
)
PATCH = st.recursive(
    st.dictionaries(KEYS, LEAF, max_size=3),
    lambda inner: st.dictionaries(KEYS, st.one_of(LEAF, inner), max_size=3),
    max_leaves=6,
)
