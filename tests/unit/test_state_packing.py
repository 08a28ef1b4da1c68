"""``server/_packing.py``: what is sealed for a state body, and what is opened from it."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import zstandard

from tofuflow.errors import ServerError
from tofuflow.server._packing import MARKER, pack_state, unpack_state

_BODY = json.dumps({"version": 4, "serial": 1, "lineage": "x", "resources": []}).encode()


def test_a_packed_body_unpacks_to_itself_and_is_smaller() -> None:
    body = _BODY + b" " * 100_000
    packed = pack_state(body)
    assert packed.startswith(MARKER) and len(packed) < 1000
    assert unpack_state(packed, limit=len(body)) == body


def test_bodies_packed_one_after_another_and_in_parallel_threads_each_unpack_alone() -> None:
    # Each thread reuses its compressor: no frame may depend on the one packed before it,
    # or on another thread's (the group writer packs on the loop and in its threads).
    bodies = [_BODY.replace(b'"serial": 1', f'"serial": {i}'.encode()) * (i + 1) for i in range(40)]
    with ThreadPoolExecutor(4) as pool:
        packed = list(pool.map(pack_state, bodies))
    packed += [pack_state(body) for body in bodies]
    for frame, body in zip(packed, bodies + bodies, strict=True):
        assert unpack_state(frame, limit=len(body)) == body


@pytest.mark.parametrize("body", [_BODY, b"  \n" + _BODY, b"", b"\x00not ours"])
def test_a_plaintext_without_the_marker_is_returned_as_it_is(body: bytes) -> None:
    # Versions sealed before compression; no JSON document starts with a NUL byte.
    assert unpack_state(body, limit=1) == body


def test_a_body_over_the_limit_is_refused_before_it_is_decompressed() -> None:
    packed = pack_state(b"{" + b" " * 5000 + b"}")
    with pytest.raises(ServerError, match=r"decompresses to 5002 bytes.*max_state_bytes \(5001\)"):
        unpack_state(packed, limit=5001)
    assert len(unpack_state(packed, limit=5002)) == 5002


@pytest.mark.parametrize(
    "frame",
    [
        pack_state(_BODY)[len(MARKER) : -3],  # truncated
        pack_state(_BODY)[len(MARKER) :] + b"trailing",  # data after the frame
        b"not a zstd frame at all",
        zstandard.ZstdCompressor(write_content_size=False).compress(b" " * 10_000),  # too big
    ],
    ids=["truncated", "trailing", "garbage", "unsized-over-limit"],
)
def test_a_damaged_or_oversized_frame_is_refused_with_what_to_do(frame: bytes) -> None:
    with pytest.raises(ServerError, match=r"stored version 3 of app/prod .*raise server.max_state"):
        unpack_state(MARKER + frame, limit=1000, what="version 3 of app/prod")
