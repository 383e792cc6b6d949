"""The hub lock file: a rerun fetches the locked commit's bytes; refresh reports re-published quants and
invalidates only those. Real huggingface_hub client against the loopback hub (tests/hubserver.py)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
import yaml

from tests.support.hubserver import FakeHub, drive, hf_env, tiny_gguf

REPO = "unsloth/Qwen3.5-35B-A3B-GGUF"


Q4 = "Qwen3.5-35B-A3B-Q4_K_M.gguf"


Q8 = "Qwen3.5-35B-A3B-Q8_0.gguf"


@pytest.fixture
def hub():
    h = FakeHub().start()
    yield h
    h.stop()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def refresh(env, workdir, *extra):
    return subprocess.run([sys.executable, "-m", "ggufbench.lockfile", "refresh", "--configfile",
                           str(workdir / "config.yaml"), "--directory", str(workdir), *extra],
                          env=env, capture_output=True, text=True, timeout=60, check=False)


def test_lock_pins_reruns_and_refresh_reruns_only_what_changed(hub, tmp_path):
    first = hub.commit(REPO, {Q4: tiny_gguf("q4 v1"), Q8: tiny_gguf("q8")})
    work = tmp_path / "work"
    lock = work / "config" / "hub.lock.json"
    config = {"hub_lock": "config/hub.lock.json",
              "models": {"qwen": {"baseline": "Q8_0", "quants": {
                  "Q8_0": {"hub": {"repo": REPO, "quant": "Q8_0"}},
                  "Q4_K_M": {"hub": {"repo": REPO, "quant": "Q4_K_M"}}}}}}
    work.mkdir()
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    env = hf_env(hub, tmp_path / "hf")

    def fetch(quant):
        run = drive(env, op="quant", repo=REPO, quant=quant, lock=str(lock),
                    dest=str(work / f"results/models/qwen/hub/{quant}"))
        assert run.returncode == 0, run.stdout + run.stderr
        return run.result["manifest"]

    assert not fetch("Q4_K_M")["origin"]["locked"]  # first fetch records the selection
    fetch("Q8_0")
    entries = json.loads(lock.read_text())["entries"]
    key = f"model:{REPO}@main quant=Q4_K_M"
    assert set(entries) == {key, f"model:{REPO}@main quant=Q8_0"}
    assert entries[key]["commit"] == first
    assert entries[key]["files"] == [{"path": Q4, "size": len(tiny_gguf("q4 v1")), "sha256": sha(tiny_gguf("q4 v1")),
                                      "blob_id": entries[key]["files"][0]["blob_id"]}]

    # the uploader re-publishes a fixed Q4_K_M under the same name; Q8_0 is untouched
    second = hub.commit(REPO, {Q4: tiny_gguf("q4 v2, fixed")})
    (work / "results/models/qwen/hub/Q4_K_M/manifest.json").unlink()
    m = fetch("Q4_K_M")  # a rerun: the locked commit, the same bytes as before
    assert m["origin"]["locked"] and m["origin"]["commit"] == first
    assert m["files"][0]["sha256"] == sha(tiny_gguf("q4 v1"))

    check = refresh(env, work, "--check")
    assert check.returncode == 1, check.stdout + check.stderr
    lines = {ln.split(":", 1)[0]: ln for ln in check.stdout.splitlines()}
    assert "CHANGED upstream" in lines["models.qwen.quants.Q4_K_M"]
    assert f"~{Q4} ({sha(tiny_gguf('q4 v1'))[:12]} -> {sha(tiny_gguf('q4 v2, fixed'))[:12]})" in \
        lines["models.qwen.quants.Q4_K_M"]
    assert "unchanged (commit" in lines["models.qwen.quants.Q8_0"] and "same bytes" in lines["models.qwen.quants.Q8_0"]
    assert json.loads(lock.read_text())["entries"] == entries  # --check writes nothing

    done = refresh(env, work)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(lock.read_text())["entries"][key]["commit"] == second
    # only the changed quant's manifest goes, so snakemake redoes that quant and what depends on it
    assert not (work / "results/models/qwen/hub/Q4_K_M/manifest.json").exists()
    assert (work / "results/models/qwen/hub/Q8_0/manifest.json").exists()
    assert "removed results/models/qwen/hub/Q4_K_M/manifest.json" in done.stdout
    m = fetch("Q4_K_M")
    assert m["origin"]["commit"] == second and m["files"][0]["sha256"] == sha(tiny_gguf("q4 v2, fixed"))
    assert refresh(env, work, "--check").returncode == 0


def test_a_lock_that_disagrees_with_the_hub_at_its_commit_fails(hub, tmp_path):
    hub.commit(REPO, {Q4: tiny_gguf("q4")})
    lock = tmp_path / "hub.lock.json"
    env = hf_env(hub, tmp_path / "hf")
    assert drive(env, op="quant", repo=REPO, quant="Q4_K_M", lock=str(lock), dest=str(tmp_path / "a")).returncode == 0
    data = json.loads(lock.read_text())
    (entry,) = data["entries"].values()
    entry["files"][0]["sha256"] = "0" * 64  # edited by hand
    lock.write_text(json.dumps(data))
    run = drive(env, op="quant", repo=REPO, quant="Q4_K_M", lock=str(lock), dest=str(tmp_path / "b"))
    assert run.returncode == 3 and "refresh it" in run.result["message"]
