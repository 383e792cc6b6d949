r"""A synthetic MoE GGUF: random weights, a real tokenizer, an architecture llama.cpp loads.

For tests and GPU runs of the offload strategies (-ot "exps=CPU", --n-cpu-moe N, --fit) without downloading
a real MoE. The file is written with the gguf package:

- architecture `qwen3moe` (attention + routed experts) or `qwen35moe` (Qwen3.5: gated-delta-net linear
  attention on 3 of every 4 layers, gated full attention on the 4th, routed + shared experts);
- the tokenizer: every `tokenizer.*` key copied from a vocab-only GGUF (llama.cpp ships them in
  `models/ggml-vocab-*.gguf`; `ggml-vocab-qwen2.gguf` / `ggml-vocab-qwen35.gguf` for these architectures),
  so llama-tokenize, llama-perplexity and llama-bench see the real vocabulary (151,936 tokens for Qwen);
- expert tensors named `blk.N.ffn_{gate,up,down}_exps.weight` (3-D: [n_embd, n_ff_exp, n_expert]), which
  is what llama.cpp's `exps=CPU` pattern and `--n-cpu-moe N` (`blk\.N\.ffn_(up|down|gate|gate_up)_(ch|)exps`)
  act on;
- weights N(0, std²) (std 0.02: logits stay small and finite, so PPL is about the vocabulary size), norms
  ones; deterministic: each tensor's values come from (seed, tensor name) alone;
- 2-D and 3-D weights in F16 (or F32); 1-D tensors, the routers (ffn_gate_inp) and the SSM conv kernel
  stay F32, as convert_hf_to_gguf.py writes them. Q8_0 etc. come from llama-quantize afterwards.

`plan_for_size` picks n_ff_exp (at a fixed layer count) for a target file size, for the GPU run at a size
where offload matters. CLI: `python -m ggufbench.synth --vocab VOCAB.gguf --out OUT.gguf --target-gb 4`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import ConfigError, GgufbenchError
from ..core.io import atomic_path, sha256_file
from ..llamacpp.gguf import read_kv, tokenizer

ARCHS = ("qwen3moe", "qwen35moe")
DTYPES = {"F16": np.float16, "F32": np.float32}
# Quantized files written directly, block by block (no F16 file first): one type for every weight, or a mix
# after llama-quantize's choice for the ftype (src/llama-quant.cpp).
QUANT_DTYPES = ("Q8_0", "Q4_K_M")
# llama_ftype of the file: LLAMA_FTYPE_ALL_F32, MOSTLY_F16, MOSTLY_Q8_0, MOSTLY_Q4_K_M
FILE_TYPE = {"F32": 0, "F16": 1, "Q8_0": 7, "Q4_K_M": 15}
# ggml block types: (weights per block, bytes per block, offsets of its fp16 scales in the block). Any bytes
# in the other fields decode to finite weights, so random bytes with set scales are valid blocks.
BLOCKS = {"Q8_0": (32, 34, (0,)), "Q4_K": (256, 144, (0, 2)), "Q5_K": (256, 176, (0, 2)),
          "Q6_K": (256, 210, (208,))}
EXPS_SUFFIXES = ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps")


@dataclass(frozen=True)
class MoeParams:
    """Hyperparameters of the synthetic model (llama.cpp's names). head_dim is key_length = value_length.

    qwen35moe only: n_ff_shexp (shared expert), full_attention_interval (every k-th layer is full attention,
    the others gated delta net), the SSM sizes (ssm_d_state = head dim of the linear attention, ssm_n_group
    = its K heads, ssm_dt_rank = its V heads, d_inner = ssm_d_state * ssm_dt_rank), rope_dim (partial RoPE)
    and rope_sections (IMRoPE sections, summing to rope_dim / 2)."""

    arch: str = "qwen3moe"
    n_layer: int = 4
    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int = 2
    head_dim: int = 16
    n_expert: int = 8
    n_expert_used: int = 2
    n_ff_exp: int = 32
    ctx: int = 4096
    rope_freq_base: float = 1_000_000.0
    rms_eps: float = 1e-6
    tie_embeddings: bool = True
    # qwen35moe
    n_ff_shexp: int = 32
    full_attention_interval: int = 4
    ssm_d_conv: int = 4
    ssm_d_state: int = 16
    ssm_n_group: int = 2
    ssm_dt_rank: int = 4
    rope_dim: int | None = None
    rope_sections: tuple[int, ...] | None = None
    n_vocab: int | None = None  # pad the vocab GGUF's tokenizer with unused tokens to this size (None: as it is)

    def validate(self) -> None:
        """Refuse a shape llama.cpp cannot load, naming the parameter (ConfigError)."""
        problems = [*self._shape_problems(), *(self._qwen35_problems() if self.arch == "qwen35moe" else [])]
        if problems:
            raise ConfigError(problems[0])

    def _shape_problems(self) -> list[str]:
        if self.arch not in ARCHS:
            return [f"synthetic MoE arch {self.arch!r}: choose one of {', '.join(ARCHS)}"]
        sizes = ("n_layer", "n_embd", "n_head", "n_head_kv", "head_dim", "n_expert", "n_expert_used", "n_ff_exp", "ctx")
        out = [f"synthetic MoE {k} must be > 0, got {getattr(self, k)}" for k in sizes if int(getattr(self, k)) <= 0]
        if out:
            return out
        checks = [(self.n_expert_used > self.n_expert,
                   f"n_expert_used {self.n_expert_used} > n_expert {self.n_expert}"),
                  (self.n_expert > 512, f"n_expert {self.n_expert} > 512, llama.cpp's LLAMA_MAX_EXPERTS"),
                  (self.n_head % self.n_head_kv,
                   f"n_head {self.n_head} is not a multiple of n_head_kv {self.n_head_kv}"),
                  (self.head_dim % 2, f"head_dim {self.head_dim} must be even (RoPE rotates pairs)"),
                  (self.n_layer > 512, f"n_layer {self.n_layer} > 512, llama.cpp's LLAMA_MAX_LAYERS")]
        return [why for bad, why in checks if bad]

    def _qwen35_problems(self) -> list[str]:
        if self.ssm_dt_rank % self.ssm_n_group:
            return [f"ssm_dt_rank {self.ssm_dt_rank} (V heads) must be a multiple of ssm_n_group {self.ssm_n_group} "
                    "(K heads)"]
        if self.full_attention_interval <= 0:
            return ["full_attention_interval must be > 0"]
        rd, secs = self.qwen35_rope()
        if rd % 2 or rd > self.head_dim or sum(secs) != rd // 2:
            return [f"rope_dim {rd} must be even, <= head_dim {self.head_dim}, and the rope_sections {list(secs)} "
                    "must sum to rope_dim/2"]
        return []

    def qwen35_rope(self) -> tuple[int, tuple[int, ...]]:
        """(rope_dim, 4 IMRoPE sections): by default a quarter of the head is rotated (Qwen3.5's
        partial_rotary_factor 0.25), split 11:11:10 like Qwen3.5's [11, 11, 10] for rope_dim 64."""
        rd = self.rope_dim if self.rope_dim is not None else max(2, (self.head_dim // 4) // 2 * 2)
        if self.rope_sections is not None:
            secs = tuple(int(s) for s in self.rope_sections) + (0,) * (4 - len(self.rope_sections))
            return rd, secs[:4]
        half = rd // 2
        a = math.ceil(half * 11 / 32)
        b = a if 2 * a <= half else half - a
        return rd, (a, b, half - a - b, 0)

    def is_full_attention(self, il: int) -> bool:
        return self.arch != "qwen35moe" or (il + 1) % self.full_attention_interval == 0


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]  # numpy order (slowest first): ggml's ne reversed
    init: str  # "normal", "ones", "zeros", "neg_ones"
    keep_f32: bool = False

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def is_expert(self) -> bool:
        return any(self.name.endswith(f".{s}.weight") for s in EXPS_SUFFIXES)

    def dtype(self, dtype: str) -> type:
        return np.float32 if self.keep_f32 or len(self.shape) == 1 else DTYPES.get(dtype, np.float32)

    def ggml_type(self, dtype: str, n_layer: int = 1) -> str:
        """The tensor's type in a file of dtype: F32 for 1-D, routers and conv kernels; for a quantized dtype,
        its block type (a row that is no multiple of the block stays F32, as llama-quantize leaves it)."""
        if self.keep_f32 or len(self.shape) == 1:
            return "F32"
        if dtype in DTYPES:
            return dtype
        t = "Q8_0" if dtype == "Q8_0" else q4_k_m_type(self.name, n_layer)
        return t if self.shape[-1] % BLOCKS[t][0] == 0 else "F32"

    def nbytes(self, dtype: str, n_layer: int = 1) -> int:
        t = self.ggml_type(dtype, n_layer)
        if t in BLOCKS:
            per, size, _ = BLOCKS[t]
            return self.n_elements // per * size
        return self.n_elements * np.dtype(DTYPES.get(t, np.float32)).itemsize


def use_more_bits(i: int, n: int) -> bool:
    """llama-quant.cpp's use_more_bits: the first and last eighth of the layers, and every third in between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def q4_k_m_type(name: str, n_layer: int) -> str:
    """The type llama-quantize gives a weight under Q4_K_M (src/llama-quant.cpp, for a model with many experts):
    Q6_K for output.weight and, in the use_more_bits layers, for ffn_down (experts and shared) and attn_v;
    Q5_K for the linear attention's fused QKV; Q4_K for the rest."""
    if name == "output.weight":
        return "Q6_K"
    if ".attn_qkv." in name:
        return "Q5_K"
    layer = int(name.split(".")[1]) if name.startswith("blk.") else 0
    if (".ffn_down" in name or ".attn_v." in name) and use_more_bits(layer, n_layer):
        return "Q6_K"
    return "Q4_K"


# Tensor plan --------------------------------------------------------------------------------------------

def tensor_plan(p: MoeParams, n_vocab: int) -> list[TensorSpec]:
    """Every tensor llama.cpp's loader asks for (src/models/<arch>.cpp), with its shape."""
    p.validate()
    E, V, X, F = p.n_embd, n_vocab, p.n_expert, p.n_ff_exp
    hd, nh, nkv = p.head_dim, p.n_head, p.n_head_kv

    def t(name: str, ne: tuple[int, ...], init: str = "normal", keep_f32: bool = False) -> TensorSpec:
        return TensorSpec(name, tuple(reversed(ne)), init, keep_f32)

    specs = [t("token_embd.weight", (E, V)), t("output_norm.weight", (E,), "ones")]
    if not p.tie_embeddings:
        specs.append(t("output.weight", (E, V)))
    for i in range(p.n_layer):
        b = f"blk.{i}"
        specs.append(t(f"{b}.attn_norm.weight", (E,), "ones"))
        if p.arch == "qwen3moe":
            specs += [t(f"{b}.attn_q.weight", (E, hd * nh)), t(f"{b}.attn_k.weight", (E, hd * nkv)),
                      t(f"{b}.attn_v.weight", (E, hd * nkv)), t(f"{b}.attn_output.weight", (hd * nh, E)),
                      t(f"{b}.attn_q_norm.weight", (hd,), "ones"), t(f"{b}.attn_k_norm.weight", (hd,), "ones"),
                      t(f"{b}.ffn_norm.weight", (E,), "ones")]
        else:
            specs.append(t(f"{b}.post_attention_norm.weight", (E,), "ones"))
            if p.is_full_attention(i):  # gated attention: Q projects to query + gate
                specs += [t(f"{b}.attn_q.weight", (E, hd * nh * 2)), t(f"{b}.attn_k.weight", (E, hd * nkv)),
                          t(f"{b}.attn_v.weight", (E, hd * nkv)), t(f"{b}.attn_output.weight", (hd * nh, E)),
                          t(f"{b}.attn_q_norm.weight", (hd,), "ones"),
                          t(f"{b}.attn_k_norm.weight", (hd,), "ones")]
            else:  # gated delta net
                key_dim = p.ssm_d_state * p.ssm_n_group
                value_dim = p.ssm_d_state * p.ssm_dt_rank
                conv_dim = 2 * key_dim + value_dim
                specs += [t(f"{b}.attn_qkv.weight", (E, conv_dim)), t(f"{b}.attn_gate.weight", (E, value_dim)),
                          t(f"{b}.ssm_conv1d.weight", (p.ssm_d_conv, conv_dim), keep_f32=True),
                          t(f"{b}.ssm_dt.bias", (p.ssm_dt_rank,), "zeros"),
                          t(f"{b}.ssm_a", (p.ssm_dt_rank,), "neg_ones"),  # -exp(A_log), A_log = 0
                          t(f"{b}.ssm_beta.weight", (E, p.ssm_dt_rank)),
                          t(f"{b}.ssm_alpha.weight", (E, p.ssm_dt_rank)),
                          t(f"{b}.ssm_norm.weight", (p.ssm_d_state,), "ones"),
                          t(f"{b}.ssm_out.weight", (value_dim, E))]
        specs += [t(f"{b}.ffn_gate_inp.weight", (E, X), keep_f32=True),
                  t(f"{b}.ffn_gate_exps.weight", (E, F, X)),
                  t(f"{b}.ffn_up_exps.weight", (E, F, X)),
                  t(f"{b}.ffn_down_exps.weight", (F, E, X))]
        if p.arch == "qwen35moe":
            S = p.n_ff_shexp
            specs += [t(f"{b}.ffn_gate_inp_shexp.weight", (E,), keep_f32=True),
                      t(f"{b}.ffn_gate_shexp.weight", (E, S)), t(f"{b}.ffn_up_shexp.weight", (E, S)),
                      t(f"{b}.ffn_down_shexp.weight", (S, E))]
    return specs


def plan_summary(p: MoeParams, n_vocab: int, dtype: str = "F16") -> dict:
    """Parameter and byte counts of the tensors (llama-bench's model_n_params and model_size; the file adds
    the header, ~6 MB for a Qwen tokenizer, and alignment padding)."""
    specs = tensor_plan(p, n_vocab)
    exps = [s for s in specs if s.is_expert]
    return {"n_tensors": len(specs), "n_params": sum(s.n_elements for s in specs),
            "n_params_experts": sum(s.n_elements for s in exps),
            "n_params_active": sum(s.n_elements for s in specs if not s.is_expert)
            + sum(s.n_elements for s in exps) * p.n_expert_used // p.n_expert,
            "tensor_bytes": sum(s.nbytes(dtype, p.n_layer) for s in specs),  # = llama-bench's model_size
            "expert_bytes": sum(s.nbytes(dtype, p.n_layer) for s in exps),
            "expert_bytes_per_layer": sum(s.nbytes(dtype, p.n_layer) for s in exps) // p.n_layer}


# Tokenizer ----------------------------------------------------------------------------------------------

@dataclass
class Tokenizer:
    path: Path
    fields: list[tuple[str, object, int, int | None]] = field(default_factory=list)  # key, value, type, item type
    n_vocab: int = 0


TOKEN_TYPE_UNUSED = 5  # llama_token_type LLAMA_TOKEN_TYPE_UNUSED


def pad_tokenizer(tok: Tokenizer, n_vocab: int | None) -> Tokenizer:
    """The tokenizer with unused placeholder tokens appended up to n_vocab (a model's embedding rows beyond its
    tokenizer, as Qwen3.5's 248,320 rows; no merge makes them, so tokenization is unchanged)."""
    if not n_vocab or n_vocab == tok.n_vocab:
        return tok
    if n_vocab < tok.n_vocab:
        raise ConfigError(f"n_vocab {n_vocab} is below the {tok.n_vocab} tokens of {tok.path.name}")
    extra = n_vocab - tok.n_vocab
    pad = {"tokenizer.ggml.tokens": [f"<|synthetic_pad_{i}|>".encode() for i in range(extra)],
           "tokenizer.ggml.token_type": [TOKEN_TYPE_UNUSED] * extra, "tokenizer.ggml.scores": [0.0] * extra}
    fields = [(k, list(v) + pad[k] if k in pad else v, t, sub) for k, v, t, sub in tok.fields]
    return Tokenizer(tok.path, fields, n_vocab)


def read_tokenizer(vocab_gguf: str | Path, n_vocab: int | None = None) -> Tokenizer:
    """Every tokenizer.* key of a (vocab-only) GGUF, with its GGUF value type, ready to write again; padded to
    n_vocab tokens when asked."""
    path = Path(vocab_gguf)
    if not path.is_file():
        raise ConfigError(f"vocab GGUF {path} does not exist (llama.cpp ships them as "
                          "models/ggml-vocab-*.gguf in its source tree)")
    kv = read_kv(path)
    tok = Tokenizer(path)
    tok.fields = [(k, v, t, sub) for k, (v, t, sub) in kv.items() if k.startswith("tokenizer.")]
    tok.n_vocab = len(tokenizer(path)["tokens"])  # typed: tokens that are not an array of strings are named
    if not tok.n_vocab:
        raise ConfigError(f"{path} has no tokenizer.ggml.tokens: not a GGUF with a vocabulary")
    return pad_tokenizer(tok, n_vocab)


# Writing ------------------------------------------------------------------------------------------------

def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(name.encode())]))


