"""llamacpp.gguf: the magic check and the metadata reader, on real GGUFs written by gguf's own GGUFWriter."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import struct
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader, GGUFValueType, GGUFWriter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ggufbench
from ggufbench.core.errors import ToolFailed
from ggufbench.llamacpp.gguf import BadGguf, check_gguf, gguf_metadata, kv_shape, read_kv
from ggufbench.report.recommend import kv_cache_bytes
from ggufbench.sources import synthetic_moe as synth
from tests.support.hubserver import tiny_gguf

TOKENS = ["<s>", "</s>", "Hello", " world", "Ünï", "你好"]


def write_model(path, n_tensors: int = 2) -> None:
    w = GGUFWriter(str(path), "qwen3moe")
    w.add_name("tiny moe")
    w.add_block_count(4)
    w.add_expert_count(8)
    w.add_file_type(1)  # MOSTLY_F16
    w.add_float32("qwen3moe.rope.freq_base", 1e6)
    w.add_bool("tokenizer.ggml.add_bos_token", False)
    w.add_token_list(TOKENS)
    w.add_token_scores([0.0, -1.5, -2.0, -2.5, -3.0, -3.5])
    w.add_array("test.flags", [True, False, True])
    for i in range(n_tensors):
        w.add_tensor(f"blk.{i}.w", np.full(16, i, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_metadata_of_a_written_model(tmp_path):
    path = tmp_path / "m.gguf"
    write_model(path, n_tensors=3)
    assert gguf_metadata(path) == {"architecture": "qwen3moe", "name": "tiny moe", "block_count": 4,
                                   "expert_count": 8, "n_vocab": len(TOKENS), "n_tensors": 3, "file_type": 1}


def test_read_kv_agrees_with_gguf_reader(tmp_path):
    path = tmp_path / "m.gguf"
    write_model(path)
    kv = read_kv(path)
    assert kv["tokenizer.ggml.tokens"] == ([t.encode() for t in TOKENS], GGUFValueType.ARRAY, GGUFValueType.STRING)
    assert kv["general.name"] == (b"tiny moe", GGUFValueType.STRING, None)  # strings stay bytes
    assert kv["qwen3moe.rope.freq_base"] == (1e6, GGUFValueType.FLOAT32, None)
    assert kv["tokenizer.ggml.add_bos_token"] == (False, GGUFValueType.BOOL, None)
    assert kv["test.flags"] == ([True, False, True], GGUFValueType.ARRAY, GGUFValueType.BOOL)
    assert kv["tokenizer.ggml.scores"][0] == [0.0, -1.5, -2.0, -2.5, -3.0, -3.5]
    reader = GGUFReader(path)
    assert set(kv) == {f.name for f in reader.fields.values() if not f.name.startswith("GGUF.")}
    for name, field in reader.fields.items():
        if name in kv:
            assert kv[name][1] == field.types[0]
            if field.types[0] not in (GGUFValueType.ARRAY, GGUFValueType.STRING):
                assert kv[name][0] == pytest.approx(field.contents())


def test_keys_a_file_lacks_are_none(tmp_path):
    path = tmp_path / "t.gguf"
    path.write_bytes(tiny_gguf("shard", extra={"split.count": 2}))
    meta = gguf_metadata(path)
    assert meta["architecture"] == "llama" and meta["name"] == "shard" and meta["n_tensors"] == 1
    assert meta["block_count"] is None and meta["n_vocab"] is None and meta["file_type"] is None
    assert read_kv(path)["split.count"] == (2, GGUFValueType.UINT16, None)


def test_not_a_gguf_or_another_version(tmp_path):
    html = tmp_path / "model.gguf"
    html.write_bytes(b"<!DOCTYPE html><html>rate limited</html>")  # what a proxy may save under the name
    with pytest.raises(ToolFailed, match=r"is not a GGUF file \(starts with b'<!DO'"):
        check_gguf(html)
    with pytest.raises(BadGguf, match="is not a GGUF file"):
        read_kv(html)
    v1 = tmp_path / "v1.gguf"
    v1.write_bytes(b"GGUF" + struct.pack("<IQQ", 1, 0, 0))
    for read in (check_gguf, read_kv):  # the magic is right, the version is not
        with pytest.raises(BadGguf, match="GGUF version 1 at byte 4, expected 2 or 3"):
            read(v1)


# llama.cpp's own account of the cache it allocated (the last one: a fit pass before it allocates nothing)
KV_SIZE = re.compile(r"llama_kv_cache: size =\s+([\d.]+) MiB \(\s*(\d+) cells,\s+(\d+) layers")


@pytest.mark.parametrize(("arch", "vocab", "kv_layers"), [("qwen3moe", "ggml-vocab-qwen2.gguf", 4),
                                                          ("qwen35moe", "ggml-vocab-qwen35.gguf", 1)])
@pytest.mark.parametrize("kv", ["f16", "q8_0"])
def test_kv_shape_sizes_the_cache_llama_cpp_allocates(arch, vocab, kv_layers, kv, llama_bin, llama_src, tmp_path):
    """The estimate from kv_shape equals the KV buffer the real llama.cpp allocates (its own log line), for a
    plain MoE and for Qwen3.5's hybrid layout, where only every 4th layer keeps a KV cache."""
    path = tmp_path / f"{arch}.gguf"
    synth.write_synthetic_moe(path, llama_src / "models" / vocab,
                              params=dataclasses.replace(synth.PRESETS["tiny"], arch=arch, head_dim=32), seed=0)
    shape = kv_shape(path)
    assert (shape["architecture"], shape["n_layer"], shape["n_layer_kv"]) == (arch, 4, kv_layers)
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 1000)
    ctx = 1024
    out = subprocess.run([str(llama_bin / "llama-perplexity"), "-m", str(path), "-f", str(text), "-c", str(ctx),
                          "-b", str(ctx), "--chunks", "1", "-t", "1", "-ctk", kv, "-ctv", kv, "-fa", "on", "-v"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    mib, cells, layers = KV_SIZE.findall(out.stdout + out.stderr)[-1]
    assert (int(cells), int(layers)) == (ctx, kv_layers)
    assert kv_cache_bytes(shape, ctx, kv, kv) / 2**20 == pytest.approx(float(mib), abs=0.006)  # printed %.2f


# Crafted and damaged GGUFs (issue 25): every count and length is bounded by the bytes left in the file, and every
# malformed file is one BadGguf naming the file, the byte and the fault, before anything it claims is allocated. ---

MIB = 1 << 20
READERS = (read_kv, check_gguf, gguf_metadata, kv_shape)
ALL = {read.__name__ for read in READERS}


def outcome(read, path) -> tuple[object, int]:
    """read(path)'s result, or the BadGguf it raised (any other exception fails the test), and the peak of the
    memory Python and numpy allocated meanwhile."""
    tracemalloc.start()
    try:
        try:
            result = read(path)
        except BadGguf as e:
            result = e
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, peak


def refused(read, path, match: str = "") -> str:
    """The message of the BadGguf that read(path) raises, which names the file; under 1 MiB allocated meanwhile."""
    result, peak = outcome(read, path)
    assert isinstance(result, BadGguf), f"{read.__name__} read it: {result!r}"
    assert str(path) in str(result) and re.search(match, str(result)), str(result)
    assert peak < MIB, f"{read.__name__} allocated {peak:,} bytes before refusing: {result}"
    return str(result)


@dataclasses.dataclass(frozen=True)
class Layout:
    """A real GGUF (write_model's) and where its parts lie, as gguf's own GGUFReader finds them."""

    data: bytes
    keys: dict[str, int]      # key -> the byte of its length
    tensors: dict[str, int]   # tensor -> the byte of its info (name length)
    kv_end: int               # where the tensor table starts
    data_start: int
    end: int                  # the end of the last tensor's data

    def value(self, key: str) -> int:
        """The byte of the key's value (an array's item type; its count is 4 bytes on)."""
        return self.keys[key] + 8 + len(key) + 4

    def dims(self, tensor: str) -> int:
        """The byte of the tensor's n_dims (its dims follow, then its type and offset)."""
        return self.tensors[tensor] + 8 + len(tensor)

    def patch(self, at: int, fmt: str, value) -> bytes:
        return self.data[:at] + struct.pack(fmt, value) + self.data[at + struct.calcsize(fmt):]


@functools.cache
def real() -> Layout:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.gguf"
        write_model(path)
        reader = GGUFReader(path)
        keys = {name: f.offset for name, f in reader.fields.items() if not name.startswith("GGUF.")}
        tensors = {t.name: t.field.offset for t in reader.tensors}
        return Layout(path.read_bytes(), keys, tensors, min(tensors.values()),
                      min(t.data_offset for t in reader.tensors),
                      max(t.data_offset + t.n_bytes for t in reader.tensors))


def string(b: bytes | str) -> bytes:
    return struct.pack("<Q", len(b)) + (b.encode() if isinstance(b, str) else b)


def kv(key: bytes | str, t: int, payload: bytes) -> bytes:
    return string(key) + struct.pack("<I", t) + payload


def u32(key: str, v: int) -> bytes:
    return kv(key, GGUFValueType.UINT32, struct.pack("<I", v))


def text(key: str, v: bytes | str) -> bytes:
    return kv(key, GGUFValueType.STRING, string(v))


def array(key: str, fmt: str, items: list) -> bytes:
    sub = {"<I": GGUFValueType.UINT32, "<?": GGUFValueType.BOOL}[fmt]
    payload = struct.pack("<IQ", sub, len(items)) + b"".join(struct.pack(fmt, x) for x in items)
    return kv(key, GGUFValueType.ARRAY, payload)


def tensor(name: str, ne: list[int], ggml_type: int = 0, offset: int = 0) -> bytes:
    """A tensor's info: name, n_dims, dims, ggml type (0 = F32), offset in the data section."""
    return string(name) + struct.pack(f"<I{len(ne)}qIQ", len(ne), *ne, ggml_type, offset)


def crafted(*kvs: bytes, tensors: tuple[bytes, ...] = (), data: bytes = b"") -> bytes:
    """A GGUF v3 written with struct: the header, these metadata entries and tensor infos, and the data section
    (aligned to 32 bytes) when there are tensors."""
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs) + b"".join(tensors)
    return head + (bytes(-len(head) % 32) + data if tensors else b"")


def tokens_claiming(n: int) -> bytes:
    """A file of 69 bytes whose vocabulary claims n tokens and holds none."""
    return crafted(kv("tokenizer.ggml.tokens", GGUFValueType.ARRAY, struct.pack("<IQ", GGUFValueType.STRING, n)))


def the_issues_102_byte_file() -> bytes:
    """A file of 102 bytes whose block_count claims 50 million layers: kv_shape listed them all (1.9 GiB)."""
    return crafted(text("general.architecture", "llama"), u32("llama.block_count", 50_000_000))


def test_the_layout_is_what_gguf_writes(tmp_path):
    """The offsets the crafted cases patch: GGUFReader's, checked against the bytes; the file itself passes."""
    r = real()
    assert r.data[r.keys["general.name"] + 8:][:12] == b"general.name"
    assert r.data[r.value("general.name") + 8:][:8] == b"tiny moe"
    assert struct.unpack_from("<IQ", r.data, r.value("tokenizer.ggml.tokens")) == (GGUFValueType.STRING, len(TOKENS))
    assert struct.unpack_from("<I", r.data, r.dims("blk.1.w")) == (1,)
    assert r.end == len(r.data)
    path = tmp_path / "ok.gguf"
    path.write_bytes(r.data)
    check_gguf(path)


def test_crafted_tensors_llama_cpp_reads_pass(tmp_path):
    """The struct-written tensor tables the cases below break: a scalar (no dims), a 2-D Q8_0, a type newer than
    the gguf package knows (its size unknown here: only its offset is checked), all read as GGUFReader reads them."""
    path = tmp_path / "t.gguf"
    path.write_bytes(crafted(tensors=(tensor("s", []), tensor("q", [64, 2], 8, 32)), data=bytes(32 + 2 * 2 * 34)))
    check_gguf(path)
    assert [(t.name, t.n_elements) for t in GGUFReader(path).tensors] == [("s", 1), ("q", 128)]
    path.write_bytes(crafted(tensors=(tensor("new", [32], 200),), data=bytes(32)))
    check_gguf(path)


# (case, the file's bytes, the readers that refuse it, what the message says)
CLAIMS = [
    ("tensor count 2^40", lambda r: r.patch(8, "<Q", 1 << 40), READERS,
     r": the header claims 2\^40 tensors at byte 8 but only [\d,]+ bytes remain"),
    ("key count 2^40", lambda r: r.patch(16, "<Q", 1 << 40), READERS,
     r": the header claims 2\^40 metadata keys at byte 16 but only [\d,]+ bytes remain"),
    ("key length 2^63", lambda r: r.patch(r.keys["general.name"], "<Q", 1 << 63), READERS,
     r": metadata key 1 claims a string of 2\^63 bytes at byte 72 but only 656 bytes remain"),
    ("string length 2^63", lambda r: r.patch(r.value("general.name"), "<Q", 1 << 63), READERS,
     r"metadata key 1 \('general.name'\) claims a string of 2\^63 bytes at byte 96 but only 632 bytes remain"),
    ("string length 2^40", lambda r: r.patch(r.value("general.name"), "<Q", 1 << 40), READERS,
     r"claims a string of 2\^40 bytes"),
    ("token count 2^40", lambda r: r.patch(r.value("tokenizer.ggml.tokens") + 4, "<Q", 1 << 40), READERS,
     r"metadata key 7 \('tokenizer.ggml.tokens'\) claims 2\^40 strings at byte 335 but only 393 bytes remain"),
    ("token length 2^40", lambda r: r.patch(r.value("tokenizer.ggml.tokens") + 12, "<Q", 1 << 40), READERS,
     r"string 0 of metadata key 7 \('tokenizer.ggml.tokens'\) claims 2\^40 bytes at byte 343"),
    ("score count 2^40", lambda r: r.patch(r.value("tokenizer.ggml.scores") + 4, "<Q", 1 << 40), READERS,
     r"\('tokenizer.ggml.scores'\) claims 2\^40 items of float32 at byte"),
    ("flag count 2^64-1", lambda r: r.patch(r.value("test.flags") + 4, "<Q", (1 << 64) - 1), READERS,
     r"\('test.flags'\) claims 18,446,744,073,709,551,615 items of bool at byte"),
    ("tensor name length 2^63", lambda r: r.patch(r.tensors["blk.0.w"], "<Q", 1 << 63), (check_gguf,),
     r"the name of tensor 0 claims a string of 2\^63 bytes at byte 526"),
    ("a 69-byte file claiming 2^28 tokens", lambda r: tokens_claiming(1 << 28), READERS,
     r"metadata key 0 \('tokenizer.ggml.tokens'\) claims 268,435,456 strings at byte 61 but only 0 bytes remain: "
     r"the file is truncated or not a GGUF"),
]


@pytest.mark.faults
@pytest.mark.parametrize(("case", "make", "readers", "message"), CLAIMS, ids=[c[0] for c in CLAIMS])
def test_a_count_or_length_beyond_the_file_is_refused_before_it_is_allocated(case, make, readers, message, tmp_path):
    """Before: struct.error, OverflowError, or the memory the claim asks for. Each reader that reads that part
    refuses it, naming the file, the byte and the claim, under 1 MiB allocated."""
    path = tmp_path / "crafted.gguf"
    path.write_bytes(make(real()))
    for read in readers:
        assert "the file is truncated or not a GGUF" in refused(read, path, message)


PROBE = r"""
import resource, sys
import gguf  # imported before measuring: check_gguf reads ggml's type sizes from it
from ggufbench.llamacpp import gguf as ours

def kib(key):
    return int(next(ln for ln in open("/proc/self/status") if ln.startswith(key)).split()[1])

# room for 256 MiB more address space: a reader that allocates what the file claims dies of MemoryError, not the host
_, hard = resource.getrlimit(resource.RLIMIT_AS)
room = (kib("VmSize:") << 10) + (256 << 20)
resource.setrlimit(resource.RLIMIT_AS, (room if hard == resource.RLIM_INFINITY else min(room, hard), hard))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for name in ("read_kv", "check_gguf", "gguf_metadata", "kv_shape"):
    try:
        getattr(ours, name)(sys.argv[1])
        print(name, "read it")
    except ours.BadGguf as e:
        print(name, "BadGguf:", e)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


@pytest.mark.faults
@pytest.mark.parametrize(("case", "make", "readers"), [
    ("the issue's 102-byte file", lambda r: the_issues_102_byte_file(), {"check_gguf", "gguf_metadata", "kv_shape"}),
    ("2^28 tokens in 69 bytes", lambda r: tokens_claiming(1 << 28), ALL),
    ("2^60 tokens in 69 bytes", lambda r: tokens_claiming(1 << 60), ALL),
    ("a string of 2^63 bytes", lambda r: r.patch(r.value("general.name"), "<Q", 1 << 63), ALL),
])
def test_resident_memory_does_not_grow_in_a_fresh_process(case, make, readers, tmp_path):
    """The issue's measurement: the resident set of a fresh process (ru_maxrss) before and after reading the file
    (before: 1.9 GiB for the 102-byte file), with its address space capped so that a regression fails here
    instead of taking the machine's memory."""
    path = tmp_path / "crafted.gguf"
    path.write_bytes(make(real()))
    src = str(Path(ggufbench.__file__).parents[1])  # the package this test imported
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (src, os.environ.get("PYTHONPATH"))))}
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, timeout=120,
                         env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    *lines, grew_kib = out.stdout.splitlines()
    assert {ln.split()[0] for ln in lines if ln.split()[1:3] == ["BadGguf:", f"{path}:"]} == readers, out.stdout
    assert int(grew_kib) < 50 << 10, f"resident memory grew by {int(grew_kib):,} KiB"


