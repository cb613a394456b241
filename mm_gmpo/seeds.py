"""One rule for every derived random seed: :func:`derive_seed`."""

from __future__ import annotations

import hashlib


def derive_seed(base: int, *parts: int | str, bits: int = 63) -> int:
    """A seed in ``[0, 2**bits)`` for the stream named by ``parts`` (e.g. ``"epoch", 3`` or round, attempt) under
    the run's ``base`` seed. Pure and stable across processes, runs and platforms (a hash, not Python's ``hash``);
    different parts give unrelated seeds, so no two streams of a run overlap by arithmetic accident."""
    key = ",".join(str(p) for p in (base, *parts)).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") % (2**bits)
