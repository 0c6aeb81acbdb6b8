"""The saved-model file: a JSON header and raw byte sections, every byte of them checked (xxh3_128).

    writer = ContainerWriter()
    name = writer.add(array)                   # a section named by its digest: equal bytes are stored once
    name = writer.add_region(weights, cuts)    # one section checked in parts: [(offset, size), ...]
    writer.write(path, header)                 # header: any JSON object; the writer adds "sections"
    reader = ContainerReader(path, known)      # checks magic, format version, size, the header's checksum
    weights = reader.section(name)             # a flat uint8 array, 64-byte aligned: a view of the mapped file
    reader.verify()                            # waits for every check; SavedModelError if a byte differs

Layout (integers little-endian):

    offset   size   what
    0        8      magic b"\\x89TFG\\r\\n\\x1a\\n" (a text-mode copy or a different file fails here)
    8        4      u32 format version (FORMAT_VERSION)
    12       4      u32 reserved, 0
    16       8      u64 n: the header's length in bytes
    24       n      the header: UTF-8 JSON; "sections" ({name: [offset from the data start, size,
                    parts]}, a part being [offset in the section, size, xxh3_128 hex]) and "data_bytes"
                    (the file is data start + data_bytes long)
    24+n     32     sha256 of bytes [0, 24+n): the header's checksum
    ...             zeros up to the data start, 56+n rounded up to 64; the sections follow, each at a
                    multiple of 64 bytes from it, zeros between them

The checksums are for integrity (a damaged, truncated or edited file), not against an adversary,
who could rewrite them as easily as the bytes: a part's is its XXH3 128-bit hash (the xxhash
package; about 10 GB/s on one core, against sha256's 1), the header's a sha256 (its few hundred
kB cost nothing). `digest(data)` is the part checksum, also the compile cache's constant digest.

A plain section is one part, named by its digest. A region (a model's weights buffer) is cut into
parts (one per weight) named by the digest of its size and parts: a weight that is also a graph
constant, or that two models' buffers both hold, has the same digest in each, so the reader checks
its second copy against the first (or against an array the caller has in memory: `known`) with a
memcmp instead of hashing it again; two parts that differ can thus never pass under one digest.
Bytes of a section outside its parts, and between sections, must be zero. The writer stores equal
bytes once, and never merges two arrays whose digests are equal but bytes not (a memcmp confirms).

Every byte is checked: a truncated or extended file fails the size check, an altered header its
checksum, an altered section byte its part's digest (or comparison), an altered byte of padding
the zero check; nothing is used before verify() returns. Nothing is ever unpickled: numbers, names
and types are JSON, arrays are raw bytes. Hashes and comparisons run in a thread pool (xxhash and
ctypes release the GIL).

The reader maps the file (mmap, private copy-on-write) instead of reading it: a section is a view
of the page cache, no copy and no fresh memory (the weights of a GPT-2-size model are 650 MB), and
processes that load the same file share its pages. As with a shared library, a file must not be
truncated or rewritten in place while a model loaded from it is alive (the mapping would fault);
the writer never does: it writes a temporary file in the same directory and renames it over the path.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import hashlib
import json
import mmap
import os
import stat
import struct
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import xxhash

MAGIC = b"\x89TFG\r\n\x1a\n"
FORMAT_VERSION = 2  # 2: parts checked by xxh3_128 (1: sha256); a generator's models share one weights buffer
PREAMBLE = struct.Struct("<8sIIQ")  # magic, format version, reserved, header length
DIGEST_BYTES = 32
ALIGNMENT = 64
MAX_HEADER_BYTES = 256 << 20  # a corrupt length field is refused before any allocation


class SavedModelError(ValueError):
    """A saved-model file that cannot be loaded: not one, another format version, truncated, altered
    (a checksum differs), or for a target this machine cannot run. The message names the file."""


def align_up(value: int, alignment: int = ALIGNMENT) -> int:
    return -(-value // alignment) * alignment


def byte_view(data) -> memoryview:
    """The raw bytes of an array (C order) or bytes-like object, without a copy when it is contiguous."""
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data)
        return memoryview(data.reshape(-1).view(np.uint8))
    return memoryview(data).cast("B")


def digest(data) -> str:
    """The checksum of a part (and the name of a plain section): XXH3 128-bit of the raw bytes, as hex."""
    return xxhash.xxh3_128_hexdigest(byte_view(data))


def hash_pool() -> ThreadPoolExecutor:
    """Threads for hashing and memcmp (both release the GIL): one per core, at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return ThreadPoolExecutor(max_workers=max(1, min(4, cores)), thread_name_prefix="tensorforge-check")