def _values(spec: TensorSpec, dtype: str, seed: int, std: float, chunk: int = 1 << 24) -> np.ndarray:
    dt = spec.dtype(dtype)
    if spec.init == "ones":
        return np.ones(spec.shape, dtype=dt)
    if spec.init == "zeros":
        return np.zeros(spec.shape, dtype=dt)
    if spec.init == "neg_ones":
        return np.full(spec.shape, -1.0, dtype=dt)
    rng = _rng(seed, spec.name)
    out = np.empty(spec.n_elements, dtype=dt)
    for start in range(0, out.size, chunk):  # bounded float32 scratch for multi-GB tensors
        n = min(chunk, out.size - start)
        x = rng.standard_normal(n, dtype=np.float32)
        x *= std
        out[start:start + n] = x
    return out.reshape(spec.shape)


POOL_BYTES = 1 << 26  # random bytes drawn once per seed; quantized tensors are cut from it


def _pool(seed: int) -> np.ndarray:
    return np.frombuffer(_rng(seed, "synthetic-pool").bytes(POOL_BYTES), dtype=np.uint8)


def _blocks(spec: TensorSpec, qtype: str, seed: int, std: float, pool: np.ndarray | None = None) -> np.ndarray:
    """Random blocks of a ggml quant type, as raw bytes: random quants and sub-scales, and fp16 scales chosen
    so that the weights have about the standard deviation std (Q8_0: q·d with q uniform in [-128, 127]; K-quants:
    d·sc·q − dmin·m with 6-bit sc, m and 4/5/6-bit q, scales set so the mean is about 0). The bytes are a
    64 MiB pool of random bytes repeated from an offset set by the tensor's name: drawing 20-40 GB afresh would
    take minutes, and speed and memory do not depend on the values."""
    per, size, scales = BLOCKS[qtype]
    n_blocks = spec.n_elements // per
    pool = _pool(seed) if pool is None else pool
    start = zlib.crc32(spec.name.encode()) % pool.size
    out = np.empty(n_blocks * size, dtype=np.uint8)
    pos = 0
    while pos < out.size:  # the pool from `start`, wrapping around, until the tensor is full
        piece = pool[start:start + out.size - pos]
        out[pos:pos + piece.size] = piece
        pos += piece.size
        start = 0
    b = out.reshape(n_blocks, size)
    d = {"Q8_0": std / 74.0, "Q4_K": std / 255.0, "Q5_K": std / 520.0, "Q6_K": std / 140.0}[qtype]
    values = {"Q4_K": [d, d * 7.5], "Q5_K": [d, d * 15.5]}.get(qtype, [d])
    if qtype == "Q6_K":  # signed 6-bit quants with int8 sub-scales: keep those small and the mean near 0
        b[:, 192:208] = (b[:, 192:208] & 0x0F).astype(np.uint8)
    for off, v in zip(scales, values, strict=True):
        b[:, off:off + 2] = np.frombuffer(np.float16(v).tobytes(), dtype=np.uint8)
    return out


