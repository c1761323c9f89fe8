"""Character vectors out of an R package's lazy-load data, without R.

An installed R package keeps its data sets in ``data/Rdata.rdb`` (the objects,
each serialised and compressed) and ``data/Rdata.rdx`` (a gzipped serialised
index: object name -> ``(offset, length)`` in the ``.rdb``). Both use R's XDR
serialisation (format versions 2 and 3). This reader understands the part of it
that character vectors and the index need: strings, lists, pairlists (attributes),
integer/logical/double vectors, symbols and references. Anything else (functions,
environments, ALTREP objects) is refused with the type it found.

Pure Python, runs wherever it is called (the driver, in the jobs).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import struct
import zlib

__all__ = ["read_lazy_load_index", "read_object", "read_character_vectors"]

# SEXPTYPE codes (R's serialize.c).
_SYMSXP, _LISTSXP, _CHARSXP, _LGLSXP, _INTSXP, _REALSXP, _STRSXP, _VECSXP = 1, 2, 9, 10, 13, 14, 16, 19
_REFSXP, _NILVALUE_SXP = 255, 254
_SPECIAL_NIL = {242, 241, 253, 252, 251, 247, 254}  # empty/base/global env, unbound, missing, base namespace, NULL
_HAS_ATTRIBUTES, _HAS_TAG = 1 << 9, 1 << 10
_LATIN1 = 1 << 14  # CHARSXP level flag (4 << 12)


class _Reader:
    def __init__(self, data: bytes, what: str):
        self.data, self.pos, self.refs, self.what = data, 0, [], what

    def int(self) -> int:
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return value

    def bytes(self, n: int) -> bytes:
        value = self.data[self.pos : self.pos + n]
        self.pos += n
        return value

    def header(self) -> None:
        if self.bytes(2) != b"X\n":
            raise ValueError(f"{self.what}: not R's XDR serialisation (expected 'X\\n', found {self.data[:2]!r}).")
        version = self.int()
        self.int(), self.int()  # writer's and minimal reader's R versions
        if version == 3:
            self.bytes(self.int())  # native encoding name
        elif version != 2:
            raise ValueError(f"{self.what}: R serialisation version {version}; this reader knows versions 2 and 3.")

    def item(self):
        flags = self.int()
        kind = flags & 0xFF
        if kind in _SPECIAL_NIL:
            return None
        if kind == _REFSXP:
            return self.refs[(flags >> 8) - 1]
        if kind == _SYMSXP:
            name = self.item()
            self.refs.append(name)
            return name
        if kind == _CHARSXP:
            length = self.int()
            return None if length == -1 else self.bytes(length).decode("latin-1" if flags & _LATIN1 else "utf-8")
        if kind == _LISTSXP:  # a pairlist; here only attributes: {tag: value}
            if flags & _HAS_ATTRIBUTES:
                self.item()
            tag = self.item() if flags & _HAS_TAG else None
            value, rest = self.item(), self.item()
            return {tag: value, **(rest or {})}
        if kind in (_STRSXP, _VECSXP, _INTSXP, _LGLSXP, _REALSXP):
            n = self.int()
            if kind in (_STRSXP, _VECSXP):
                values = [self.item() for _ in range(n)]
            else:
                code, size = ("d", 8) if kind == _REALSXP else ("i", 4)
                values = list(struct.unpack_from(f">{n}{code}", self.data, self.pos))
                self.pos += size * n
            attributes = self.item() if flags & _HAS_ATTRIBUTES else {}
            names = attributes.get("names") if attributes else None
            return dict(zip(names, values)) if names else values
        raise ValueError(f"{self.what}: R object of type {kind} at byte {self.pos - 4}; this reader knows character "
                         "vectors, lists and numbers only.")


def _deserialise(data: bytes, what: str):
    reader = _Reader(data, what)
    reader.header()
    return reader.item()


def read_lazy_load_index(rdx_path: str | os.PathLike) -> dict:
    """The ``.rdx`` index: ``{"variables": {name: [offset, length]}, "compressed": ..., ...}``."""
    with open(rdx_path, "rb") as f:
        return _deserialise(gzip.decompress(f.read()), str(rdx_path))


def read_object(rdb_path: str | os.PathLike, offset: int, length: int, compressed: int = 1):
    """One object of a ``.rdb`` file, at ``offset`` (``length`` bytes), decompressed as the index says."""
    with open(rdb_path, "rb") as f:
        f.seek(offset)
        blob = f.read(length)
    what = f"{rdb_path} at byte {offset}"
    if compressed in (1, True):  # 4-byte length, then zlib
        data = zlib.decompress(blob[4:])
    else:  # 4-byte length, a type byte, then the data
        kind, body = blob[4:5], blob[5:]
        decompress = {b"Z": zlib.decompress, b"2": bz2.decompress, b"X": lzma.decompress, b"0": bytes}.get(kind)
        if decompress is None:
            raise ValueError(f"{what}: unknown compression type {kind!r}.")
        data = decompress(body)
    return _deserialise(data, what)


def read_character_vectors(data_dir: str | os.PathLike, names=None) -> dict[str, list[str | None]]:
    """The character vectors of an R package's ``data/`` folder (``Rdata.rdb`` + ``Rdata.rdx``), by name.

    Args:
        data_dir: the package's ``data`` folder.
        names: objects to read (default: all). Objects that are not character vectors are skipped.

    Raises:
        FileNotFoundError: ``Rdata.rdx`` or ``Rdata.rdb`` is missing.
        ValueError: the files are not R's lazy-load format.
    """
    rdx, rdb = os.path.join(data_dir, "Rdata.rdx"), os.path.join(data_dir, "Rdata.rdb")
    for path in (rdx, rdb):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found: expected an R package's lazy-load data (Rdata.rdb/.rdx).")
    index = read_lazy_load_index(rdx)
    compressed = (index.get("compressed") or [1])[0]
    vectors = {}
    for name, (offset, length) in index["variables"].items():
        if names is not None and name not in names:
            continue
        value = read_object(rdb, offset, length, compressed)
        if isinstance(value, list) and all(v is None or isinstance(v, str) for v in value):
            vectors[name] = value
    return vectors
