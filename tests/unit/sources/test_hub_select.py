"""Picking a quant's files in a Hugging Face GGUF repo listing, as whole tokens, shards together."""

from __future__ import annotations

import pytest

from ggufbench.core.errors import ConfigError, ToolFailed
from ggufbench.sources.hub_select import quant_of, select_quant_files

# unsloth/Qwen3.5-35B-A3B-GGUF style: plain and UD (Unsloth Dynamic) quants side by side, big quants split
# into a subfolder, a vision projector, and the usual non-GGUF files.
UNSLOTH = [
    ".gitattributes",
    "README.md",
    "Qwen3.5-35B-A3B-Q4_K_M.gguf",
    "Qwen3.5-35B-A3B-UD-Q4_K_M.gguf",
    "Qwen3.5-35B-A3B-UD-Q4_K_XL.gguf",
    "Qwen3.5-35B-A3B-MXFP4_MOE.gguf",
    "Qwen3.5-35B-A3B-IQ4_XS.gguf",
    "Qwen3.5-35B-A3B-UD-IQ1_M.gguf",
    "Q8_0/Qwen3.5-35B-A3B-Q8_0-00002-of-00002.gguf",
    "Q8_0/Qwen3.5-35B-A3B-Q8_0-00001-of-00002.gguf",
    "BF16/Qwen3.5-35B-A3B-BF16-00001-of-00003.gguf",
    "BF16/Qwen3.5-35B-A3B-BF16-00002-of-00003.gguf",
    "BF16/Qwen3.5-35B-A3B-BF16-00003-of-00003.gguf",
    "mmproj-F16.gguf",
    "mmproj-BF16.gguf",
]


REPO = "unsloth/Qwen3.5-35B-A3B-GGUF"


# bartowski/Qwen_Qwen3.5-35B-A3B-GGUF style: org-prefixed names, Q4_K_L (Q8_0 embeddings and output)
BARTOWSKI = [
    "Qwen_Qwen3.5-35B-A3B-Q4_K_L.gguf",
    "Qwen_Qwen3.5-35B-A3B-Q4_K_M.gguf",
    "Qwen_Qwen3.5-35B-A3B-Q4_K_S.gguf",
    "Qwen_Qwen3.5-35B-A3B-IQ4_XS.gguf",
    "Qwen_Qwen3.5-35B-A3B-bf16/Qwen_Qwen3.5-35B-A3B-bf16-00001-of-00002.gguf",
    "Qwen_Qwen3.5-35B-A3B-bf16/Qwen_Qwen3.5-35B-A3B-bf16-00002-of-00002.gguf",
    "Qwen_Qwen3.5-35B-A3B.imatrix",
    "mmproj-Qwen_Qwen3.5-35B-A3B-f16.gguf",
]


@pytest.mark.parametrize(
    ("path", "quant"),
    [
        ("Qwen3.5-35B-A3B-Q4_K_M.gguf", "Q4_K_M"),
        ("Qwen3.5-35B-A3B-UD-Q4_K_M.gguf", "UD-Q4_K_M"),
        ("Qwen3.5-35B-A3B-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"),
        ("Qwen3.5-35B-A3B-MXFP4_MOE.gguf", "MXFP4_MOE"),
        ("Qwen3.5-35B-A3B-IQ4_XS.gguf", "IQ4_XS"),
        ("Qwen3.5-35B-A3B-UD-IQ1_M.gguf", "UD-IQ1_M"),
        ("Q8_0/Qwen3.5-35B-A3B-Q8_0-00001-of-00002.gguf", "Q8_0"),
        ("Q8_0/Qwen3.5-35B-A3B-Q8_0-00002-of-00002.gguf", "Q8_0"),
        ("UD-Q4_K_XL/Qwen3.5-35B-A3B-UD-Q4_K_XL-00001-of-00002.gguf", "UD-Q4_K_XL"),
        ("Qwen_Qwen3.5-35B-A3B-Q4_K_L.gguf", "Q4_K_L"),
        ("Qwen_Qwen3.5-35B-A3B-bf16/Qwen_Qwen3.5-35B-A3B-bf16-00001-of-00002.gguf", "BF16"),
        ("Qwen2.5-7B-Instruct.Q4_K_M.gguf", "Q4_K_M"),  # TheBloke-style '.' separator
        ("gemma-3-4b-it-q4_0.gguf", "Q4_0"),
        # not model quants
        ("mmproj-F16.gguf", None),
        ("mmproj-Qwen_Qwen3.5-35B-A3B-f16.gguf", None),
        ("README.md", None),
        ("Qwen_Qwen3.5-35B-A3B.imatrix", None),
        ("Qwen3.5-35B-A3B-Q4_K_M.gguf.part", None),
    ],
)
def test_quant_of(path, quant):
    assert quant_of(path) == quant


