"""GGUF files: a bounded check of the whole header (metadata and tensor table) and a fast reader of the metadata
keys (hyperparameters, vocabulary size).

We read a GGUF before llama.cpp does, so a crafted or damaged one must not make us allocate what it claims: every
count and length is checked against the bytes left in the file before anything is read, and every malformed file
raises one error, BadGguf, naming the file, the byte offset and what is wrong."""

from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import ToolFailed

GGUF_MAGIC = b"GGUF"
TRUNCATED = "the file is truncated or not a GGUF (fetch or write it again)"
DAMAGED = "the file is damaged or not a GGUF (fetch or write it again)"


class BadGguf(ToolFailed):
    """A file that is not a well-formed GGUF: its header, metadata or tensor table is cut off, claims more than
    the file holds, or holds what llama.cpp refuses. The message names the file, the byte offset and the fault."""


# GGUF value types (gguf.GGUFValueType): scalar struct formats; 8 = STRING, 9 = ARRAY.
_SCALAR = {t: struct.Struct(f) for t, f in {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                                            10: "<Q", 11: "<q", 12: "<d"}.items()}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1", 10: "<u8", 11: "<i8",
          12: "<f8"}
_TYPE_NAMES = {0: "uint8", 1: "int8", 2: "uint16", 3: "int16", 4: "uint32", 5: "int32", 6: "float32", 7: "bool",
               8: "string", 9: "array", 10: "uint64", 11: "int64", 12: "float64"}
_INTEGER = frozenset((0, 1, 2, 3, 4, 5, 10, 11))
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")

# The least bytes of one item, to bound a count before its items are read: a metadata key is an 8-byte length,
# at least one byte of name (llama.cpp refuses an empty key), a 4-byte type and at least a 1-byte value; a
# tensor's info is an 8-byte name length, a 4-byte n_dims, a 4-byte type and an 8-byte offset.
_MIN_KV_BYTES = 8 + 1 + 4 + 1
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8
# llama.cpp's limits (ggml.h GGML_MAX_DIMS, GGML_MAX_NAME; gguf.cpp GGUF_DEFAULT_ALIGNMENT; llama-hparams.h
# LLAMA_MAX_LAYERS: llama-model.cpp asserts block_count <= it, an abort rather than an error message).
MAX_DIMS = 4
MAX_NAME = 64
MAX_LAYERS = 512
DEFAULT_ALIGNMENT = 32
# ggml type ids above those the installed gguf package knows pass (a newer llama.cpp's types, whose sizes we do not
# know: llama.cpp refuses those it does not know itself), up to this bound; ggml has about 40.
_NEWER_TYPES_BELOW = 256


def _n(x: int) -> str:
    """1,234; a power of two from 2^32 up as 2^k (what a crafted count looks like)."""
    return f"2^{x.bit_length() - 1}" if x >= 1 << 32 and x & (x - 1) == 0 else f"{x:,}"


def _key(i: int, key: str | None = None) -> str:
    return f"metadata key {i}" + (f" ({key!r})" if key else "")


def _kind(t: int, sub: int | None) -> str:
    """'an array of uint32', 'a string', 'an int32'."""
    kind = f"array of {_TYPE_NAMES.get(sub, sub)}" if t == 9 else _TYPE_NAMES.get(t, str(t))
    return ("an " if kind.startswith(("array", "int")) else "a ") + kind