@pytest.mark.faults
def test_cut_at_every_byte_is_named_truncated(tmp_path):
    """A file cut anywhere before the end of its last tensor's data (a download or a copy cut short) is refused by
    check_gguf; one cut before the end of its metadata by every reader. Nothing else is raised."""
    r, path = real(), tmp_path / "cut.gguf"
    path.write_bytes(r.data)
    full = read_kv(path)
    for n in range(r.end):
        path.write_bytes(r.data[:n])
        message = refused(check_gguf, path)
        assert ("is not a GGUF file" if n < 4 else "the file is truncated") in message, (n, message)
        if n < r.kv_end:
            for read in (read_kv, gguf_metadata, kv_shape):
                assert refused(read, path) == message
        else:
            assert read_kv(path) == full
    path.write_bytes(r.data)
    check_gguf(path)


def test_a_cut_names_the_part_it_falls_in(tmp_path):
    """Cut inside each key's length, where its value starts, inside each tensor's info, and in the last tensor's
    data: the message names that key or tensor (or, within the least bytes their count needs, the count)."""
    r, path = real(), tmp_path / "cut.gguf"
    header = 24 + len(r.keys) * (8 + 1 + 4 + 1)
    for key in r.keys:
        for cut, message in ((r.keys[key] + 3, r"the length of metadata key \d+ at byte [\d,]+: it needs 8 bytes but "
                                                r"only 3 remain"),
                             (r.value(key), rf"metadata key \d+ \({re.escape(repr(key))}\).* but only \d+ "
                                                r"(bytes )?remain")):
            path.write_bytes(r.data[:cut])
            refused(read_kv, path, message if cut >= header else r"the header claims 10 metadata keys at byte 16")
    table = r.kv_end + len(r.tensors) * (8 + 4 + 4 + 8)
    for tensor in r.tensors:
        cut = r.dims(tensor) + 6
        path.write_bytes(r.data[:cut])
        refused(check_gguf, path, rf"dimension 0 of tensor \d \('{tensor}'\) at byte [\d,]+: it needs 8 bytes"
                if cut >= table else r"the header claims 2 tensors at byte 8 but only \d+ bytes remain")
    path.write_bytes(r.data[:-1])
    refused(check_gguf, path, r"the data of tensor 1 \('blk.1.w'\) lies at 64 bytes from byte 672 to 736, past the "
                              r"end of the file \(735 bytes\): the file is truncated")