def test_model_name_digits_are_not_quants():
    # "Qwen3.5", "35B", "A3B" must not be read as quant tokens
    assert quant_of("Qwen3.5-35B-A3B.gguf") is None


def test_q4_k_m_does_not_pick_ud_q4_k_m():
    assert select_quant_files(UNSLOTH, "Q4_K_M", REPO) == ["Qwen3.5-35B-A3B-Q4_K_M.gguf"]
    assert select_quant_files(UNSLOTH, "UD-Q4_K_M", REPO) == ["Qwen3.5-35B-A3B-UD-Q4_K_M.gguf"]


def test_q4_k_xl_does_not_pick_ud_q4_k_xl():
    assert select_quant_files(UNSLOTH, "UD-Q4_K_XL", REPO) == ["Qwen3.5-35B-A3B-UD-Q4_K_XL.gguf"]
    with pytest.raises(ConfigError) as ei:
        select_quant_files(UNSLOTH, "Q4_K_XL", REPO)
    msg = str(ei.value)
    assert "'Q4_K_XL' not found in unsloth/Qwen3.5-35B-A3B-GGUF" in msg
    # it lists what the repo does have, so the user can correct the name
    available = msg.split("it has: ", 1)[1].split(", ")
    assert available == sorted(["BF16", "IQ4_XS", "MXFP4_MOE", "Q4_K_M", "Q8_0", "UD-IQ1_M", "UD-Q4_K_M",
                                "UD-Q4_K_XL"])


def test_mxfp4_moe_and_case():
    assert select_quant_files(UNSLOTH, "MXFP4_MOE", REPO) == ["Qwen3.5-35B-A3B-MXFP4_MOE.gguf"]
    assert select_quant_files(UNSLOTH, "mxfp4_moe", REPO) == ["Qwen3.5-35B-A3B-MXFP4_MOE.gguf"]


def test_mmproj_is_never_selected():
    # F16 exists only as the vision projector: not a model quant
    with pytest.raises(ConfigError, match="'F16' not found"):
        select_quant_files(UNSLOTH, "F16", REPO)


def test_shards_are_returned_together_in_order():
    assert select_quant_files(UNSLOTH, "Q8_0", REPO) == [
        "Q8_0/Qwen3.5-35B-A3B-Q8_0-00001-of-00002.gguf",
        "Q8_0/Qwen3.5-35B-A3B-Q8_0-00002-of-00002.gguf",
    ]
    bf16 = select_quant_files(UNSLOTH, "BF16", REPO)
    assert [p.rsplit("-", 3)[-3] for p in bf16] == ["00001", "00002", "00003"]


def test_missing_shard_is_a_tool_failure():
    listing = [p for p in UNSLOTH if not p.endswith("Q8_0-00002-of-00002.gguf")]
    with pytest.raises(ToolFailed) as ei:
        select_quant_files(listing, "Q8_0", REPO)
    msg = str(ei.value)
    assert "1 of 2 shards" in msg
    assert "Q8_0-00001-of-00002.gguf" in msg


def test_bartowski_q4_k_l():
    assert select_quant_files(BARTOWSKI, "Q4_K_L", "bartowski/Qwen_Qwen3.5-35B-A3B-GGUF") == [
        "Qwen_Qwen3.5-35B-A3B-Q4_K_L.gguf"]
    assert select_quant_files(BARTOWSKI, "bf16") == [
        "Qwen_Qwen3.5-35B-A3B-bf16/Qwen_Qwen3.5-35B-A3B-bf16-00001-of-00002.gguf",
        "Qwen_Qwen3.5-35B-A3B-bf16/Qwen_Qwen3.5-35B-A3B-bf16-00002-of-00002.gguf",
    ]


def test_two_models_under_one_label_is_ambiguous():
    listing = ["Qwen3.5-35B-A3B-Q4_K_M.gguf", "Qwen3.5-35B-A3B-Instruct-Q4_K_M.gguf"]
    with pytest.raises(ConfigError, match="ambiguous.*give `file:`"):
        select_quant_files(listing, "Q4_K_M", REPO)


def test_repo_without_gguf():
    with pytest.raises(ConfigError, match="no GGUF files"):
        select_quant_files(["README.md", ".gitattributes", "mmproj-F16.gguf"], "Q4_K_M")
