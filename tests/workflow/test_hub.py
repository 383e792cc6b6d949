"""The download_gguf rule end to end: Snakemake runs the rule script, which fetches from the loopback hub."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest
import yaml

from tests.support.hubserver import FakeHub, hf_env, tiny_gguf
from tests.support.workflow import REPO as CHECKOUT
from tests.support.workflow import SNAKEMAKE

REPO = "unsloth/Qwen3.5-35B-A3B-GGUF"


@pytest.fixture
def hub():
    h = FakeHub().start()
    yield h
    h.stop()


def test_download_gguf_rule_writes_a_verified_manifest(hub, tmp_path):
    shards = ["Q8_0/M-Q8_0-00001-of-00002.gguf", "Q8_0/M-Q8_0-00002-of-00002.gguf"]
    data = {p: tiny_gguf(p) for p in [*shards, "M-Q4_K_M.gguf", "M-UD-Q4_K_M.gguf"]}
    commit = hub.commit(REPO, data)
    config = yaml.safe_load((CHECKOUT / "config/demo.yaml").read_text())
    config["models"] = {"m": {"baseline": "Q8_0", "quants": {
        "Q8_0": {"hub": {"repo": REPO, "quant": "Q8_0"}},
        "Q4_K_M": {"hub": {"repo": REPO, "quant": "Q4_K_M"}}}}}
    del config["kv_cost"]  # the demo scores the KV cost of F16, a quant this model lacks
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    target = "results/models/m/hub/Q8_0/manifest.json"
    proc = subprocess.run([*SNAKEMAKE, "-s", str(CHECKOUT / "Snakefile"), "--directory", str(tmp_path),
                           "--configfile", str(cfg), "--cores", "1", target],
                          env=hf_env(hub, tmp_path / "hf"), capture_output=True, text=True, timeout=120, check=False)
    log = tmp_path / "logs/models/m/download_Q8_0.log"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + (log.read_text() if log.exists() else "")
    m = json.loads((tmp_path / target).read_text())
    assert m["origin"]["commit"] == commit
    assert [f["sha256"] for f in m["files"]] == [hashlib.sha256(data[p]).hexdigest() for p in shards]
    text = log.read_text()
    assert "sha256 ok" in text and "KiB" in text