def _kv(w, arch: str, p: MoeParams, n_vocab: int, dtype: str) -> None:
    from gguf import Keys

    def k(key: str) -> str:
        return key.format(arch=arch)

    w.add_uint32(k(Keys.LLM.CONTEXT_LENGTH), p.ctx)
    w.add_uint32(k(Keys.LLM.EMBEDDING_LENGTH), p.n_embd)
    w.add_uint32(k(Keys.LLM.BLOCK_COUNT), p.n_layer)
    w.add_uint32(k(Keys.LLM.FEED_FORWARD_LENGTH), p.n_ff_exp)
    w.add_uint32(k(Keys.LLM.EXPERT_FEED_FORWARD_LENGTH), p.n_ff_exp)
    w.add_uint32(k(Keys.LLM.EXPERT_COUNT), p.n_expert)
    w.add_uint32(k(Keys.LLM.EXPERT_USED_COUNT), p.n_expert_used)
    w.add_uint32(k(Keys.LLM.VOCAB_SIZE), n_vocab)
    w.add_uint32(k(Keys.Attention.HEAD_COUNT), p.n_head)
    w.add_uint32(k(Keys.Attention.HEAD_COUNT_KV), p.n_head_kv)
    w.add_uint32(k(Keys.Attention.KEY_LENGTH), p.head_dim)
    w.add_uint32(k(Keys.Attention.VALUE_LENGTH), p.head_dim)
    w.add_float32(k(Keys.Attention.LAYERNORM_RMS_EPS), p.rms_eps)
    w.add_float32(k(Keys.Rope.FREQ_BASE), p.rope_freq_base)
    if p.arch == "qwen3moe":
        w.add_uint32(k(Keys.Rope.DIMENSION_COUNT), p.head_dim)
    else:
        rd, secs = p.qwen35_rope()
        w.add_uint32(k(Keys.Rope.DIMENSION_COUNT), rd)
        w.add_array(k(Keys.Rope.DIMENSION_SECTIONS), list(secs))
        w.add_uint32(k(Keys.LLM.EXPERT_SHARED_FEED_FORWARD_LENGTH), p.n_ff_shexp)
        w.add_uint32(k(Keys.LLM.FULL_ATTENTION_INTERVAL), p.full_attention_interval)
        w.add_uint32(k(Keys.SSM.CONV_KERNEL), p.ssm_d_conv)
        w.add_uint32(k(Keys.SSM.STATE_SIZE), p.ssm_d_state)
        w.add_uint32(k(Keys.SSM.GROUP_COUNT), p.ssm_n_group)
        w.add_uint32(k(Keys.SSM.TIME_STEP_RANK), p.ssm_dt_rank)
        w.add_uint32(k(Keys.SSM.INNER_SIZE), p.ssm_d_state * p.ssm_dt_rank)
    w.add_uint32(Keys.General.FILE_TYPE, FILE_TYPE[dtype])


