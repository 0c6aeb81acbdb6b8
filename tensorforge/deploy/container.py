"""The saved-model file: a JSON header and raw byte sections, each section checked by its sha256.

    writer = ContainerWriter()
    digest = writer.add(array)                 # content-addressed: equal bytes are stored once
    writer.write(path, header)                 # header: any JSON object; the writer adds "sections"
    reader = ContainerReader(path)             # checks magic, format version, size, the header's checksum
    weights = reader.section(digest)           # a flat uint8 array, 64-byte aligned
    reader.verify()                            # waits for every section's sha256; SavedModelError if one differs

Layout (integers little-endian):

    offset   size   what
    0        8      magic b"\\x89TFG\\r\\n\\x1a\\n" (a text-mode copy or a different file fails here)
    8        4      u32 format version (FORMAT_VERSION)
    12       4      u32 reserved, 0
    16       8      u64 n: the header's length in bytes
    24       n      the header: UTF-8 JSON; "sections" ({sha256 hex: [offset from the data start,
                    size]}) and "data_bytes" (the file is data start + data_bytes long)
    24+n     32     sha256 of bytes [0, 24+n): the header's checksum
    56+n     ...    the sections, back to back (data start = 56+n)

Every byte is checked: a truncated or extended file fails the size check, an altered header its
checksum, an altered section its own sha256 (listed in the checksummed header); nothing is used
before it is checked. Sections are read into 64-byte aligned memory (the file needs no padding).
Nothing is ever unpickled: numbers, names and types are JSON, arrays are raw bytes.
Sections are read with `readinto` into aligned memory while a thread pool hashes what was read
(hashlib releases the GIL), so reading and checking overlap on the cores there are.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

MAGIC = b"\x89TFG\r\n\x1a\n"
FORMAT_VERSION = 1
PREAMBLE = struct.Struct("<8sIIQ")  # magic, format version, reserved, header length
DIGEST_BYTES = 32
ALIGNMENT = 64
MAX_HEADER_BYTES = 256 << 20  # a corrupt length field is refused before any allocation


class SavedModelError(ValueError):
    """A saved-model file that cannot be loaded: not one, another format version, truncated, altered
    (a checksum differs), or for a target this machine cannot run. The message names the file."""


def aligned_buffer(nbytes: int, zero: bool = False) -> np.ndarray:
    """A flat uint8 array of `nbytes` starting at a 64-byte aligned address."""
    raw = (np.zeros if zero else np.empty)(nbytes + ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + nbytes]


def byte_view(data) -> memoryview:
    """The raw bytes of an array (C order) or bytes-like object, without a copy when it is contiguous."""
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data)
        return memoryview(data.reshape(-1).view(np.uint8))
    return memoryview(data).cast("B")


def sha256(data) -> str:
    return hashlib.sha256(byte_view(data)).hexdigest()


def hash_pool() -> ThreadPoolExecutor:
    """Threads for sha256 (it releases the GIL on large buffers): one per core, at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return ThreadPoolExecutor(max_workers=max(1, min(4, cores)), thread_name_prefix="tensorforge-sha256")


class ContainerWriter:
    """Collects sections (by content) and writes the file. Hashing an array object twice is avoided
    (its digest is remembered by identity while the writer holds it)."""

    def __init__(self):
        self.sections: dict[str, memoryview] = {}
        self._by_identity: dict[int, tuple[object, str]] = {}

    def remember(self, array, digest: str) -> None:
        """Tell the writer `array`'s digest (computed elsewhere, e.g. for a cache key)."""
        self._by_identity[id(array)] = (array, digest)

    def add(self, data) -> str:
        return self.add_all([data])[0]

    def add_all(self, items: list) -> list[str]:
        """Add arrays or bytes-like objects; their sha256 hex digests, in order (hashed in threads)."""
        digests: list[str | None] = []
        pending = []
        for item in items:
            known = self._by_identity.get(id(item))
            digests.append(known[1] if known is not None and known[0] is item else None)
            if digests[-1] is None:
                pending.append(len(digests) - 1)
        if pending:
            views = {index: byte_view(items[index]) for index in pending}
            with hash_pool() as pool:
                hashed = dict(zip(pending, pool.map(lambda index: hashlib.sha256(views[index]).hexdigest(), pending)))
            for index in pending:
                digests[index] = hashed[index]
                self._by_identity[id(items[index])] = (items[index], hashed[index])
                self.sections.setdefault(hashed[index], views[index])
        for item, digest in zip(items, digests):
            if digest not in self.sections:  # remembered but not yet stored
                self.sections[digest] = byte_view(item)
        return digests

    def write(self, path: str | os.PathLike, header: dict, *, atomic: bool = False) -> int:
        """Write the file; its size in bytes. `atomic`: through a temporary file in the same directory,
        renamed over `path` once complete (readers see the old file or the new one, never a part)."""
        path = Path(path)
        offsets, data_bytes = {}, 0
        for digest, view in self.sections.items():
            offsets[digest] = [data_bytes, view.nbytes]
            data_bytes += view.nbytes
        text = json.dumps(dict(header, sections=offsets, data_bytes=data_bytes), separators=(",", ":")).encode()
        head = PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, len(text)) + text
        head += hashlib.sha256(head).digest()
        total = len(head) + data_bytes
        if atomic:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(handle, "wb") as file:
                    self._write_body(file, head)
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        else:
            with open(path, "wb") as file:
                self._write_body(file, head)
        return total

    def _write_body(self, file, head: bytes) -> None:
        file.write(head)
        for view in self.sections.values():
            file.write(view)