def tensor_field(tensor: str, after_dims: int, fmt: str, value):
    """Patch the tensor's info: after_dims = 0 its n_dims, 4 its first dim, 12 its type, 16 its offset (1-D)."""
    return lambda r: r.patch(r.dims(tensor) + after_dims, fmt, value)


def key_type(key: str, value: int):
    return lambda r: r.patch(r.keys[key] + 8 + len(key), "<I", value)


# (case, the file's bytes, the readers that refuse it, what the message says)
MALFORMED = [
    ("version 1", lambda r: r.patch(4, "<I", 1), READERS,
     r"GGUF version 1 at byte 4, expected 2 or 3 \(little-endian\); llama.cpp no longer reads version 1"),
    ("version 4", lambda r: r.patch(4, "<I", 4), READERS, r"GGUF version 4 at byte 4, expected 2 or 3"),
    ("big-endian", lambda r: r.patch(4, ">I", 3), READERS, r"GGUF version 50,331,648 at byte 4.*looks big-endian"),
    ("key not UTF-8", lambda r: r.patch(r.keys["general.name"] + 8, "<B", 0xFF), READERS,
     r"metadata key 1 is not UTF-8 text \(b'\\xffeneral.name'\) at byte 72: the file is damaged or not a GGUF"),
    ("value type 13", key_type("general.file_type", 13), READERS,
     r"metadata key 4 \('general.file_type'\) has value type 13 \(GGUF has types 0-12\) at byte 210"),
    ("value type 2^31", key_type("general.file_type", 1 << 31), READERS, r"has value type 2,147,483,648"),
    ("nested array", lambda r: r.patch(r.value("test.flags"), "<I", GGUFValueType.ARRAY), READERS,
     r"metadata key 9 \('test.flags'\) is an array of arrays \(llama.cpp reads no nested arrays\) at byte 511"),
    ("array of type 13", lambda r: r.patch(r.value("test.flags"), "<I", 13), READERS,
     r"\('test.flags'\) is an array of value type 13 \(GGUF has types 0-12\)"),
    ("a repeated tensor name", lambda r: r.patch(r.tensors["blk.1.w"] + 8, "7s", b"blk.0.w"), (check_gguf,),
     r"tensor 1 \('blk.0.w'\) repeats the name of tensor 0 \(llama.cpp refuses the file\) at byte 565"),
    ("tensor name not UTF-8", lambda r: r.patch(r.tensors["blk.1.w"] + 8, "<B", 0xFE), (check_gguf,),
     r"the name of tensor 1 is not UTF-8 text \(b'\\xfelk.1.w'\) at byte 565"),
    ("5 dimensions", tensor_field("blk.0.w", 0, "<I", 5), (check_gguf,),
     r"tensor 0 \('blk.0.w'\) has 5 dimensions \(ggml has at most 4\)"),
    ("2^32-1 dimensions", tensor_field("blk.0.w", 0, "<I", (1 << 32) - 1), (check_gguf,),
     r"has 4,294,967,295 dimensions"),
    ("a negative dimension", tensor_field("blk.0.w", 4, "<q", -16), (check_gguf,),
     r"tensor 0 \('blk.0.w'\) has a negative dimension \[-16\]"),
    ("a dimension of 2^40", tensor_field("blk.1.w", 4, "<q", 1 << 40), (check_gguf,),
     r"the data of tensor 1 \('blk.1.w'\) lies at 4,398,046,511,104 bytes from byte 672 .* the file is truncated"),
    ("a removed ggml type", tensor_field("blk.0.w", 12, "<I", 4), (check_gguf,),
     r"tensor 0 \('blk.0.w'\) has ggml type 4, not one llama.cpp reads"),
    ("ggml type 2^31", tensor_field("blk.0.w", 12, "<I", 1 << 31), (check_gguf,), r"has ggml type 2,147,483,648"),
    ("rows not whole blocks", tensor_field("blk.0.w", 12, "<I", 8), (check_gguf,),
     r"tensor 0 \('blk.0.w'\) has rows of 16 elements, not a multiple of its type's block \(32\)"),
    ("an offset out of order", tensor_field("blk.1.w", 16, "<Q", 96), (check_gguf,),
     r"tensor 1 \('blk.1.w'\) has data offset 96, expected 64 \(llama.cpp refuses the file\)"),
    ("an offset of 2^63", tensor_field("blk.1.w", 16, "<Q", 1 << 63), (check_gguf,),
     r"has data offset 2\^63, expected 64"),
    ("a name of 64 bytes", lambda r: crafted(tensors=(tensor("n" * 64, [8]),), data=bytes(32)), (check_gguf,),
     r"tensor 0 \('n{64}'\) has a name of 64 bytes \(llama.cpp takes fewer than 64\) at byte 24"),
    ("2^64 elements", lambda r: crafted(tensors=(tensor("big", [1 << 62, 4]),)), (check_gguf,),
     r"tensor 0 \('big'\) has 2\^64 elements \[4611686018427387904, 4\], more than ggml can index at byte 39"),
    ("a newer type's data past the end",
     lambda r: crafted(tensors=(tensor("new", [32], 200), tensor("new2", [32], 200, 4096)), data=bytes(32)),
     (check_gguf,), r"the data of tensor 1 \('new2'\) lies at byte 4,192, past the end of the file \(128 bytes\)"),
    ("an empty key", lambda r: crafted(u32("a", 1), u32("", 2)), READERS,
     r"metadata key 1 is empty \(llama.cpp refuses the file\) at byte 41"),
    ("a repeated key", lambda r: crafted(u32("a", 1), u32("b", 2), u32("a", 3)), READERS,
     r"metadata key 2 \('a'\) repeats the key at byte 24 \(llama.cpp refuses the file\) at byte 58"),
    ("alignment 3", lambda r: crafted(u32("general.alignment", 3)), (check_gguf,),
     r"'general.alignment' at byte 24 is 3, not a power of 2"),
    ("alignment a string", lambda r: crafted(text("general.alignment", "32")), (check_gguf,),
     r"'general.alignment' at byte 24 is a string, expected a uint32"),
]