def write_synthetic_moe(path: str | Path, vocab_gguf: str | Path, *, arch: str = "qwen3moe", seed: int = 0,
                        dtype: str = "F16", std: float = 0.02, params: MoeParams | None = None,
                        **hparams) -> dict:
    """Write a synthetic MoE GGUF to path (atomically) and return what was written.

    Hyperparameters come from `params` and/or keyword arguments (MoeParams' fields: n_layer, n_embd,
    n_head, n_head_kv, head_dim, n_expert, n_expert_used, n_ff_exp, ctx, tie_embeddings, ...)."""
    from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter, Keys

    if dtype not in DTYPES and dtype not in QUANT_DTYPES:
        raise ConfigError(f"dtype {dtype!r}: choose one of {', '.join([*DTYPES, *QUANT_DTYPES])} (other types "
                          "with llama-quantize afterwards)")
    if not (std > 0 and math.isfinite(std)):
        raise ConfigError(f"std must be a positive finite number, got {std}")
    p = dataclasses.replace(params, **hparams) if params is not None else MoeParams(arch=arch, **hparams)
    p.validate()
    tok = read_tokenizer(vocab_gguf, p.n_vocab)
    specs = tensor_plan(p, tok.n_vocab)
    summary = plan_summary(p, tok.n_vocab, dtype)

    path = Path(path)
    t0 = time.monotonic()
    hp = dataclasses.asdict(p)
    provenance = {"generator": "ggufbench.synth", "seed": seed, "std": std, "dtype": dtype,
                  "vocab": tok.path.name, "hparams": hp}
    with atomic_path(path) as tmp:
        w = GGUFWriter(str(tmp), p.arch)
        try:
            w.add_name(f"synthetic-{p.arch}")
            w.add_string(Keys.General.DESCRIPTION, "random weights, not a trained model: " + json.dumps(provenance))
            _kv(w, p.arch, p, tok.n_vocab, dtype)
            for key, value, vtype, sub in tok.fields:
                w.add_key_value(key, value, GGUFValueType(vtype), None if sub is None else GGUFValueType(sub))
            types = {s.name: s.ggml_type(dtype, p.n_layer) for s in specs}
            for s in specs:
                t = types[s.name]
                raw = GGMLQuantizationType[t] if t in BLOCKS else None
                # with raw_dtype the shape is taken as given (elements), the numpy dtype only names a placeholder
                w.add_tensor_info(s.name, s.shape, np.dtype(DTYPES.get(t, np.float32)), s.nbytes(dtype, p.n_layer),
                                  raw_dtype=raw)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_ti_data_to_file()
            pool = _pool(seed) if any(t in BLOCKS for t in types.values()) else None
            for s in specs:
                t = types[s.name]
                w.write_tensor_data(_blocks(s, t, seed, std, pool) if t in BLOCKS else _values(s, t, seed, std))
            w.close()
        finally:
            w.close()
    return {"path": str(path), "arch": p.arch, "hparams": hp, "dtype": dtype, "seed": seed, "std": std,
            "n_vocab": tok.n_vocab, "vocab_gguf": str(tok.path), "vocab_sha256": sha256_file(tok.path),
            "tokenizer_keys": [k for k, *_ in tok.fields], **summary,
            "file_size": path.stat().st_size, "write_seconds": round(time.monotonic() - t0, 3)}