class ContainerReader:
    """An open saved-model file whose header was checked; sections are read on demand and checked
    by `verify()` (call it before using any section)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self._file = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        except FileNotFoundError:
            raise SavedModelError(f"{self.path}: no such file") from None
        except IsADirectoryError:
            raise SavedModelError(f"{self.path} is a directory, not a saved model") from None
        try:
            self.header = self._read_header()
        except BaseException:
            self._file.close()
            raise
        self._sections: dict[str, np.ndarray] = {}
        self._pending: list[tuple[str, Future]] = []
        self._pool: ThreadPoolExecutor | None = None

    def fail(self, problem: str) -> SavedModelError:
        return SavedModelError(f"{self.path}: {problem}")

    def _read_header(self) -> dict:
        size = os.fstat(self._file.fileno()).st_size
        preamble = self._file.read(PREAMBLE.size)
        if len(preamble) < len(MAGIC) or preamble[:len(MAGIC)] != MAGIC:
            raise self.fail("not a tensorforge saved model (its first bytes are not the magic number; "
                            "save one with cm.save(path))")
        if len(preamble) < PREAMBLE.size:
            raise self.fail(f"truncated: the file is {size} bytes, shorter than its fixed header")
        _, version, _, length = PREAMBLE.unpack(preamble)
        if version != FORMAT_VERSION:
            raise self.fail(f"saved-model format version {version}; this tensorforge reads version "
                            f"{FORMAT_VERSION} (save it again with this version)")
        if length > MAX_HEADER_BYTES or PREAMBLE.size + length + DIGEST_BYTES > size:
            raise self.fail(f"truncated or damaged: the header claims {length} bytes, the file has {size}")
        text = self._file.read(length)
        digest = self._file.read(DIGEST_BYTES)
        if hashlib.sha256(preamble + text).digest() != digest:
            raise self.fail("the header's checksum does not match: the file was altered or damaged")
        try:
            header = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise self.fail(f"the header is not JSON ({error})") from None
        if not isinstance(header, dict) or not isinstance(header.get("sections"), dict):
            raise self.fail("the header has no section table")
        self._data_start = PREAMBLE.size + length + DIGEST_BYTES
        data_bytes = header.get("data_bytes")
        expected = self._data_start + data_bytes if isinstance(data_bytes, int) else None
        if expected != size:
            raise self.fail(f"truncated or extended: the file is {size} bytes, its header says {expected}")
        for digest, entry in header["sections"].items():
            if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(v, int) and v >= 0 for v in entry)
                    and self._data_start + entry[0] + entry[1] <= size):
                raise self.fail(f"section {digest[:12]} lies outside the file")
        return header

    def _locate(self, digest: str) -> tuple[int, int]:
        entry = self.header["sections"].get(digest) if isinstance(digest, str) else None
        if entry is None:
            raise self.fail(f"the header refers to a section {str(digest)[:12]} that the file does not have")
        return self._data_start + entry[0], entry[1]

    def size(self, digest: str) -> int:
        return self._locate(digest)[1]

    def read_into(self, digest: str, destination: np.ndarray) -> None:
        """Read section `digest` into `destination` (a flat uint8 array of its size) and queue its check;
        the destination becomes the section's array for later `section(digest)` calls."""
        offset, size = self._locate(digest)
        if destination.nbytes != size:
            raise self.fail(f"section {digest[:12]} is {size} bytes, where {destination.nbytes} were expected")
        view = memoryview(destination)
        self._file.seek(offset)
        done = 0
        while done < size:
            count = self._file.readinto(view[done:])
            if not count:
                raise self.fail(f"truncated while reading section {digest[:12]}")
            done += count
        if self._pool is None:
            self._pool = hash_pool()
        self._pending.append((digest, self._pool.submit(lambda: hashlib.sha256(view).hexdigest())))
        self._sections[digest] = destination

    def section(self, digest: str) -> np.ndarray:
        """Section `digest` as a flat, 64-byte aligned uint8 array (read once; check with verify())."""
        found = self._sections.get(digest)
        if found is None:
            found = aligned_buffer(self._locate(digest)[1])
            self.read_into(digest, found)
        return found

    def has_read(self, digest: str) -> bool:
        return digest in self._sections

    def verify(self) -> None:
        """Wait for the checks of every section read so far; SavedModelError naming the first that differs."""
        pending, self._pending = self._pending, []
        for digest, future in pending:
            if future.result() != digest:
                raise self.fail(f"section {digest[:12]}'s checksum does not match: the file was altered or damaged")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._file.close()

    def __enter__(self) -> ContainerReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