class _Cursor:
    """A position in a GGUF's bytes that never reads past the end: a fixed-size field is read only when its bytes
    are there, and a count or length is accepted only when the least bytes its items need are there."""

    __slots__ = ("path", "buf", "pos", "end")

    def __init__(self, path, buf, size: int):
        self.path, self.buf, self.pos, self.end = path, buf, 0, size

    def bad(self, what: str, at: int, why: str = DAMAGED) -> BadGguf:
        return BadGguf(f"{self.path}: {what} at byte {at:,}: {why}")

    def claims(self, what: str, claim: str, nbytes: int, at: int) -> None:
        """Raise unless nbytes (the least that `claim` needs) lie between pos and the end of the file."""
        left = self.end - self.pos
        if nbytes > left:
            raise BadGguf(f"{self.path}: {what} claims {claim} at byte {at:,} but only {left:,} bytes remain: "
                          f"{TRUNCATED}")

    def fixed(self, s: struct.Struct, what: str):
        left = self.end - self.pos
        if left < s.size:
            raise self.bad(what, self.pos, f"it needs {s.size} bytes but only {left} remain: {TRUNCATED}")
        v, = s.unpack_from(self.buf, self.pos)
        self.pos += s.size
        return v

    def string(self, what: str) -> bytes:
        at = self.pos
        n = self.fixed(_U64, f"the length of {what}")
        self.claims(what, f"a string of {_n(n)} bytes", n, at)
        self.pos += n
        return self.buf[self.pos - n:self.pos]

    def text(self, what: str) -> str:
        at = self.pos
        raw = self.string(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.bad(f"{what} is not UTF-8 text ({raw[:40]!r})", at) from None

    def strings(self, n: int, what: str) -> list[bytes]:
        """n strings: a vocabulary, the hot loop (150K-250K items), so inlined; each length checked."""
        buf, p, end, unpack = self.buf, self.pos, self.end, _U64.unpack_from
        out: list[bytes] = []
        append = out.append
        i = 0
        try:
            for i in range(n):
                k, = unpack(buf, p)  # struct.error when fewer than 8 bytes remain
                q = p + 8 + k
                if q > end:
                    raise BadGguf(f"{self.path}: string {i:,} of {what} claims {_n(k)} bytes at byte {p:,} but "
                                  f"only {end - p - 8:,} bytes remain: {TRUNCATED}")
                append(buf[p + 8:q])
                p = q
        except struct.error:
            raise self.bad(f"the length of string {i:,} of {what}", p,
                           f"it needs 8 bytes but only {end - p} remain: {TRUNCATED}") from None
        self.pos = p
        return out


@dataclass
class _Header:
    """What one bounded walk of a GGUF's header finds: the metadata, each key's byte offset, the tensor count and
    the cursor just past the metadata (where the tensor table starts)."""

    cursor: _Cursor
    n_tensors: int
    kv: dict[str, tuple[object, int, int | None]] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)


def _walk(path, buf, size: int) -> _Header:
    """The header and the metadata of a GGUF (v2/v3, little-endian), every count bounded by the bytes left."""
    if buf[:4] != GGUF_MAGIC:
        raise BadGguf(f"{path} is not a GGUF file (starts with {bytes(buf[:4])!r}, expected b'GGUF')")
    c = _Cursor(path, buf, size)
    c.pos = 4
    version = c.fixed(_U32, "the GGUF version")
    if version not in (2, 3):
        hint = ("; it looks big-endian, and llama.cpp reads little-endian files only" if version & 0xFFFF == 0
                else "; llama.cpp no longer reads version 1" if version == 1 else "")
        raise BadGguf(f"{path}: GGUF version {version:,} at byte 4, expected 2 or 3 (little-endian){hint}")
    n_tensors = c.fixed(_U64, "the tensor count")
    n_kv = c.fixed(_U64, "the metadata key count")
    c.claims("the header", f"{_n(n_kv)} metadata keys", n_kv * _MIN_KV_BYTES, 16)
    c.claims("the header", f"{_n(n_tensors)} tensors", n_tensors * _MIN_TENSOR_INFO_BYTES, 8)
    head = _Header(c, n_tensors)
    for i in range(n_kv):
        at = c.pos
        key = _read_key(c, i, head)
        head.kv[key] = _read_value(c, _key(i, key))
        head.offsets[key] = at
    return head


