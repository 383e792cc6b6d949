"""The synthetic MoE GGUF (ggufbench.synth) on the real llama.cpp: it loads and runs in llama-bench and
llama-perplexity, the offload flags (-ot "exps=CPU", --n-cpu-moe N) act on its expert tensors, and its
tokenizer is the real one (llama.cpp's own tokenizer test vectors give the same ids).

llama.cpp comes from $GGUFBENCH_LLAMA_BIN, else this checkout's results/builds/cpu/bin, else the demo's
build (the build cache, or a fresh CPU build: ~3-5 min on 2 cores). The vocab GGUFs come from the demo's
llama.cpp source tree (models/ggml-vocab-qwen2.gguf, -qwen35.gguf). Models here are ~26 MB."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ggufbench.core.cache import cache_dir
from ggufbench.core.errors import ConfigError
from ggufbench.llamacpp.bench_output import parse_bench_jsonl
from ggufbench.llamacpp.gguf import read_kv
from ggufbench.llamacpp.perplexity_output import parse_perplexity
from ggufbench.sources import synthetic_moe as synth
from tests.conftest import demo_build

VOCAB = {"qwen3moe": "ggml-vocab-qwen2.gguf", "qwen35moe": "ggml-vocab-qwen35.gguf"}


EXPS_REGEX = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"  # common.h LLM_FFN_EXPS_REGEX; -ncmoe adds blk\.N


OVERRIDE_LOG = re.compile(r"tensor (\S+) \(.*\) buffer type overridden to CPU")


@pytest.fixture(scope="module", params=list(VOCAB))
def model(request, llama_src, tmp_path_factory) -> dict:
    """The tiny preset of each architecture: 4 layers, 8 experts of n_ff_exp 32, n_embd 64, F16 (~26 MB)."""
    arch = request.param
    rec = synth.write_synthetic_moe(tmp_path_factory.mktemp(arch) / f"{arch}.gguf", llama_src / "models" / VOCAB[arch],
                                    params=dataclasses.replace(synth.PRESETS["tiny"], arch=arch), seed=0)
    return rec


def run(cmd: list, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def bench(llama_bin: Path, path: str, *extra: str) -> tuple[list[dict], str]:
    proc = run([llama_bin / "llama-bench", "-m", path, "-p", "32", "-n", "8", "-r", "1", "-t", "1", "-o", "jsonl",
                *extra])
    return parse_bench_jsonl(proc.stdout), proc.stderr


@pytest.mark.parametrize("arch", list(VOCAB))
def test_expert_tensors_are_what_the_offload_patterns_match(arch):
    p = dataclasses.replace(synth.PRESETS["tiny"], arch=arch)
    specs = {s.name: s for s in synth.tensor_plan(p, 1000)}
    exps = {n for n in specs if re.search(EXPS_REGEX, n)}
    assert exps == {f"blk.{i}.ffn_{k}_exps.weight" for i in range(p.n_layer) for k in ("gate", "up", "down")}
    assert exps == {n for n, s in specs.items() if s.is_expert}
    for i in range(p.n_layer):  # --n-cpu-moe N: blk\.i<EXPS> for i < N
        assert {n for n in specs if re.search(rf"blk\.{i}{EXPS_REGEX}", n)} == {
            f"blk.{i}.ffn_{k}_exps.weight" for k in ("gate", "up", "down")}
        # numpy order (ggml's ne reversed): [n_expert, n_ff_exp, n_embd] for gate/up, [.., n_embd, n_ff_exp] down
        assert specs[f"blk.{i}.ffn_gate_exps.weight"].shape == (p.n_expert, p.n_ff_exp, p.n_embd)
        assert specs[f"blk.{i}.ffn_up_exps.weight"].shape == (p.n_expert, p.n_ff_exp, p.n_embd)
        assert specs[f"blk.{i}.ffn_down_exps.weight"].shape == (p.n_expert, p.n_embd, p.n_ff_exp)
        assert specs[f"blk.{i}.ffn_gate_inp.weight"].shape == (p.n_expert, p.n_embd)


def test_invalid_shapes_are_refused():
    for bad in ({"n_expert_used": 9}, {"n_head": 6, "n_head_kv": 4}, {"arch": "llama"}, {"n_expert": 600},
                {"arch": "qwen35moe", "ssm_dt_rank": 3}):
        with pytest.raises(ConfigError):
            dataclasses.replace(synth.PRESETS["tiny"], **bad).validate()


@pytest.mark.parametrize(("preset", "gb"), [("qwen3moe-gpu", 4), ("qwen3moe-gpu", 8), ("qwen35moe-gpu", 6)])
def test_size_target_for_the_gpu_run(preset, gb):
    n_vocab = 151936
    target = gb * 10**9
    p = synth.plan_for_size(target, n_vocab, base=preset)
    step = synth.estimate_bytes(dataclasses.replace(p, n_ff_exp=p.n_ff_exp + 32), n_vocab) - \
        synth.estimate_bytes(p, n_vocab)
    assert p.n_ff_exp % 32 == 0
    assert target - step < synth.estimate_bytes(p, n_vocab) <= target
    s = synth.plan_summary(p, n_vocab)
    assert s["expert_bytes"] > 0.5 * s["tensor_bytes"]  # the experts carry the size, as in the real MoEs
    with pytest.raises(ConfigError, match="too small"):
        synth.plan_for_size(10**9, n_vocab, base=preset)


def test_file_holds_the_plan_and_the_vocab_tokenizer_byte_for_byte(model, llama_src):
    from gguf import GGUFReader

    r = GGUFReader(model["path"])  # the gguf package's own reader, independent of models.read_kv
    p = dataclasses.replace(synth.PRESETS["tiny"], arch=model["arch"])
    plan = synth.tensor_plan(p, model["n_vocab"])
    assert [t.name for t in r.tensors] == [s.name for s in plan]
    for t, s in zip(r.tensors, plan, strict=True):
        assert tuple(int(x) for x in reversed(t.shape)) == s.shape, t.name
        assert t.tensor_type.name == ("F32" if s.keep_f32 or len(s.shape) == 1 else "F16"), t.name
    fields = r.fields
    arch = model["arch"]
    assert fields["general.architecture"].contents() == arch
    for key, want in (("block_count", 4), ("expert_count", 8), ("expert_used_count", 2),
                      ("expert_feed_forward_length", 32), ("embedding_length", 64)):
        assert fields[f"{arch}.{key}"].contents() == want, key
    vocab = read_kv(llama_src / "models" / VOCAB[arch])
    ours = {k: v for k, v in read_kv(model["path"]).items() if k.startswith("tokenizer.")}
    assert ours == {k: v for k, v in vocab.items() if k.startswith("tokenizer.")}
    assert len(ours) >= 8 and len(ours["tokenizer.ggml.tokens"][0]) == model["n_vocab"] == 151936
    # the gguf package reads the same tokenizer that read_kv copied
    assert fields["tokenizer.ggml.tokens"].contents()[:1000] == [
        t.decode() for t in vocab["tokenizer.ggml.tokens"][0][:1000]]
    merges = vocab["tokenizer.ggml.merges"][0]
    assert fields["tokenizer.ggml.merges"].contents()[-5:] == [t.decode() for t in merges[-5:]]
    assert fields["tokenizer.ggml.pre"].contents() == vocab["tokenizer.ggml.pre"][0].decode()
    assert fields["tokenizer.ggml.eos_token_id"].contents() == vocab["tokenizer.ggml.eos_token_id"][0]
    # weights N(0, 0.02²), norms ones
    t = {x.name: x for x in r.tensors}
    w = np.asarray(t["blk.0.ffn_up_exps.weight"].data, dtype=np.float32)
    assert 0.018 < float(w.std()) < 0.022 and abs(float(w.mean())) < 0.001
    assert (np.asarray(t["blk.1.attn_norm.weight"].data) == 1).all()


def test_weights_are_deterministic_by_seed(llama_src, tmp_path):
    vocab = llama_src / "models" / VOCAB["qwen3moe"]

    def write(name: str, seed: int) -> tuple[str, dict]:
        rec = synth.write_synthetic_moe(tmp_path / name, vocab, seed=seed, n_layer=2)
        return hashlib.sha256(Path(rec["path"]).read_bytes()).hexdigest(), rec

    a, rec = write("a.gguf", 7)
    b, _ = write("b.gguf", 7)
    c, rec_c = write("c.gguf", 8)
    assert a == b and a != c and rec["file_size"] == rec_c["file_size"]
    assert not list(tmp_path.glob(".*partial*"))


def test_llama_bench_runs_it(model, llama_bin):
    rows, _ = bench(llama_bin, model["path"])
    assert [r["test"] for r in rows] == ["pp32", "tg8"]
    for r in rows:
        assert math.isfinite(r["avg_ts"]) and r["avg_ts"] > 0
        assert r["model_n_params"] == model["n_params"]
        assert r["model_size"] == model["tensor_bytes"]
        assert r["model_type"].startswith(f"{model['arch']} ")


def test_exps_cpu_overrides_every_expert_tensor(model, llama_bin):
    rows, log = bench(llama_bin, model["path"], "-ot", "exps=CPU", "-v")
    assert {(r["tensor_buft_overrides"], r["n_cpu_moe"]) for r in rows} == {("exps=CPU", 0)}
    overridden = OVERRIDE_LOG.findall(log)
    assert sorted(overridden) == sorted(f"blk.{i}.ffn_{k}_exps.weight" for i in range(4)
                                        for k in ("gate", "up", "down"))


def test_n_cpu_moe_overrides_the_first_n_layers_experts(model, llama_bin):
    rows, log = bench(llama_bin, model["path"], "-ncmoe", "1,3", "-v")
    assert [(r["test"], r["n_cpu_moe"], r["tensor_buft_overrides"]) for r in rows] == [
        ("pp32", 1, "none"), ("tg8", 1, "none"), ("pp32", 3, "none"), ("tg8", 3, "none")]
    overridden = OVERRIDE_LOG.findall(log)  # one model load per -ncmoe value, in order
    want = [[f"blk.{i}.ffn_{k}_exps.weight" for i in range(n) for k in ("gate", "up", "down")] for n in (1, 3)]
    assert sorted(overridden[:3]) == sorted(want[0]) and sorted(overridden[3:]) == sorted(want[1])


def test_llama_perplexity_is_finite_and_about_the_vocabulary(model, llama_bin, tmp_path):
    """Random weights of std 0.02 give near-uniform predictions: PPL ≈ n_vocab (151,936)."""
    import pydoc_data.topics

    text = tmp_path / "text.txt"
    text.write_text(" ".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))[:6000])
    proc = run([llama_bin / "llama-perplexity", "-m", model["path"], "-f", text, "-c", "64", "-b", "64",
                "--chunks", "4", "-t", "1"])
    res = parse_perplexity(proc.stdout + proc.stderr)
    assert res.n_chunks == 4 and len(res.chunk_ppl) == 4
    assert math.isfinite(res.ppl) and 0.5 * model["n_vocab"] < res.ppl < 2 * model["n_vocab"]


def _vocab_tests(inp: Path, out: Path) -> list[tuple[str, list[int]]]:
    """llama.cpp's tokenizer test vectors, split as tests/test-tokenizer-0.cpp does."""
    raw, sep, cases, pos = inp.read_bytes().decode(), "\n__ggml_vocab_test__\n", [], 0
    while pos < len(raw):
        nxt = raw.find(sep, pos)
        cases.append(raw[pos:] if nxt < 0 else raw[pos:nxt])
        pos = len(raw) if nxt < 0 else nxt + len(sep)
    ids = [[int(x) for x in line.split()] for line in out.read_text().splitlines()]
    assert len(cases) == len(ids) > 20
    return list(zip(cases, ids, strict=True))


