"""sources.lock_refresh: which hub selections a config names and which result files each invalidates; a
refresh that removes those of a changed model source (a dangling link too) and nothing of a selection new to
the lock. The real huggingface_hub client in a fresh process, against the loopback hub (tests/support)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from ggufbench.sources.hub_lock import write
from ggufbench.sources.lock_refresh import main, selections
from tests.support.hubserver import FakeHub, hf_env, tiny_gguf

REPO = "bartowski/Qwen3-30B-A3B-GGUF"
F16 = "Qwen3-30B-A3B-F16.gguf"
Q4 = "Qwen3-30B-A3B-Q4_K_M.gguf"


def config() -> dict:
    return {"hub_lock": "hub.lock.json",
            "models": {"qwen": {"source": {"hub": {"repo": REPO, "file": F16}},
                                "quants": {"Q8_0": {"quantize": "Q8_0"},
                                           "Q4_K_M": {"hub": {"repo": REPO, "quant": "q4_k_m", "revision": "v1"}}}}},
            "corpora": {"wiki": {"hub_dataset": {"repo": "Salesforce/wikitext", "config": "wikitext-2-raw-v1",
                                                 "split": "test"}},
                        "demo": {"file": "data/demo.txt"}}}


def test_selections_and_what_each_invalidates():
    got = {s.label: (s.key, s.kind, s.invalidate) for s in selections(config())}
    assert got == {
        "models.qwen.source": (f"model:{REPO}@main file={F16}", "source",
                               ["results/models/qwen/source/model.gguf", "results/models/qwen/source/source.json"]),
        "models.qwen.quants.Q4_K_M": (f"model:{REPO}@v1 quant=Q4_K_M", "quant",
                                      ["results/models/qwen/hub/Q4_K_M/manifest.json"]),
        "corpora.wiki": ("dataset:Salesforce/wikitext@main config=wikitext-2-raw-v1 split=test", "dataset",
                         ["results/data/wiki/corpus.txt", "results/data/wiki/corpus.json"]),
    }  # the quantize: quant and the file corpus are no hub selections
    assert selections({}) == []


def test_no_lock_file_is_named(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"models": {}}))
    assert main(["refresh", "--configfile", str(tmp_path / "c.yaml")]) == 2
    assert "sets no hub_lock and no --lock was given" in capsys.readouterr().err


@pytest.fixture
def hub():
    h = FakeHub().start()
    yield h
    h.stop()


def test_refresh_removes_a_changed_source_and_keeps_other_entries(hub, tmp_path):
    first = hub.commit(REPO, {F16: tiny_gguf("f16 v1"), Q4: tiny_gguf("q4")}, tag="v1")
    cfg = {"hub_lock": "hub.lock.json", "models": {"qwen": {
        "source": {"hub": {"repo": REPO, "file": F16}},
        "quants": {"Q4_K_M": {"hub": {"repo": REPO, "quant": "Q4_K_M", "revision": "v1"}}}}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = hf_env(hub, tmp_path / "hf")

    def refresh(*extra):
        p = subprocess.run([sys.executable, "-m", "ggufbench.lockfile", "refresh", "--configfile",
                            str(tmp_path / "config.yaml"), "--directory", str(tmp_path), *extra],
                           env=env, capture_output=True, text=True, timeout=60, check=False)
        assert p.returncode in (0, 1), p.stdout + p.stderr
        return p

    # the source was locked by an earlier run; the Q4_K_M selection was not (and another config's entry is there)
    src_key = f"model:{REPO}@main file={F16}"
    f16 = [{"path": F16, "size": 1, "sha256": "0" * 64, "blob_id": "b"}]
    other = {"repo": "x/y", "repo_type": "model", "revision": "main", "commit": "1" * 40, "files": []}
    write(tmp_path / "hub.lock.json", {src_key: {"repo": REPO, "repo_type": "model", "revision": "main",
                                                 "commit": "2" * 40, "files": f16}, "model:x/y@main quant=Q2_K": other})
    source = tmp_path / "results/models/qwen/source"
    source.mkdir(parents=True)
    (source / "model.gguf").symlink_to(tmp_path / "hf" / "gone.gguf")  # a dangling link into the cache
    (source / "source.json").write_text("{}")
    q4 = tmp_path / "results/models/qwen/hub/Q4_K_M/manifest.json"
    q4.parent.mkdir(parents=True)
    q4.write_text("{}")

    check = refresh("--check")
    assert check.returncode == 1
    assert f"models.qwen.source: {src_key} [" in check.stdout and f"CHANGED upstream: commit 222222222222 -> " \
        f"{first[:12]}, files ~{F16} (000000000000 -> " in check.stdout
    assert "models.qwen.quants.Q4_K_M: " in check.stdout and "new in the lock" in check.stdout

    done = refresh()
    assert done.returncode == 0
    assert not (source / "model.gguf").is_symlink() and not (source / "source.json").exists()
    assert q4.exists()  # new to the lock is not a change
    assert "removed results/models/qwen/source/model.gguf" in done.stdout
    entries = json.loads((tmp_path / "hub.lock.json").read_text())["entries"]
    assert entries["model:x/y@main quant=Q2_K"] == other
    assert entries[src_key]["commit"] == first and entries[f"model:{REPO}@v1 quant=Q4_K_M"]["commit"] == first
    assert refresh("--check").returncode == 0


def test_a_change_upstream_invalidates_every_model_that_shares_the_selection(hub, tmp_path):
    """Two models on one hub file: one lock entry, and both models' results go when it changes."""
    hub.commit(REPO, {Q4: tiny_gguf("q4 v2")})
    quant = {"hub": {"repo": REPO, "quant": "Q4_K_M"}}
    cfg = {"hub_lock": "hub.lock.json", "models": {m: {"quants": {"Q4": quant}} for m in ("one", "two")}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    key = f"model:{REPO}@main quant=Q4_K_M"
    write(tmp_path / "hub.lock.json", {key: {"repo": REPO, "repo_type": "model", "revision": "main",
                                             "commit": "2" * 40,
                                             "files": [{"path": Q4, "size": 1, "sha256": "0" * 64, "blob_id": "b"}]}})
    manifests = [tmp_path / f"results/models/{m}/hub/Q4/manifest.json" for m in ("one", "two")]
    for m in manifests:
        m.parent.mkdir(parents=True)
        m.write_text("{}")
    p = subprocess.run([sys.executable, "-m", "ggufbench.lockfile", "refresh", "--configfile",
                        str(tmp_path / "config.yaml"), "--directory", str(tmp_path)],
                       env=hf_env(hub, tmp_path / "hf"), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("CHANGED upstream") == 2, p.stdout
    assert not any(m.exists() for m in manifests), p.stdout