def _read_key(c: _Cursor, i: int, head: _Header) -> str:
    at = c.pos
    raw = c.string(_key(i))
    try:
        key = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise c.bad(f"{_key(i)} is not UTF-8 text ({raw[:40]!r})", at) from None
    if not key:
        raise c.bad(f"{_key(i)} is empty (llama.cpp refuses the file)", at)
    if key in head.kv:
        raise c.bad(f"{_key(i, key)} repeats the key at byte {head.offsets[key]:,} (llama.cpp refuses the file)", at)
    return key


def _read_value(c: _Cursor, what: str) -> tuple[object, int, int | None]:
    t = c.fixed(_U32, f"the value type of {what}")
    if t == 9:
        sub = c.fixed(_U32, f"the item type of {what}")
        return _read_array(c, what, sub), t, sub
    if t == 8:
        return c.string(what), t, None
    if t in _SCALAR:
        return c.fixed(_SCALAR[t], what), t, None
    raise c.bad(f"{what} has value type {_n(t)} (GGUF has types 0-12)", c.pos - 4)


def _read_array(c: _Cursor, what: str, sub: int) -> list:
    at = c.pos
    n = c.fixed(_U64, f"the item count of {what}")
    if sub == 8:
        c.claims(what, f"{_n(n)} strings", 8 * n, at)  # each at least its 8-byte length
        return c.strings(n, what)
    if sub in _NUMPY:
        nbytes = n * np.dtype(_NUMPY[sub]).itemsize
        c.claims(what, f"{_n(n)} items of {_TYPE_NAMES[sub]}", nbytes, at)
        arr = np.frombuffer(c.buf[c.pos:c.pos + nbytes], dtype=_NUMPY[sub])  # a copy: the mmap closes
        c.pos += nbytes
        return [bool(x) for x in arr] if sub == 7 else arr.tolist()
    if sub == 9:
        raise c.bad(f"{what} is an array of arrays (llama.cpp reads no nested arrays)", at - 4)
    raise c.bad(f"{what} is an array of value type {_n(sub)} (GGUF has types 0-12)", at - 4)


def _open(path):
    """(file, its bytes mapped, its size); an empty file maps to b"" (mmap refuses it)."""
    f = open(path, "rb")
    try:
        size = os.fstat(f.fileno()).st_size
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    except BaseException:
        f.close()
        raise
    return f, buf, size


def _close(f, buf) -> None:
    if isinstance(buf, mmap.mmap):
        buf.close()
    f.close()


def _read(path) -> _Header:
    f, buf, size = _open(path)
    try:
        return _walk(path, buf, size)
    finally:
        _close(f, buf)


def read_kv(path: str | Path) -> dict[str, tuple[object, int, int | None]]:
    """The metadata of a GGUF (v2/v3, little-endian): key -> (value, value type, array item type).

    Strings stay bytes (copied byte for byte); arrays are lists. GGUFReader gives the same values but
    takes ~10 s on a 152K-token vocabulary (a numpy view per string); this walks the bytes once. A malformed
    file raises BadGguf before anything it claims is allocated."""
    return _read(path).kv


def _tensor_sizes() -> dict[int, tuple[int, int]]:
    """ggml type id -> (elements per block, bytes per block), as the gguf package (llama.cpp's own) lists them."""
    from gguf.constants import GGML_QUANT_SIZES

    return {int(t): sizes for t, sizes in GGML_QUANT_SIZES.items()}


def _alignment(path, head: _Header) -> int:
    value, t, sub = head.kv.get("general.alignment", (DEFAULT_ALIGNMENT, 4, None))
    at = head.offsets.get("general.alignment", 0)
    if t != 4:
        raise BadGguf(f"{path}: metadata key 'general.alignment' at byte {at:,} is {_kind(t, sub)}, expected a "
                      f"uint32 (llama.cpp refuses the file): {DAMAGED}")
    if value == 0 or value & (value - 1):
        raise BadGguf(f"{path}: metadata key 'general.alignment' at byte {at:,} is {value:,}, not a power of 2 "
                      f"(llama.cpp refuses the file): {DAMAGED}")
    return value


@dataclass
class _Tensor:
    index: int
    name: str
    offset: int              # in the data section
    nbytes: int | None       # None: a type newer than the gguf package knows
    at: int                  # the byte of its info