# Size targeting -----------------------------------------------------------------------------------------

# Shapes for the GPU run: the real models' widths (n_embd 2048, GQA, vocabulary 151,936, untied output), fewer
# layers and experts so that the experts carry most of a few-GB file and --n-cpu-moe moves it in steps of
# one layer's experts. plan_for_size then picks n_ff_exp for the target size.
PRESETS: dict[str, MoeParams] = {
    "tiny": MoeParams(),
    "tiny-qwen35moe": MoeParams(arch="qwen35moe"),
    # after Qwen3-30B-A3B (48 layers, 128 experts of n_ff_exp 768, 8 routed, 32/4 heads of 128)
    "qwen3moe-gpu": MoeParams(arch="qwen3moe", n_layer=24, n_embd=2048, n_head=16, n_head_kv=4, head_dim=128,
                              n_expert=32, n_expert_used=4, n_ff_exp=768, ctx=32768, tie_embeddings=False),
    # after Qwen3.5-35B-A3B (40 layers, 256 experts of n_ff_exp 512 + a shared one, 8 routed, 16/2 heads of
    # 256, gated delta net with 16 K / 32 V heads of 128, partial RoPE 64 in IMRoPE sections 11/11/10)
    "qwen35moe-gpu": MoeParams(arch="qwen35moe", n_layer=16, n_embd=2048, n_head=16, n_head_kv=2,
                               head_dim=256, n_expert=32, n_expert_used=4, n_ff_exp=512, n_ff_shexp=512,
                               ctx=32768, tie_embeddings=False, ssm_d_conv=4, ssm_d_state=128, ssm_n_group=16,
                               ssm_dt_rank=32, rope_dim=64, rope_sections=(11, 11, 10, 0)),
    # Qwen3.5-35B-A3B's own shape, from its published config (transformers' Qwen3_5MoeTextConfig, whose defaults
    # are that checkpoint's: src/transformers/models/qwen3_5_moe/configuration_qwen3_5_moe.py): vocab 248,320,
    # 40 layers of hidden 2048, full attention every 4th layer (16 heads, 2 KV heads, head_dim 256, partial RoPE
    # 0.25), gated delta net elsewhere (conv 4, 16 K / 32 V heads of 128), 256 experts of 512 with 8 routed and
    # one shared expert of 512, untied output; max_position_embeddings 32768 there. ~34.7 B parameters.
    "qwen35moe-35b-a3b": MoeParams(arch="qwen35moe", n_layer=40, n_embd=2048, n_head=16, n_head_kv=2,
                                   head_dim=256, n_expert=256, n_expert_used=8, n_ff_exp=512, n_ff_shexp=512,
                                   ctx=32768, tie_embeddings=False, ssm_d_conv=4, ssm_d_state=128,
                                   ssm_n_group=16, ssm_dt_rank=32, rope_dim=64, rope_sections=(11, 11, 10, 0),
                                   n_vocab=248320),
}