@functools.cache
def _memcmp():
    """libc's memcmp through ctypes (which releases the GIL), or None where there is no libc to find."""
    try:
        library = ctypes.CDLL(ctypes.util.find_library("c") or None)
        function = library.memcmp
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_int
    function.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
    return function


def same_bytes(first: np.ndarray, second: np.ndarray) -> bool:
    """Whether two flat uint8 arrays hold the same bytes (memcmp, releasing the GIL)."""
    if first.nbytes != second.nbytes:
        return False
    memcmp = _memcmp()
    if memcmp is None or not first.nbytes:
        return memoryview(first) == memoryview(second)
    if first.ctypes.data == second.ctypes.data:
        return True
    return memcmp(first.ctypes.data, second.ctypes.data, first.nbytes) == 0


def _region_name(size: int, parts: list) -> str:
    return digest(json.dumps(["region", size, parts], separators=(",", ":")).encode())


class ContainerWriter:
    """Collects sections (by content) and writes the file. Hashing an array object twice is avoided
    (its digest is remembered by identity while the writer holds it)."""

    def __init__(self, external: dict[str, np.ndarray] | None = None):
        """`external`: arrays every reader will have in memory, by digest (the compile cache's traced
        constants, which its key covers; flat uint8): sections with those bytes are not written."""
        self.sections: dict[str, tuple[memoryview, list]] = {}  # name -> (bytes, parts)
        self.external = dict(external or {})
        self._by_identity: dict[int, tuple[object, str]] = {}
        self._by_size: dict[int, list[tuple[np.ndarray, str]]] = {}  # parts hashed, for a memcmp before a hash
        self._by_digest: dict[str, np.ndarray] = {}  # the bytes each digest was first computed for

    def remember(self, array, name: str) -> None:
        """Tell the writer `array`'s digest (computed elsewhere, e.g. for a cache key)."""
        self._by_identity[id(array)] = (array, name)

    def digest_of(self, array) -> str | None:
        known = self._by_identity.get(id(array))
        return known[1] if known is not None and known[0] is array else None

    def _hash(self, views: list[memoryview]) -> list[str]:
        """The digest of each view; one equal to a part hashed before (memcmp) takes its digest unhashed.
        ValueError if two different byte strings hash alike (which xxh3_128 makes vanishingly rare by
        chance): they would be merged, so the file is not written."""
        if not views:
            return []

        def one(view: memoryview) -> tuple[str, bool]:
            flat = np.frombuffer(view, np.uint8)
            for other, known in self._by_size.get(flat.size, ()):
                if same_bytes(flat, other):
                    return known, False
            return digest(view), True

        with hash_pool() as pool:
            found = list(pool.map(one, views))
        for view, (name, hashed) in zip(views, found):
            flat = np.frombuffer(view, np.uint8)
            first = self._by_digest.setdefault(name, self.external.get(name, flat))
            if hashed and first is not flat and not same_bytes(first, flat):
                raise ValueError(f"two different arrays ({first.nbytes} and {flat.nbytes} bytes) have the same "
                                 f"digest {name}: refusing to store one in place of the other")
            if view.nbytes >= 4096:  # worth comparing the next one of this size to
                self._by_size.setdefault(view.nbytes, []).append((flat, name))
        return [name for name, _ in found]

    def add(self, data) -> str:
        return self.add_all([data])[0]

    def add_all(self, items: list) -> list[str]:
        """Add arrays or bytes-like objects as plain sections; their names (digests), in order."""
        digests = [self.digest_of(item) for item in items]
        pending = [index for index, name in enumerate(digests) if name is None]
        for index, name in zip(pending, self._hash([byte_view(items[index]) for index in pending])):
            digests[index] = name
            self.remember(items[index], name)
        for item, name in zip(items, digests):
            if name not in self.sections and name not in self.external:
                view = byte_view(item)
                self.sections[name] = (view, [[0, view.nbytes, name]])
        return digests

    def add_region(self, data, cuts: list[tuple[int, int]], hints: dict[int, str] | None = None) -> str:
        """Add `data` as one section checked in parts: `cuts` are (offset, size) pairs in order, not
        overlapping; the bytes outside them must be zero. `hints`: digests already known by cut index."""
        view = byte_view(data)
        flat = np.frombuffer(view, np.uint8)
        hints = hints or {}
        covered, position = [], 0
        for offset, size in cuts:
            if offset < position or offset + size > flat.size:
                raise ValueError(f"region cuts overlap or run past its {flat.size} bytes: ({offset}, {size})")
            covered.append(flat[position:offset])
            position = offset + size
        covered.append(flat[position:])
        if any(gap.any() for gap in covered):
            raise ValueError("the bytes of a region outside its cuts must be zero")
        pending = [index for index in range(len(cuts)) if index not in hints]
        names = dict(hints)
        names.update(zip(pending, self._hash([view[cuts[i][0]:cuts[i][0] + cuts[i][1]] for i in pending])))
        parts = [[offset, size, names[index]] for index, (offset, size) in enumerate(cuts)]
        name = _region_name(view.nbytes, parts)
        self.sections.setdefault(name, (view, parts))
        return name

    def write(self, path: str | os.PathLike, header: dict, *, private: bool = False) -> int:
        """Write the file; its size in bytes. Always through a temporary file in the same directory,
        renamed over `path` once complete: readers (and models loaded from the old file) see the old
        file or the new one, never a part. `private` (the cache) keeps the temporary file's private
        permissions (0600); a user's file gets the usual ones."""
        path = Path(path)
        table, data_bytes = {}, 0
        for name, (view, parts) in self.sections.items():
            data_bytes = align_up(data_bytes)
            table[name] = [data_bytes, view.nbytes, parts]
            data_bytes += view.nbytes
        text = json.dumps(dict(header, sections=table, data_bytes=data_bytes), separators=(",", ":")).encode()
        head = PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, len(text)) + text
        head += hashlib.sha256(head).digest()
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a directory: save to a file path, e.g. {path / 'model.tfm'}")
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(head + bytes(align_up(len(head)) - len(head)))
                position = 0
                for view, _ in self.sections.values():
                    file.write(bytes(align_up(position) - position))
                    file.write(view)
                    position = align_up(position) + view.nbytes
            if not private:  # a user's file: the permissions a plain open() would give it
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(temporary, 0o666 & ~umask)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return align_up(len(head)) + data_bytes