def _check_tensors(path, head: _Header, size: int) -> None:
    """The tensor table, bounded like the metadata, and every tensor's data within the file: llama.cpp's own
    checks (ggml gguf.cpp gguf_init_from_file_impl; llama-model-loader's file bounds), without reading the data."""
    c, align = head.cursor, _alignment(path, head)
    c.claims("the header", f"{_n(head.n_tensors)} tensors", head.n_tensors * _MIN_TENSOR_INFO_BYTES, 8)
    sizes, seen = _tensor_sizes(), {}
    tensors = [_read_tensor_info(c, i, seen, sizes) for i in range(head.n_tensors)]
    expected: int | None = 0  # where the next tensor's data starts (llama.cpp: one after another, each padded)
    for t in tensors:
        if t.offset % align or (expected is not None and t.offset != expected):
            want = f"{expected:,}" if expected is not None else f"a multiple of {align}"
            raise c.bad(f"tensor {t.index:,} ({t.name!r}) has data offset {_n(t.offset)}, expected {want} (llama.cpp "
                        "refuses the file)", t.at)
        # after a type of unknown size, only the alignment is checked here (llama.cpp checks the rest)
        expected = None if expected is None or t.nbytes is None else t.offset + -(-t.nbytes // align) * align
    data = c.pos + (-c.pos % align if tensors else 0)  # the data section starts aligned
    for t in tensors:
        start = data + t.offset
        if start + (t.nbytes or 0) > size:
            span = f"{t.nbytes:,} bytes from byte {start:,} to {start + t.nbytes:,}" if t.nbytes else f"byte {start:,}"
            raise BadGguf(f"{path}: the data of tensor {t.index:,} ({t.name!r}) lies at {span}, past the end of the "
                          f"file ({size:,} bytes): the file is truncated (a download or a copy cut short; fetch or "
                          "write it again)")


def _read_tensor_info(c: _Cursor, i: int, seen: dict[str, int], sizes: dict[int, tuple[int, int]]) -> _Tensor:
    """One tensor's name, shape, type and offset, as llama.cpp checks them; its size in bytes."""
    at = c.pos
    name = c.text(f"the name of tensor {i:,}")
    what = f"tensor {i:,} ({name!r})"
    if len(name.encode()) >= MAX_NAME:
        raise c.bad(f"{what} has a name of {len(name.encode())} bytes (llama.cpp takes fewer than {MAX_NAME})", at)
    if name in seen:
        raise c.bad(f"{what} repeats the name of tensor {seen[name]:,} (llama.cpp refuses the file)", at)
    seen[name] = i
    at_dims = c.pos
    n_dims = c.fixed(_U32, f"the dimension count of {what}")
    if n_dims > MAX_DIMS:
        raise c.bad(f"{what} has {_n(n_dims)} dimensions (ggml has at most {MAX_DIMS})", at_dims)
    ne = [c.fixed(_I64, f"dimension {j} of {what}") for j in range(n_dims)]
    if any(d < 0 for d in ne):
        raise c.bad(f"{what} has a negative dimension {ne}", at_dims + 4)
    n_elements = math.prod(ne)
    if n_elements >= 1 << 63:
        raise c.bad(f"{what} has {_n(n_elements)} elements {ne}, more than ggml can index", at_dims + 4)
    at_type = c.pos
    ggml_type = c.fixed(_U32, f"the type of {what}")
    offset = c.fixed(_U64, f"the data offset of {what}")
    if ggml_type not in sizes:
        if ggml_type <= max(sizes) or ggml_type >= _NEWER_TYPES_BELOW:
            raise c.bad(f"{what} has ggml type {_n(ggml_type)}, not one llama.cpp reads", at_type)
        return _Tensor(i, name, offset, None, c.pos - 8)  # a newer type: llama.cpp checks it
    block, type_size = sizes[ggml_type]
    row = ne[0] if ne else 1
    if row % block:
        raise c.bad(f"{what} has rows of {row:,} elements, not a multiple of its type's block ({block})", at_dims + 4)
    return _Tensor(i, name, offset, n_elements // block * type_size, c.pos - 8)


def check_gguf(path: Path) -> None:
    """The header, the metadata and the tensor table of a GGUF, each bounded by the file's size, the tensors'
    data within the file, and the keys the measurements read (gguf_metadata, kv_shape) of the types they need:
    BadGguf (naming the file, the byte and the fault) for anything llama.cpp would refuse or that is cut short,
    at the job that first reads the file. Reads the header only (a 152K-token vocabulary in ~0.1 s), never the
    tensor data."""
    f, buf, size = _open(path)
    try:
        head = _walk(path, buf, size)
        _check_tensors(path, head, size)
    finally:
        _close(f, buf)
    _metadata(path, head)
    _kv_shape(path, head)


# What the measurements read from the metadata: each value of the type it must have, else BadGguf ------------

class _Fields:
    """Typed access to a GGUF's metadata: a key of the wrong type is a BadGguf naming the key and its byte."""

    def __init__(self, path, head: _Header):
        self.path, self.kv, self.offsets = path, head.kv, head.offsets

    def bad(self, key: str, what: str) -> BadGguf:
        return BadGguf(f"{self.path}: metadata key {key!r} at byte {self.offsets[key]:,} {what}: {DAMAGED}")

    def text(self, key: str) -> str | None:
        if key not in self.kv:
            return None
        value, t, sub = self.kv[key]
        if t != 8:
            raise self.bad(key, f"is {_kind(t, sub)}, expected a string")
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise self.bad(key, f"is not UTF-8 text ({value[:40]!r})") from None

    def integer(self, key: str, default: int | None = None) -> int | None:
        """A non-negative integer (every count and size in a GGUF is)."""
        if key not in self.kv:
            return default
        value, t, sub = self.kv[key]
        if t not in _INTEGER:
            raise self.bad(key, f"is {_kind(t, sub)}, expected an integer")
        if value < 0:
            raise self.bad(key, f"is {value:,}, expected a count")
        return value

    def layers(self, arch: str) -> int | None:
        key = f"{arch}.block_count"
        n = self.integer(key)
        if n is not None and n > MAX_LAYERS:
            raise self.bad(key, f"is {_n(n)}, more layers than llama.cpp's {MAX_LAYERS} (LLAMA_MAX_LAYERS)")
        return n

    def per_layer(self, key: str, n_layer: int, default=None, exact: bool = True):
        """An integer, or one integer per layer (n_layer of them; at least n_layer where not exact)."""
        if key not in self.kv:
            return default
        value, t, sub = self.kv[key]
        if t != 9:
            return self.integer(key)
        if sub not in _INTEGER and sub != 7:
            raise self.bad(key, f"is {_kind(t, sub)}, expected integers")
        if len(value) < n_layer or (exact and len(value) != n_layer):
            items = f"{len(value):,} item" + ("" if len(value) == 1 else "s")
            raise self.bad(key, f"has {items}, expected one per layer (block_count = {n_layer:,})")
        return value[:n_layer]

    def count(self, key: str) -> int | None:
        if key not in self.kv:
            return None
        value, t, sub = self.kv[key]
        if t != 9:
            raise self.bad(key, f"is {_kind(t, sub)}, expected an array")
        return len(value)


def tokenizer(path: str | Path) -> dict:
    """The tokenizer a GGUF carries, typed: model (text), tokens (a list of bytes), token_type (one integer per
    token, or None), add_bos (bool), bos_id (int or None); a key of the wrong type is a BadGguf naming it."""
    head = _read(path)
    f = _Fields(path, head)
    key = "tokenizer.ggml.tokens"
    tokens, t, sub = head.kv.get(key, (None, None, None))
    if tokens is not None and (t != 9 or sub != 8):
        raise f.bad(key, f"is {_kind(t, sub)}, expected an array of strings")
    types = f.per_layer("tokenizer.ggml.token_type", len(tokens)) if tokens is not None else None
    if types is not None and not isinstance(types, list):
        raise f.bad("tokenizer.ggml.token_type", "is one integer, expected one per token")
    add_bos = head.kv.get("tokenizer.ggml.add_bos_token", (False, 7, None))
    if add_bos[1] != 7:
        raise f.bad("tokenizer.ggml.add_bos_token", f"is {_kind(add_bos[1], add_bos[2])}, expected a bool")
    return {"model": f.text("tokenizer.ggml.model"), "tokens": tokens or [], "token_type": types,
            "add_bos": bool(add_bos[0]), "bos_id": f.integer("tokenizer.ggml.bos_token_id")}


def gguf_metadata(path: str | Path) -> dict:
    """Architecture, vocabulary size and parameter/tensor counts, from the metadata alone (read_kv)."""
    return _metadata(path, _read(path))


def _metadata(path, head: _Header) -> dict:
    get = _Fields(path, head)
    arch = get.text("general.architecture")
    return {"architecture": arch, "name": get.text("general.name"),
            "block_count": get.layers(arch) if arch else None,
            "expert_count": get.integer(f"{arch}.expert_count") if arch else None,
            "n_vocab": get.count("tokenizer.ggml.tokens"),
            "n_tensors": head.n_tensors, "file_type": get.integer("general.file_type")}


# Hybrid architectures whose linear-attention layers keep no KV cache: every full_attention_interval-th layer
# does (llama.cpp src/models/<arch>.cpp: default 4 when the key is absent).
HYBRID_DEFAULT_INTERVAL = {"qwen35": 4, "qwen35moe": 4, "qwen3next": 4}
KV_SHAPE_COLUMNS = ("n_layer", "n_layer_kv", "n_head_kv", "n_embd_head_k", "n_embd_head_v", "n_ctx_train")


def kv_shape(path: str | Path) -> dict:
    """What sizes a llama.cpp KV cache, from the metadata: layers (and those that keep a KV cache), KV heads,
    key/value head sizes, the training context. Per-layer arrays (head_count_kv) count their nonzero layers."""
    return _kv_shape(path, _read(path))


def _kv_shape(path, head: _Header) -> dict:
    get = _Fields(path, head)
    arch = get.text("general.architecture")
    n_layer = get.layers(arch) if arch else None
    if not arch or n_layer is None:
        return {"architecture": arch or None}
    n_head = get.per_layer(f"{arch}.attention.head_count", n_layer, 0)
    n_head_kv = get.per_layer(f"{arch}.attention.head_count_kv", n_layer, n_head)
    n_embd = get.integer(f"{arch}.embedding_length", 0)
    heads = n_head if isinstance(n_head, int) else max(n_head, default=0)
    head_k = get.integer(f"{arch}.attention.key_length", n_embd // heads if heads else None)
    head_v = get.integer(f"{arch}.attention.value_length", head_k)
    # a range, not a list: what block_count claims is not allocated (a 102-byte file claiming 5e7 layers took 1.9 GiB)
    layers: range | list[int] = range(n_layer)
    recurrent = get.per_layer(f"{arch}.attention.recurrent_layers", n_layer, exact=False)
    interval = get.integer(f"{arch}.full_attention_interval", HYBRID_DEFAULT_INTERVAL.get(arch))
    if isinstance(recurrent, list):
        layers = [i for i in layers if not recurrent[i]]
    elif interval:
        layers = range(interval - 1, n_layer, interval)  # the layers i with (i + 1) % interval == 0
    if isinstance(n_head_kv, list):
        layers = [i for i in layers if n_head_kv[i]]
        n_head_kv = max(n_head_kv, default=0)
    return {"architecture": arch, "n_layer": n_layer, "n_layer_kv": len(layers), "n_head_kv": n_head_kv,
            "n_embd_head_k": head_k, "n_embd_head_v": head_v, "n_ctx_train": get.integer(f"{arch}.context_length")}
