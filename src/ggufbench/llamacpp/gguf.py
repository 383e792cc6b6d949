"""GGUF files: the magic check and a fast reader of the metadata keys (hyperparameters, vocabulary size)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ..core.errors import ConfigError, ToolFailed

GGUF_MAGIC = b"GGUF"


def check_gguf(path: Path) -> None:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ToolFailed(f"{path} is not a GGUF file (starts with {magic!r}, expected b'GGUF')")


# GGUF value types (gguf.GGUFValueType): scalar struct formats; 8 = STRING, 9 = ARRAY.
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1", 10: "<u8", 11: "<i8",
          12: "<f8"}


def read_kv(path: str | Path) -> dict[str, tuple[object, int, int | None]]:
    """The metadata of a GGUF (v2/v3, little-endian): key -> (value, value type, array item type).

    Strings stay bytes (copied byte for byte); arrays are lists. GGUFReader gives the same values but
    takes ~10 s on a 152K-token vocabulary (a numpy view per string); this walks the bytes once."""
    import mmap

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if m[:4] != b"GGUF":
            raise ConfigError(f"{path} is not a GGUF file (starts with {m[:4]!r})")
        version, = struct.unpack_from("<I", m, 4)
        if version not in (2, 3):
            raise ConfigError(f"{path}: GGUF version {version}, expected 2 or 3 (little-endian)")
        n_kv, = struct.unpack_from("<Q", m, 16)
        pos = 24

        def string() -> bytes:
            nonlocal pos
            n, = struct.unpack_from("<Q", m, pos)
            pos += 8 + n
            return m[pos - n:pos]

        def scalar(t: int):
            nonlocal pos
            if t == 8:
                return string()
            v, = struct.unpack_from(_SCALAR[t], m, pos)
            pos += struct.calcsize(_SCALAR[t])
            return v

        out: dict[str, tuple[object, int, int | None]] = {}
        for _ in range(n_kv):
            key = string().decode("utf-8")
            t, = struct.unpack_from("<I", m, pos)
            pos += 4
            if t != 9:
                out[key] = (scalar(t), t, None)
                continue
            sub, n = struct.unpack_from("<IQ", m, pos)
            pos += 12
            if sub == 8:
                vals = [string() for _ in range(n)]
            elif sub in _NUMPY:
                nbytes = n * np.dtype(_NUMPY[sub]).itemsize
                arr = np.frombuffer(m[pos:pos + nbytes], dtype=_NUMPY[sub])  # a copy: the mmap closes
                pos += nbytes
                vals = [bool(x) for x in arr] if sub == 7 else arr.tolist()
            else:
                raise ConfigError(f"{path}: {key} is an array of type {sub} (nested arrays are not copied)")
            out[key] = (vals, t, sub)
    return out


def gguf_metadata(path: str | Path) -> dict:
    """Architecture, vocabulary size and parameter/tensor counts, from the metadata alone (read_kv)."""
    kv = read_kv(path)

    def field(name: str):
        value = kv[name][0] if name in kv else None
        return value.decode("utf-8") if isinstance(value, bytes) else value

    with open(path, "rb") as f:
        f.seek(8)
        n_tensors, = struct.unpack("<Q", f.read(8))
    arch = field("general.architecture")
    tokens = field("tokenizer.ggml.tokens")
    return {"architecture": arch, "name": field("general.name"),
            "block_count": field(f"{arch}.block_count") if arch else None,
            "expert_count": field(f"{arch}.expert_count") if arch else None,
            "n_vocab": len(tokens) if tokens is not None else None,
            "n_tensors": n_tensors, "file_type": field("general.file_type")}


# Hybrid architectures whose linear-attention layers keep no KV cache: every full_attention_interval-th layer
# does (llama.cpp src/models/<arch>.cpp: default 4 when the key is absent).
HYBRID_DEFAULT_INTERVAL = {"qwen35": 4, "qwen35moe": 4, "qwen3next": 4}
KV_SHAPE_COLUMNS = ("n_layer", "n_layer_kv", "n_head_kv", "n_embd_head_k", "n_embd_head_v", "n_ctx_train")


def kv_shape(path: str | Path) -> dict:
    """What sizes a llama.cpp KV cache, from the metadata: layers (and those that keep a KV cache), KV heads,
    key/value head sizes, the training context. Per-layer arrays (head_count_kv) count their nonzero layers."""
    kv = read_kv(path)
    arch = kv.get("general.architecture", (b"",))[0].decode()

    def get(key: str, default=None):
        return kv[f"{arch}.{key}"][0] if f"{arch}.{key}" in kv else default

    n_layer = get("block_count")
    if not arch or n_layer is None:
        return {"architecture": arch or None}
    n_head = get("attention.head_count", 0)
    n_head_kv = get("attention.head_count_kv", n_head)
    n_embd = get("embedding_length", 0)
    heads = n_head if isinstance(n_head, int) else max(n_head)
    head_k = get("attention.key_length", n_embd // heads if heads else None)
    head_v = get("attention.value_length", head_k)
    layers = list(range(n_layer))
    recurrent = get("attention.recurrent_layers")
    interval = get("full_attention_interval", HYBRID_DEFAULT_INTERVAL.get(arch))
    if isinstance(recurrent, list):
        layers = [i for i in layers if not recurrent[i]]
    elif interval:
        layers = [i for i in layers if (i + 1) % interval == 0]
    if isinstance(n_head_kv, list):
        layers = [i for i in layers if n_head_kv[i]]
        n_head_kv = max(n_head_kv)
    return {"architecture": arch, "n_layer": n_layer, "n_layer_kv": len(layers), "n_head_kv": n_head_kv,
            "n_embd_head_k": head_k, "n_embd_head_v": head_v, "n_ctx_train": get("context_length")}