def _tokenize(llama_bin: Path, model: str | Path, text_file: Path, *extra: str) -> list[int]:
    proc = run([llama_bin / "llama-tokenize", "-m", model, "-f", text_file, "--ids", "--log-disable",
                "--no-escape", *extra])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_tokenizer_is_the_vocab_ggufs(model, llama_bin, llama_src, tmp_path):
    """llama.cpp's own test vectors for the vocab: a few cases give exactly the expected ids, and all of them in
    one text give the same ids from our file as from the vocab GGUF (one llama-tokenize run each, not one per
    case: the metadata is byte-identical, test_file_holds_..., so this is the end-to-end check of it)."""
    vocab = llama_src / "models" / VOCAB[model["arch"]]
    f = tmp_path / "case.txt"
    cases = _vocab_tests(Path(f"{vocab}.inp"), Path(f"{vocab}.out"))
    failures = []
    for text, want in [c for c in cases if len(c[0].strip()) > 8][:3]:
        f.write_bytes(text.encode())
        got = _tokenize(llama_bin, model["path"], f, "--no-parse-special", "--no-bos")
        if got != want:
            failures.append((text, want, got))
    assert not failures, failures[:3]
    f.write_bytes("\n".join(text for text, _ in cases).encode())
    ours = _tokenize(llama_bin, model["path"], f, "--no-parse-special", "--no-bos")
    assert len(ours) > 200 and ours == _tokenize(llama_bin, vocab, f, "--no-parse-special", "--no-bos")
    # with special tokens parsed, and the same ids as the vocab GGUF itself gives
    f.write_text("<|im_start|>user\nHello, world! Ünïcödé 你好 🦙\t 12345<|im_end|>\n")
    ours = _tokenize(llama_bin, model["path"], f)
    assert ours == _tokenize(llama_bin, vocab, f)
    assert ours[0] == 151644 and ours[-2] == 151645  # <|im_start|>, <|im_end|> as single tokens