# Bytes per weight of 2-D/3-D tensors after llama-quantize to these types (blocks of 32 or 256 weights).
QUANT_BYTES_PER_WEIGHT = {"F32": 4.0, "F16": 2.0, "BF16": 2.0, "Q8_0": 34 / 32, "Q6_K": 210 / 256,
                          "Q5_K_M": 176 / 256, "Q4_K_M": 144 / 256, "Q4_0": 18 / 32}


def header_bytes(vocab_gguf: str | Path, n_tensors: int) -> int:
    """About the size of the synthetic file's header: the vocab GGUF's (all tokenizer), ~100 bytes of
    tensor info per tensor, and a few KB of hyperparameters."""
    return Path(vocab_gguf).stat().st_size + 100 * n_tensors + 4096


def estimate_bytes(p: MoeParams, n_vocab: int, qtype: str = "F16", header: int = 6_000_000) -> int:
    """File size of p as qtype, plus the header: exact per tensor for the types written directly (F16, F32,
    Q8_0, the Q4_K_M mix); for other llama-quantize types, qtype's bytes per weight (an estimate)."""
    n_vocab = p.n_vocab or n_vocab
    if qtype in DTYPES or qtype in QUANT_DTYPES:
        return header + sum(s.nbytes(qtype, p.n_layer) for s in tensor_plan(p, n_vocab))
    bpw = QUANT_BYTES_PER_WEIGHT.get(qtype)
    if bpw is None:
        raise ConfigError(f"no size model for {qtype!r}; known: {', '.join(QUANT_BYTES_PER_WEIGHT)}")
    total = header
    for s in tensor_plan(p, n_vocab):
        total += s.n_elements * (4 if s.keep_f32 or len(s.shape) == 1 else bpw)
    return int(total)


