"""llamacpp.gguf: the magic check and the metadata reader, on real GGUFs written by gguf's own GGUFWriter."""

from __future__ import annotations

import dataclasses
import re
import struct
import subprocess

import numpy as np
import pytest
from gguf import GGUFReader, GGUFValueType, GGUFWriter

from ggufbench.core.errors import ConfigError, ToolFailed
from ggufbench.llamacpp.gguf import check_gguf, gguf_metadata, kv_shape, read_kv
from ggufbench.report.recommend import kv_cache_bytes
from ggufbench.sources import synth
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
    with pytest.raises(ConfigError, match="is not a GGUF file"):
        read_kv(html)
    v1 = tmp_path / "v1.gguf"
    v1.write_bytes(b"GGUF" + struct.pack("<IQQ", 1, 0, 0))
    check_gguf(v1)  # the magic is right
    with pytest.raises(ConfigError, match="GGUF version 1, expected 2 or 3"):
        read_kv(v1)


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