def test_cli_writes_a_q8_0_that_runs(llama_bin, llama_src, tmp_path):
    out = tmp_path / "q8.gguf"
    assert synth.main(["--vocab", str(llama_src / "models" / VOCAB["qwen3moe"]), "--out", str(out), "--quantize",
                       "Q8_0", "--llama-quantize", str(llama_bin / "llama-quantize"), "--threads", "1",
                       "--n-layer", "2", "--seed", "3"]) == 0
    assert out.is_file() and not (tmp_path / "q8.F16.gguf").exists()
    rows, _ = bench(llama_bin, str(out), "-ncmoe", "1")
    assert {r["model_type"] for r in rows} == {"qwen3moe ?B Q8_0"}
    assert all(math.isfinite(r["avg_ts"]) and r["avg_ts"] > 0 and r["n_cpu_moe"] == 1 for r in rows)


def test_size_target_lands_on_the_written_file(llama_src, tmp_path):
    """plan_for_size's estimate against a real file: a tiny shape aimed at 32 MB."""
    vocab = llama_src / "models" / VOCAB["qwen3moe"]
    base = synth.PRESETS["tiny"]
    header = synth.header_bytes(vocab, len(synth.tensor_plan(base, 151936)))
    p = synth.plan_for_size(32_000_000, 151936, base=base, header=header)
    rec = synth.write_synthetic_moe(tmp_path / "sized.gguf", vocab, params=p)
    est = synth.estimate_bytes(p, 151936, header=header)
    assert abs(rec["file_size"] - est) < 0.002 * est
    step = synth.estimate_bytes(dataclasses.replace(p, n_ff_exp=p.n_ff_exp + 32), 151936, header=header) - est
    assert 32_000_000 - step < est <= 32_000_000