def plan_for_size(target_bytes: int, n_vocab: int, *, base: MoeParams | str = "qwen3moe-gpu",
                  qtype: str = "F16", ff_multiple: int = 32, header: int = 6_000_000,
                  **overrides) -> MoeParams:
    """The base shape with n_ff_exp chosen (a multiple of ff_multiple, so every quant's blocks fit) for a
    file of about target_bytes as qtype. Layers, widths and experts stay as given: the experts carry the
    size, as in the real MoEs, so --n-cpu-moe N moves about N/n_layer of it."""
    if isinstance(base, str):
        if base not in PRESETS:
            raise ConfigError(f"unknown preset {base!r}; known: {', '.join(PRESETS)}")
        base = PRESETS[base]
    p = dataclasses.replace(base, **overrides)
    one = estimate_bytes(dataclasses.replace(p, n_ff_exp=ff_multiple), n_vocab, qtype, header)
    per_unit = estimate_bytes(dataclasses.replace(p, n_ff_exp=2 * ff_multiple), n_vocab, qtype, header) - one
    fixed = one - per_unit  # the size is linear in n_ff_exp: fixed + per_unit * n_ff_exp / ff_multiple
    units = int((target_bytes - fixed) // per_unit)
    if units < 1:
        raise ConfigError(f"a target of {target_bytes / 1e9:.3f} GB is too small for this shape: embeddings and "
                          f"attention alone take {fixed / 1e9:.3f} GB, one step of n_ff_exp {ff_multiple} adds "
                          f"{per_unit / 1e9:.3f} GB; lower n_embd or n_layer, or raise the target")
    return dataclasses.replace(p, n_ff_exp=units * ff_multiple)


# Workflow ---------------------------------------------------------------------------------------------------

SPEC_KEYS = {"arch", "vocab", "preset", "target_gb", "target_gib", "hparams", "seed", "dtype", "std", "llama_source"}


def resolve_vocab(vocab: str, llama_source: dict | None, cache: Path, log: str | Path | None = None) -> Path:
    """A vocab GGUF path, or a bare name (`qwen2`, `qwen35`) looked up as models/ggml-vocab-<name>.gguf in the
    llama.cpp source tree of `llama_source` (a build's `source:` config)."""
    if vocab.endswith(".gguf") or "/" in vocab:
        path = Path(vocab).expanduser()
        if not path.is_file():
            raise ConfigError(f"synthetic.vocab: {path} does not exist")
        return path
    if llama_source is None:
        raise ConfigError(f"synthetic.vocab {vocab!r} is a name: it needs a build's llama.cpp source to look "
                          "up models/ggml-vocab-<name>.gguf in (or give a path to a .gguf)")
    from ..llamacpp.build import fetch_source

    src, _ = fetch_source(llama_source, cache, log)
    path = src / "models" / f"ggml-vocab-{vocab}.gguf"
    if not path.is_file():
        have = sorted(p.name[len("ggml-vocab-"):-len(".gguf")] for p in (src / "models").glob("ggml-vocab-*.gguf"))
        raise ConfigError(f"synthetic.vocab {vocab!r}: {src}/models has no {path.name}; it has {', '.join(have)}")
    return path


def make_model_source(spec: dict, dest: Path, cache: Path, llama_source: dict | None = None,
                      log: str | Path | None = None) -> dict:
    """A model's `source: {synthetic: {...}}`: write the GGUF to dest and return its origin record.

    spec: arch (qwen3moe | qwen35moe), vocab (a name such as qwen2 / qwen35, or a .gguf path), preset (a key of
    PRESETS; default tiny / tiny-qwen35moe, or qwen3moe-gpu / qwen35moe-gpu with a target), target_gb or
    target_gib (n_ff_exp chosen for about that size as dtype), hparams (MoeParams overrides), seed, dtype, std;
    and llama_source (a build's `source:`, where a vocab name is looked up) if not given as an argument."""
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise ConfigError(f"models.*.source.synthetic: unknown keys {sorted(unknown)}; known: {sorted(SPEC_KEYS)}")
    if spec.get("preset") and spec["preset"] not in PRESETS:
        raise ConfigError(f"models.*.source.synthetic.preset {spec['preset']!r}; known: {', '.join(PRESETS)}")
    arch = spec.get("arch") or (PRESETS[spec["preset"]].arch if spec.get("preset") else "qwen3moe")
    target = spec.get("target_gb", 0) * 1e9 or spec.get("target_gib", 0) * 2**30 or None
    preset = spec.get("preset") or (("qwen35moe-gpu" if arch == "qwen35moe" else "qwen3moe-gpu") if target
                                    else ("tiny-qwen35moe" if arch == "qwen35moe" else "tiny"))
    hp = dict(spec.get("hparams") or {})
    unknown = set(hp) - {f.name for f in dataclasses.fields(MoeParams)}
    if unknown:
        raise ConfigError(f"models.*.source.synthetic.hparams: unknown {sorted(unknown)}")
    p = dataclasses.replace(PRESETS[preset], arch=arch, **hp)
    dtype = spec.get("dtype", "F16")
    vocab = resolve_vocab(str(spec.get("vocab", "qwen35" if arch == "qwen35moe" else "qwen2")),
                          llama_source or spec.get("llama_source"), cache, log)
    if target:
        if "n_ff_exp" in hp:
            raise ConfigError("models.*.source.synthetic: hparams.n_ff_exp and a size target contradict")
        n_vocab = read_tokenizer(vocab).n_vocab
        p = plan_for_size(int(target), n_vocab, base=p, qtype=dtype,
                          header=header_bytes(vocab, len(tensor_plan(p, n_vocab))))
    rec = write_synthetic_moe(dest, vocab, params=p, seed=int(spec.get("seed", 0)), dtype=dtype,
                              std=float(spec.get("std", 0.02)))
    return {"kind": "synthetic", "preset": preset, "target_bytes": int(target) if target else None, **rec}


# CLI ----------------------------------------------------------------------------------------------------

def _default_vocab(arch: str) -> Path | None:
    """ggml-vocab-qwen2/qwen35.gguf from a llama.cpp source tree in the build cache, if there is one."""
    from ..core.cache import cache_dir

    name = "ggml-vocab-qwen35.gguf" if arch == "qwen35moe" else "ggml-vocab-qwen2.gguf"
    found = sorted(cache_dir().glob(f"sources/*/**/models/{name}"))
    return found[0] if found else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ggufbench.synth", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="the GGUF to write")
    ap.add_argument("--vocab", type=Path, help="vocab-only GGUF whose tokenizer.* keys are copied "
                    "(default: llama.cpp's models/ggml-vocab-qwen2.gguf, or -qwen35 for qwen35moe, from the "
                    "build cache's source trees)")
    ap.add_argument("--arch", choices=ARCHS, help="default: the preset's")
    ap.add_argument("--preset", choices=sorted(PRESETS), help="shape to start from (default: tiny, or "
                    "qwen3moe-gpu / qwen35moe-gpu with --target-gb)")
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--target-gb", type=float, help="choose n_ff_exp for about this file size (10^9 bytes)")
    size.add_argument("--target-gib", type=float, help="the same in GiB (2^30 bytes)")
    for name in ("n_layer", "n_embd", "n_head", "n_head_kv", "head_dim", "n_expert", "n_expert_used",
                 "n_ff_exp", "ctx", "n_ff_shexp"):
        ap.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int)
    ap.add_argument("--untied", action="store_true", help="write output.weight (default: per preset)")
    ap.add_argument("--dtype", choices=sorted([*DTYPES, *QUANT_DTYPES]), default="F16",
                    help="F16/F32, or Q8_0 / Q4_K_M written directly as random quantized blocks")
    ap.add_argument("--quantize", metavar="TYPE", help="then llama-quantize to TYPE (e.g. Q8_0) in place "
                    "of --out; the size target then counts TYPE's bytes per weight")
    ap.add_argument("--llama-quantize", type=Path, help="the llama-quantize binary for --quantize")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--std", type=float, default=0.02)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--dry-run", action="store_true", help="print the chosen shape and sizes, write nothing")
    a = ap.parse_args(argv)

    target = a.target_gb * 1e9 if a.target_gb else a.target_gib * 2**30 if a.target_gib else None
    preset = a.preset or (("qwen35moe-gpu" if a.arch == "qwen35moe" else "qwen3moe-gpu") if target
                          else ("tiny-qwen35moe" if a.arch == "qwen35moe" else "tiny"))
    over = {k: getattr(a, k) for k in ("n_layer", "n_embd", "n_head", "n_head_kv", "head_dim", "n_expert",
                                       "n_expert_used", "n_ff_exp", "ctx", "n_ff_shexp") if getattr(a, k)}
    if a.arch:
        over["arch"] = a.arch
    if a.untied:
        over["tie_embeddings"] = False
    p = dataclasses.replace(PRESETS[preset], **over)
    vocab = a.vocab or _default_vocab(p.arch)
    if vocab is None:
        ap.error("--vocab is needed: no llama.cpp source tree with models/ggml-vocab-*.gguf in the build cache")
    if a.quantize and not a.llama_quantize and not a.dry_run:
        ap.error("--quantize needs --llama-quantize PATH")
    n_vocab = read_tokenizer(vocab).n_vocab
    if target:
        if "n_ff_exp" in over:
            ap.error("--n-ff-exp and a size target contradict: the target chooses n_ff_exp")
        p = plan_for_size(int(target), n_vocab, base=p, qtype=a.quantize or a.dtype,
                          header=header_bytes(vocab, len(tensor_plan(p, n_vocab))))
    est = estimate_bytes(p, n_vocab, a.quantize or a.dtype, header_bytes(vocab, len(tensor_plan(p, n_vocab))))
    print(json.dumps({"hparams": dataclasses.asdict(p), "n_vocab": n_vocab, "estimated_bytes": est,
                      **plan_summary(p, n_vocab, a.dtype)}, indent=1), file=sys.stderr)
    if a.dry_run:
        return 0
    raw = a.out.with_name(a.out.stem + f".{a.dtype}.gguf") if a.quantize else a.out
    rec = write_synthetic_moe(raw, vocab, params=p, seed=a.seed, dtype=a.dtype, std=a.std)
    if a.quantize:
        from ..llamacpp.quantize import quantize

        quantize(a.llama_quantize, raw, a.out, a.quantize, threads=a.threads)
        raw.unlink()
        rec.update(path=str(a.out), quantized_to=a.quantize, file_size=a.out.stat().st_size,
                   unquantized_file_size=rec["file_size"])
    print(json.dumps(rec, indent=1))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except GgufbenchError as e:
        sys.exit(f"error: {e}")