@pytest.mark.faults
@pytest.mark.parametrize(("case", "make", "readers", "message"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_a_malformed_header_is_named(case, make, readers, message, tmp_path):
    """What llama.cpp would refuse, refused by each reader that reads that part, naming the file and the byte."""
    path = tmp_path / "crafted.gguf"
    path.write_bytes(make(real()))
    for read in readers:
        refused(read, path, message)


def model(*kvs: bytes) -> bytes:
    return crafted(text("general.architecture", "qwen35"), u32("qwen35.block_count", 4), *kvs)


# (case, the file's bytes, the readers that refuse it, what the message says): a well-formed file whose keys are
# not what the measurements read, refused where they are read, and by check_gguf at the job that first reads it
WRONG_KEYS = [
    ("architecture a number", crafted(u32("general.architecture", 7)), READERS[1:],
     r"metadata key 'general.architecture' at byte 24 is a uint32, expected a string"),
    ("architecture not UTF-8", crafted(text("general.architecture", b"qwen\xff")), READERS[1:],
     r"'general.architecture' at byte 24 is not UTF-8 text \(b'qwen\\xff'\)"),
    ("name an array", crafted(array("general.name", "<I", [1])), (check_gguf, gguf_metadata),
     r"'general.name' at byte 24 is an array of uint32, expected a string"),
    ("block_count a string", crafted(text("general.architecture", "llama"), text("llama.block_count", "32")),
     READERS[1:], r"'llama.block_count' at byte 69 is a string, expected an integer"),
    ("block_count a bool", crafted(text("general.architecture", "llama"),
                                   kv("llama.block_count", GGUFValueType.BOOL, b"\x01")),
     READERS[1:], r"'llama.block_count' at byte 69 is a bool, expected an integer"),
    ("block_count negative", crafted(text("general.architecture", "llama"),
                                     kv("llama.block_count", GGUFValueType.INT32, struct.pack("<i", -1))),
     READERS[1:], r"'llama.block_count' at byte 69 is -1, expected a count"),
    ("head_count_kv shorter than block_count", model(array("qwen35.attention.head_count_kv", "<I", [0, 0, 2])),
     (check_gguf, kv_shape), r"'qwen35.attention.head_count_kv' at byte 104 has 3 items, expected one per layer "
                             r"\(block_count = 4\)"),
    ("head_count an empty array", model(array("qwen35.attention.head_count", "<I", [])),
     (check_gguf, kv_shape), r"'qwen35.attention.head_count' at byte 104 has 0 items, expected one per layer "
                             r"\(block_count = 4\)"),
    ("recurrent_layers shorter than block_count", model(array("qwen35.attention.recurrent_layers", "<?", [True])),
     (check_gguf, kv_shape), r"'qwen35.attention.recurrent_layers' at byte 104 has 1 item, expected one per layer "
                             r"\(block_count = 4\)"),
    ("embedding_length a float", model(kv("qwen35.embedding_length", GGUFValueType.FLOAT32, struct.pack("<f", 1))),
     (check_gguf, kv_shape), r"'qwen35.embedding_length' at byte 104 is a float32, expected an integer"),
    ("tokens a number", crafted(u32("tokenizer.ggml.tokens", 5)), (check_gguf, gguf_metadata),
     r"'tokenizer.ggml.tokens' at byte 24 is a uint32, expected an array"),
]


@pytest.mark.faults
@pytest.mark.parametrize(("case", "data", "readers", "message"), WRONG_KEYS, ids=[c[0] for c in WRONG_KEYS])
def test_keys_of_the_wrong_type_are_named(case, data, readers, message, tmp_path):
    """Before: KeyError, TypeError, IndexError or UnicodeDecodeError from gguf_metadata and kv_shape."""
    path = tmp_path / "crafted.gguf"
    path.write_bytes(data)
    read_kv(path)  # well-formed: the metadata reads
    for read in readers:
        refused(read, path, message + ": the file is damaged or not a GGUF")
    for read in set(READERS) - set(readers) - {read_kv}:
        read(path)


@pytest.mark.faults
@pytest.mark.parametrize("n_layer", [513, 50_000_000, 1 << 62])
def test_more_layers_than_llama_cpp_takes_is_refused_not_listed(n_layer, tmp_path):
    """llama.cpp asserts block_count <= LLAMA_MAX_LAYERS (an abort); kv_shape listed every layer claimed."""
    path = tmp_path / "m.gguf"
    path.write_bytes(crafted(text("general.architecture", "qwen35"),
                             kv("qwen35.block_count", GGUFValueType.UINT64, struct.pack("<Q", n_layer))))
    claim = f"{n_layer:,}" if n_layer < 1 << 32 else "2\\^62"
    for read in (check_gguf, gguf_metadata, kv_shape):
        refused(read, path, rf"'qwen35.block_count' at byte 70 is {claim}, more layers than llama.cpp's 512 "
                            r"\(LLAMA_MAX_LAYERS\)")
    path.write_bytes(crafted(text("general.architecture", "qwen35"), u32("qwen35.block_count", 512)))
    assert (kv_shape(path)["n_layer"], kv_shape(path)["n_layer_kv"]) == (512, 128)


def test_layers_that_keep_a_kv_cache_are_counted_as_before(tmp_path):
    """The hybrid layouts: every 4th layer by default, the recurrent_layers flags, zero KV heads."""
    path = tmp_path / "m.gguf"
    path.write_bytes(model(array("qwen35.attention.head_count_kv", "<I", [2, 2, 2, 2])))
    assert kv_shape(path)["n_layer_kv"] == 1
    path.write_bytes(model(array("qwen35.attention.recurrent_layers", "<?", [True, False, True, False, True]),
                           array("qwen35.attention.head_count_kv", "<I", [2, 0, 2, 2])))
    assert kv_shape(path)["n_layer_kv"] == 1  # layers 1 and 3 keep a cache; layer 1 has no KV heads
    path.write_bytes(model(u32("qwen35.full_attention_interval", 2)))
    assert kv_shape(path)["n_layer_kv"] == 2
    check_gguf(path)


# Random damage: any truncation, bytes or fields changed anywhere in the header, metadata or tensor table ends in a
# result or in BadGguf, never another exception, and never allocates more than a few MiB. -------------------------

# values a crafted count, length or type takes: the limits and what is just beyond the file
WORDS = st.sampled_from([0, 1, 7, 8, 9, 12, 13, 63, 64, 255, 1 << 31, (1 << 32) - 1, 1 << 32, 1 << 40, 1 << 62,
                         1 << 63, (1 << 64) - 1]) | st.integers(0, (1 << 64) - 1)
DAMAGE = st.one_of(
    st.tuples(st.just("cut"), st.integers(0, 740)),
    st.tuples(st.just("byte"), st.integers(0, 607), st.integers(0, 255)),
    st.tuples(st.just("<I"), st.integers(0, 604), WORDS.map(lambda x: x & 0xFFFFFFFF)),
    st.tuples(st.just("<Q"), st.integers(0, 600), WORDS),
)


def damaged(data: bytes, changes) -> bytes:
    for change in changes:
        if change[0] == "cut":
            data = data[:change[1]]
        elif change[0] == "byte":
            data = data[:change[1]] + bytes([change[2]]) + data[change[1] + 1:]
        else:
            fmt, at, value = change
            size = struct.calcsize(fmt)
            if at + size <= len(data):
                data = data[:at] + struct.pack(fmt, value) + data[at + size:]
    return data


@pytest.mark.faults
@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.lists(DAMAGE, min_size=1, max_size=3))
def test_random_damage_ends_in_a_result_or_bad_gguf(changes):
    r = real()
    assert r.data_start == 608 and len(r.data) == 736  # the ranges above: the header is bytes 0-607
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "damaged.gguf"
        path.write_bytes(damaged(r.data, changes))
        for read in READERS:
            result, peak = outcome(read, path)  # anything but a result or BadGguf fails here
            assert peak < 4 * MIB, f"{read.__name__} allocated {peak:,} bytes: {result!r}"
            if isinstance(result, BadGguf):
                assert str(result).startswith(f"{path}"), result


def tokens(*names: str) -> bytes:
    return kv("tokenizer.ggml.tokens", GGUFValueType.ARRAY,
              struct.pack("<IQ", GGUFValueType.STRING, len(names)) + b"".join(string(n) for n in names))


@pytest.mark.faults
@pytest.mark.parametrize(("entries", "why"), [
    ((u32("tokenizer.ggml.tokens", 5),), r"'tokenizer.ggml.tokens' at byte [\d,]+ is .*expected an array of strings"),
    ((tokens("a", "b"), array("tokenizer.ggml.token_type", "<I", [1])),
     r"'tokenizer.ggml.token_type' .* has 1 item, expected one per"),
    ((tokens("a"), u32("tokenizer.ggml.model", 7)), r"'tokenizer.ggml.model' .* expected a string"),
])
def test_a_tokenizer_of_the_wrong_type_is_named(tmp_path, entries, why):
    """The readers of a GGUF's vocabulary (sharded KLD's read_vocab, the synthetic model's tokenizer copy) get typed
    keys: a scalar for the token list, a token_type list of another length, a numeric model name are one BadGguf
    (they were a raw TypeError or ValueError)."""
    from ggufbench.llamacpp.gguf import tokenizer
    from ggufbench.measure.shards.text import read_vocab

    path = tmp_path / "v.gguf"
    path.write_bytes(crafted(*entries))
    with pytest.raises(BadGguf, match=why):
        tokenizer(path)
    with pytest.raises(BadGguf, match=why):
        read_vocab(path)