def test_workflow_source_spec(llama_src, tmp_path):
    """models.*.source.synthetic as the workflow would pass it: the vocab by name from a build's source."""
    source = demo_build()["source"]
    rec = synth.make_model_source({"arch": "qwen35moe", "vocab": "qwen35", "hparams": {"n_layer": 8}, "seed": 1},
                                  tmp_path / "model.gguf", cache_dir(), llama_source=source)
    assert rec["kind"] == "synthetic" and rec["preset"] == "tiny-qwen35moe" and rec["hparams"]["n_layer"] == 8
    assert Path(rec["vocab_gguf"]) == llama_src / "models" / "ggml-vocab-qwen35.gguf"
    assert (tmp_path / "model.gguf").stat().st_size == rec["file_size"]
    for bad, msg in (({"colour": 1}, "unknown keys"), ({"vocab": "klingon"}, "has no ggml-vocab-klingon"),
                     ({"hparams": {"n_layers": 2}}, "unknown"), ({"vocab": "qwen2", "preset": "huge"}, "preset")):
        with pytest.raises(ConfigError, match=msg):
            synth.make_model_source(bad, tmp_path / "bad.gguf", cache_dir(), llama_source=source)
    # as rules/common.smk would pass it: the quantize build's source inside the spec
    rec2 = synth.make_model_source({"vocab": "qwen2", "llama_source": source}, tmp_path / "m2.gguf", cache_dir())
    assert rec2["arch"] == "qwen3moe" and rec2["preset"] == "tiny" and rec2["n_vocab"] == 151936
    with pytest.raises(ConfigError, match="needs a build's llama.cpp source"):
        synth.make_model_source({}, tmp_path / "bad.gguf", cache_dir())