class ContainerReader:
    """An open saved-model file whose header was checked and which is mapped into memory; sections are
    views of the mapping, each checked by `verify()` (call it before using any section). `known`
    maps digests (hex) to flat uint8 arrays in memory with those bytes: parts with those digests
    are compared to them rather than hashed."""

    def __init__(self, path: str | os.PathLike, known: dict[str, np.ndarray] | None = None):
        self.path = Path(path)
        self.known = dict(known or {})
        try:
            descriptor = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise SavedModelError(f"{self.path}: no such file") from None
        except IsADirectoryError:
            raise SavedModelError(f"{self.path} is a directory, not a saved model") from None
        try:
            mode = os.fstat(descriptor).st_mode
            if stat.S_ISDIR(mode):
                raise SavedModelError(f"{self.path} is a directory, not a saved model")
            if not stat.S_ISREG(mode):
                raise self.fail("not a regular file")
            self.header = self._read_header(descriptor)
            self._map = _map(descriptor, self._size)
        finally:
            os.close(descriptor)  # the mapping stays
        self._sections: dict[str, np.ndarray] = {}
        self._first: dict[str, np.ndarray] = {}  # digest -> the first part taken with it (hashed)
        self._pending: list[tuple[str, Future]] = []
        self._pool: ThreadPoolExecutor | None = None

    def fail(self, problem: str) -> SavedModelError:
        return SavedModelError(f"{self.path}: {problem}")

    def _read_header(self, descriptor: int) -> dict:
        size = self._size = os.fstat(descriptor).st_size
        preamble = os.pread(descriptor, PREAMBLE.size, 0)
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
        text = os.pread(descriptor, length, PREAMBLE.size)
        checksum = os.pread(descriptor, DIGEST_BYTES, PREAMBLE.size + length)
        if hashlib.sha256(preamble + text).digest() != checksum:
            raise self.fail("the header's checksum does not match: the file was altered or damaged")
        try:
            header = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise self.fail(f"the header is not JSON ({error})") from None
        if not isinstance(header, dict) or not isinstance(header.get("sections"), dict):
            raise self.fail("the header has no section table")
        self._data_start = align_up(PREAMBLE.size + length + DIGEST_BYTES)
        data_bytes = header.get("data_bytes")
        expected = self._data_start + data_bytes if isinstance(data_bytes, int) else None
        if expected != size:
            raise self.fail(f"truncated or extended: the file is {size} bytes, its header says {expected}")
        # the zero bytes: [end of one part, start of the next) between the header, sections and their parts
        self._zeros, position = [], PREAMBLE.size + length + DIGEST_BYTES
        for name, entry in sorted(header["sections"].items(), key=lambda item: _offset(item[1])):
            start = self._data_start + _offset(entry)
            if not _well_formed(entry) or start < position or start % ALIGNMENT or start + entry[1] > size:
                raise self.fail(f"section {str(name)[:12]} is malformed, lies outside the file or overlaps another")
            for offset, part_size, _ in entry[2]:
                self._zeros.append((position, start + offset))
                position = start + offset + part_size
            self._zeros.append((position, start + entry[1]))
            position = start + entry[1]
        self._zeros.append((position, size))
        self._zeros = [(begin, end) for begin, end in self._zeros if end > begin]
        return header

    def _locate(self, name: str) -> list:
        entry = self.header["sections"].get(name) if isinstance(name, str) else None
        if entry is None:
            hint = (" (a compile-cache entry leaves out the traced graph's constants: it loads only through "
                    "tfg.compile; save a model with cm.save to load it)") if "cache_key" in self.header else ""
            raise self.fail(f"the header refers to a section {str(name)[:12]} that the file does not have{hint}")
        return entry

    def section(self, name: str) -> np.ndarray:
        """Section `name` as a flat, 64-byte aligned uint8 array: a view of the mapped file (its checks
        are queued on the first call; see verify())."""
        found = self._sections.get(name)
        if found is None:
            offset, size, parts = self._locate(name)
            start = self._data_start + offset
            found = np.frombuffer(self._map, np.uint8, size, start) if size else np.zeros(0, np.uint8)
            if self._pool is None:
                self._pool = hash_pool()
            for part_offset, part_size, checksum in parts:
                self._check(checksum, found[part_offset:part_offset + part_size])
            self._sections[name] = found
        return found

    def _check(self, name: str, part: np.ndarray) -> None:
        reference = self.known.get(name)
        if reference is None:
            reference = self._first.get(name)
        if reference is not None:
            job = self._pool.submit(lambda: name if same_bytes(part, reference) else "differs")
        else:
            self._first[name] = part
            job = self._pool.submit(digest, part)
        self._pending.append((name, job))

    def verify(self) -> None:
        """Wait for the checks of every section taken so far, and check the bytes between parts are
        zero (once); SavedModelError naming the first part that differs."""
        zeros, self._zeros = self._zeros, []
        for begin, end in zeros:
            if np.frombuffer(self._map, np.uint8, end - begin, begin).any():
                raise self.fail(f"the padding at bytes {begin}-{end} is not zero: the file was altered or damaged")
        pending, self._pending = self._pending, []
        for name, job in pending:
            if job.result() != name:
                raise self.fail(f"a part with checksum {name[:12]} does not match it: the file was altered or damaged")

    def close(self) -> None:
        """Stop the checking threads. The mapping lives on while arrays view it (and goes with the last)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)  # after a failure, the checks not yet begun
            self._pool = None

    def __enter__(self) -> ContainerReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _offset(entry) -> int:
    return entry[0] if isinstance(entry, list) and entry and isinstance(entry[0], int) else -1


def _well_formed(entry) -> bool:
    """[offset, size, parts]: parts in order, inside the section, not overlapping."""
    if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], int) and isinstance(entry[1], int)
            and entry[0] >= 0 and entry[1] >= 0 and isinstance(entry[2], list)):
        return False
    position = 0
    for part in entry[2]:
        if not (isinstance(part, list) and len(part) == 3 and all(isinstance(v, int) for v in part[:2])
                and isinstance(part[2], str) and position <= part[0] <= part[0] + part[1] <= entry[1]):
            return False
        position = part[0] + part[1]
    return True


def _map(descriptor: int, size: int) -> mmap.mmap | bytes:
    """The file mapped private and copy-on-write: arrays on it are writable, and a write (none is
    expected) copies that page for this process only. Its pages are mapped at once where the kernel
    can (MADV_POPULATE_READ, Linux 5.14), not one fault at a time. (MAP_POPULATE would not do: on a
    writable private mapping it copies every page.)"""
    if size == 0:
        return b""
    if not hasattr(mmap, "MAP_PRIVATE"):
        return mmap.mmap(descriptor, size, access=mmap.ACCESS_COPY)
    mapped = mmap.mmap(descriptor, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    with contextlib.suppress(OSError, AttributeError, ValueError):
        mapped.madvise(getattr(mmap, "MADV_POPULATE_READ", 22))
    return mapped
