"""State bodies, and runs' plan documents, are compressed before they are sealed (issue 18).

    sealed = keyring.seal(pack_state(body), aad)
    body = unpack_state(keyring.open(sealed, aad), limit=max_state_bytes)

A state document compresses 8-35x (zstd level 1: the benchmark's 256 KiB body to 3 KiB in
0.07 ms), so SQLite writes a few KiB into its WAL and database file per version instead of
the whole ciphertext twice, which capped the write path at the disk's synchronous
bandwidth. A packed plaintext starts with ``MARKER``, which no state document can start
with (a state body is JSON: ``{`` or whitespace first), so versions sealed before this
change, or by a server that does not compress, are opened as they are: no migration.

A plan document (``show -json``) is JSON that repeats itself as state does; it is packed
the same way (``RunService.upload_plan``), and one sealed before that opens as it is.

The ``size`` and ``sha256`` a version shows are those of the body, not of what is sealed.
Compression happens before encryption, so a ciphertext's length tells how well its state
compresses: docs/security.md says why that is acceptable for state at rest.
"""

from __future__ import annotations

import threading

import zstandard

from tofuflow.errors import ServerError

__all__ = ["MARKER", "pack_state", "unpack_state"]

# A NUL byte cannot open a JSON document; the name and number say what follows.
MARKER = b"\x00tofuflow-zstd1\x00"
# Level 1: a third of level 3's time for a few percent more bytes (state is repetitive).
_LEVEL = 1


# A compressor must not be shared between threads. Each thread keeps its own: a new one
# allocates its work space afresh, 40 % of the time a 256 KiB state takes to compress.
_compressors = threading.local()


def pack_state(body: bytes) -> bytes:
    """``MARKER`` and the zstd frame of ``body`` (its size in the frame header)."""
    compressor = getattr(_compressors, "zstd", None)
    if compressor is None:
        compressor = _compressors.zstd = zstandard.ZstdCompressor(level=_LEVEL)
    return MARKER + compressor.compress(body)


def unpack_state(plaintext: bytes, *, limit: int, what: str = "state version") -> bytes:
    """The body from a sealed plaintext: decompressed when it carries ``MARKER``, else as
    it is (sealed before compression). A body that would grow past ``limit`` bytes is
    refused before it is decompressed."""
    if not plaintext.startswith(MARKER):
        return plaintext
    frame = memoryview(plaintext)[len(MARKER) :]
    try:
        declared = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as exc:
        raise _unreadable(what, limit, exc) from exc
    if declared > limit:
        raise ServerError(
            f"the stored {what} decompresses to {declared} bytes, more than this server's "
            f"server.max_state_bytes ({limit}): it was not opened. If that state is "
            "legitimate, raise server.max_state_bytes in the server's configuration"
        )
    try:
        # With a declared size the output is exactly that; without one (never written
        # here) it is bounded by ``limit``.
        return zstandard.ZstdDecompressor().decompress(
            frame, max_output_size=limit if declared < 0 else 0, allow_extra_data=False
        )
    except zstandard.ZstdError as exc:
        raise _unreadable(what, limit, exc) from exc


def _unreadable(what: str, limit: int, exc: Exception) -> ServerError:
    return ServerError(
        f"the stored {what} is not a compressed state of at most {limit} bytes "
        f"(server.max_state_bytes): {exc}. Restore it from a backup or roll back to an "
        "earlier version; if it is legitimate and larger, raise server.max_state_bytes"
    )
