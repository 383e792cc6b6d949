"""GGUFs from a hub: the real huggingface_hub client, run as a rule script runs it, against a hub on loopback.

Each case makes real files (valid GGUFs), serves them from tests/hubserver.py and checks what lands on disk,
what the manifest records and which requests the client made.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from tests.support.hubserver import FakeHub, drive, drive_background, hf_env, tiny_gguf

REPO = "unsloth/Qwen3.5-35B-A3B-GGUF"


Q8_0 = ["Q8_0/Qwen3.5-35B-A3B-Q8_0-00001-of-00002.gguf", "Q8_0/Qwen3.5-35B-A3B-Q8_0-00002-of-00002.gguf"]


def unsloth_files() -> dict[str, bytes]:
    files = {p: tiny_gguf(p) for p in ["Qwen3.5-35B-A3B-Q4_K_M.gguf", "Qwen3.5-35B-A3B-UD-Q4_K_M.gguf",
                                       "Qwen3.5-35B-A3B-UD-Q4_K_XL.gguf", "Qwen3.5-35B-A3B-MXFP4_MOE.gguf",
                                       "mmproj-F16.gguf"]}
    for i, p in enumerate(Q8_0, 1):
        files[p] = tiny_gguf(p, extra={"split.no": i - 1, "split.count": 2})
    files["README.md"] = b"# Qwen3.5-35B-A3B GGUF\n"
    files[".gitattributes"] = b"*.gguf filter=lfs diff=lfs merge=lfs -text\n"
    return files


@pytest.fixture
def hub():
    h = FakeHub().start()
    yield h
    h.stop()


@pytest.fixture
def unsloth(hub):
    files = unsloth_files()
    return hub.commit(REPO, files), files


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def cache_root(tmp_path: Path) -> Path:
    return tmp_path / "hf" / "hub" / "models--unsloth--Qwen3.5-35B-A3B-GGUF"


def test_one_file_pinned_to_the_commit_and_verified(hub, unsloth, tmp_path):
    commit, files = unsloth
    env = hf_env(hub, tmp_path / "hf")
    run = drive(env, op="quant", repo=REPO, quant="Q4_K_M", dest=str(tmp_path / "q"))
    assert run.returncode == 0, run.stdout + run.stderr
    m = run.result["manifest"]
    name = "Qwen3.5-35B-A3B-Q4_K_M.gguf"
    # exactly that quant (never UD-Q4_K_M), its sha256 the hub's, the branch resolved to a commit and recorded
    assert [f["path"] for f in m["files"]] == [name]
    assert m["files"][0]["sha256"] == sha(files[name]) == m["origin"]["hub_sha256"][0]
    assert m["origin"]["commit"] == commit and m["origin"]["revision"] == "main"
    link = tmp_path / "q" / name
    assert link.is_symlink() and link.read_bytes() == files[name]
    assert (cache_root(tmp_path) / "blobs" / sha(files[name])).is_file()
    # listing once at "main", every file request at the resolved commit
    resolves = [r.path for r in hub.requests if "/resolve/" in r.path]
    assert resolves and all(f"/resolve/{commit}/" in p for p in resolves)
    assert any(r.path.startswith(f"/api/models/{REPO}/revision/main") and "blobs=true" in r.path
               for r in hub.requests)
    assert hub.unhandled == []
    # progress is in the log in human units
    assert "KiB" in run.stderr and "sha256 ok" in run.stderr


def test_tag_resolves_to_its_commit_not_to_main(hub, tmp_path):
    old = hub.commit(REPO, {"M-Q4_K_M.gguf": tiny_gguf("v1")}, tag="v1")
    hub.commit(REPO, {"M-Q4_K_M.gguf": tiny_gguf("v2, re-published")})
    run = drive(hf_env(hub, tmp_path / "hf"), op="quant", repo=REPO, quant="Q4_K_M", revision="v1",
                dest=str(tmp_path / "q"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.result["manifest"]["origin"]["commit"] == old
    assert run.result["manifest"]["files"][0]["sha256"] == sha(tiny_gguf("v1"))


def test_split_shards_in_a_quant_subfolder(hub, unsloth, tmp_path):
    commit, files = unsloth
    run = drive(hf_env(hub, tmp_path / "hf"), op="quant", repo=REPO, quant="Q8_0", dest=str(tmp_path / "q"))
    assert run.returncode == 0, run.stdout + run.stderr
    m = run.result["manifest"]
    assert [f["path"] for f in m["files"]] == [Path(p).name for p in Q8_0]
    assert [f["sha256"] for f in m["files"]] == [sha(files[p]) for p in Q8_0]
    # side by side, so llama.cpp finds shard 2 next to shard 1
    for p in Q8_0:
        assert (tmp_path / "q" / Path(p).name).read_bytes()[:4] == b"GGUF"
    from ggufbench.sources.manifest import model_path
    assert model_path(tmp_path / "q" / "manifest.json").name.endswith("-00001-of-00002.gguf")


def test_explicit_file_name(hub, unsloth, tmp_path):
    _, files = unsloth
    run = drive(hf_env(hub, tmp_path / "hf"), op="quant", repo=REPO, file="Qwen3.5-35B-A3B-UD-Q4_K_XL.gguf",
                dest=str(tmp_path / "q"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.result["manifest"]["files"][0]["sha256"] == sha(files["Qwen3.5-35B-A3B-UD-Q4_K_XL.gguf"])


def test_missing_quant_lists_what_the_repo_has(hub, unsloth, tmp_path):
    run = drive(hf_env(hub, tmp_path / "hf"), op="quant", repo=REPO, quant="Q4_K_XL", dest=str(tmp_path / "q"))
    assert run.returncode == 3
    assert run.result["error"] == "ConfigError"
    assert run.result["message"] == (f"quant 'Q4_K_XL' not found in {REPO}; it has: MXFP4_MOE, Q4_K_M, Q8_0, "
                                     "UD-Q4_K_M, UD-Q4_K_XL")
    assert not any("/resolve/" in r.path for r in hub.requests)  # nothing fetched


def test_ambiguous_quant_fails_and_names_the_files(hub, tmp_path):
    hub.commit(REPO, {"Qwen3.5-35B-A3B-Q4_K_M.gguf": tiny_gguf("a"),
                      "Qwen3.5-35B-A3B-Instruct-Q4_K_M.gguf": tiny_gguf("b")})
    run = drive(hf_env(hub, tmp_path / "hf"), op="quant", repo=REPO, quant="Q4_K_M", dest=str(tmp_path / "q"))
    assert run.returncode == 3
    assert "ambiguous" in run.result["message"] and "Qwen3.5-35B-A3B-Instruct-Q4_K_M.gguf" in run.result["message"]
    assert "give `file:`" in run.result["message"]


@pytest.mark.faults
def test_corrupt_bytes_are_removed_and_fail_clearly(hub, unsloth, tmp_path):
    _, files = unsloth
    name = "Qwen3.5-35B-A3B-MXFP4_MOE.gguf"
    good = files[name]
    hub.corrupt[name] = good[:-100] + bytes(100)  # same length, last 100 bytes zeroed
    env = hf_env(hub, tmp_path / "hf")
    run = drive(env, op="quant", repo=REPO, quant="MXFP4_MOE", dest=str(tmp_path / "q"))
    assert run.returncode == 3, run.stdout + run.stderr
    msg = run.result["message"]
    assert f"does not match the hub's {sha(good)}" in msg and "removed" in msg
    blobs = cache_root(tmp_path) / "blobs"
    assert list(blobs.iterdir()) == []  # no blob, no partial
    assert not (tmp_path / "q" / name).exists()
    # the hub serves the right bytes again: the next run gets them
    del hub.corrupt[name]
    run = drive(env, op="quant", repo=REPO, quant="MXFP4_MOE", dest=str(tmp_path / "q"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "q" / name).read_bytes() == good


@pytest.mark.faults
def test_a_cached_file_that_went_bad_is_caught_and_removed(hub, unsloth, tmp_path):
    _, files = unsloth
    name = "Qwen3.5-35B-A3B-Q4_K_M.gguf"
    env = hf_env(hub, tmp_path / "hf")
    assert drive(env, op="quant", repo=REPO, quant="Q4_K_M", dest=str(tmp_path / "a")).returncode == 0
    blob = cache_root(tmp_path) / "blobs" / sha(files[name])
    blob.write_bytes(bytes(len(files[name])))  # bit rot, same size
    run = drive(env, op="quant", repo=REPO, quant="Q4_K_M", dest=str(tmp_path / "b"))
    assert run.returncode == 3 and "does not match the hub's" in run.result["message"]
    assert not blob.exists()
    run = drive(env, op="quant", repo=REPO, quant="Q4_K_M", dest=str(tmp_path / "b"))
    assert run.returncode == 0 and blob.read_bytes() == files[name]


BIG = 3 * 1024 * 1024  # floats: a 12 MiB GGUF, more than huggingface_hub's 10 MiB write chunk


MiB = 1024 * 1024


def test_transfer_cut_mid_file_is_resumed_with_range(hub, tmp_path):
    """A dropped connection: huggingface_hub retries in the same process from the bytes it wrote."""
    name = "Big-Q8_0.gguf"
    data = tiny_gguf("big", n_floats=BIG)
    hub.commit(REPO, {name: data})
    hub.cut[name] = (11 * MiB, 1)  # the first GET drops the connection after 11 MiB
    run = drive(hf_env(hub, tmp_path / "hf"), op="quant", repo=REPO, quant="Q8_0", dest=str(tmp_path / "q"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.result["manifest"]["files"][0]["sha256"] == sha(data)
    gets = hub.gets(name)
    assert len(gets) == 2 and "range" not in gets[0].headers
    assert gets[1].headers["range"] == f"bytes={10 * MiB}-"  # what reached the file: whole 10 MiB chunks
    assert "Trying to resume download" in run.stderr


@pytest.mark.faults
def test_killed_download_never_counts_and_the_next_run_resumes(hub, tmp_path):
    name = "Big-Q8_0.gguf"
    data = tiny_gguf("big", n_floats=BIG)
    hub.commit(REPO, {name: data})
    hub.stall[name] = 11 * 1024 * 1024  # send 11 MiB, then hang
    env = hf_env(hub, tmp_path / "hf")
    proc = drive_background(env, op="quant", repo=REPO, quant="Q8_0", dest=str(tmp_path / "q"))
    partial = cache_root(tmp_path) / "blobs" / f"{sha(data)}.partial"
    try:
        assert hub.stalled.wait(30), "the download never started"
        deadline = time.monotonic() + 30
        while not (partial.is_file() and partial.stat().st_size >= 10 * 1024 * 1024):
            assert time.monotonic() < deadline, "no bytes reached the partial file"
            time.sleep(0.05)
    finally:
        proc.kill()  # SIGKILL: no cleanup runs
        proc.communicate()
    # nothing that counts: no blob, no snapshot entry, no link, no manifest; only the named partial
    root = cache_root(tmp_path)
    assert sorted(p.name for p in (root / "blobs").iterdir()) == [partial.name]
    assert not any(p.is_file() for p in (root / "snapshots").rglob("*")) if (root / "snapshots").exists() else True
    assert not (tmp_path / "q" / name).exists() and not (tmp_path / "q" / "manifest.json").exists()
    have = partial.stat().st_size
    hub.release.set()
    run = drive(env, op="quant", repo=REPO, quant="Q8_0", dest=str(tmp_path / "q"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert hub.gets(name)[-1].headers["range"] == f"bytes={have}-"  # asked only for the rest
    assert run.result["manifest"]["files"][0]["sha256"] == sha(data)
    assert "resuming at 10.00 MiB of 12.00 MiB" in run.stderr
    assert not partial.exists()


TOKEN = "hf_SeCrEtTokenValue0123456789abcdef"


def test_gated_repo_401_without_token_then_token_never_leaks(hub, tmp_path):
    repo = "meta-llama/Gated-GGUF"
    data = tiny_gguf("gated")
    hub.commit(repo, {"Gated-Q4_K_M.gguf": data}, gated_token=TOKEN)
    home = tmp_path / "hf"
    run = drive(hf_env(hub, home), op="quant", repo=repo, quant="Q4_K_M", dest=str(tmp_path / "q"))
    assert run.returncode == 3, run.stdout + run.stderr
    assert "gated" in run.result["message"] and "no token was found: set HF_TOKEN" in run.result["message"]
    assert any(r.method == "HEAD" and "/resolve/" in r.path for r in hub.requests)

    wrong = "hf_WrongTokenValue000000000000000"
    run = drive(hf_env(hub, home, HF_TOKEN=wrong), op="quant", repo=repo, quant="Q4_K_M", dest=str(tmp_path / "q"))
    assert run.returncode == 3 and "a token was sent" in run.result["message"]
    assert wrong not in run.stdout + run.stderr

    lock = tmp_path / "hub.lock.json"
    run = drive(hf_env(hub, home, HF_TOKEN=TOKEN), op="quant", repo=repo, quant="Q4_K_M", dest=str(tmp_path / "q"),
                lock=str(lock))
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "q" / "Gated-Q4_K_M.gguf").read_bytes() == data
    assert any(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in hub.requests)  # it was sent...
    written = run.stdout + run.stderr + (tmp_path / "q" / "manifest.json").read_text() + lock.read_text()
    assert TOKEN not in written  # ...and never written down


def test_gated_repo_with_the_stored_login(hub, tmp_path):
    repo = "meta-llama/Gated-GGUF"
    hub.commit(repo, {"Gated-Q4_K_M.gguf": tiny_gguf("gated")}, gated_token=TOKEN)
    home = tmp_path / "hf"
    home.mkdir()
    (home / "token").write_text(TOKEN)  # what `hf auth login` stores
    run = drive(hf_env(hub, home), op="quant", repo=repo, quant="Q4_K_M", dest=str(tmp_path / "q"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert TOKEN not in run.stdout + run.stderr


def test_offline_hit_without_network_and_clear_miss(hub, unsloth, tmp_path):
    _, files = unsloth
    home = tmp_path / "hf"
    assert drive(hf_env(hub, home), op="quant", repo=REPO, quant="Q8_0", dest=str(tmp_path / "a")).returncode == 0
    n = len(hub.requests)
    off = hf_env(hub, home, HF_HUB_OFFLINE="1")
    run = drive(off, op="quant", repo=REPO, quant="Q8_0", dest=str(tmp_path / "b"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert len(hub.requests) == n  # not one request
    assert [f["sha256"] for f in run.result["manifest"]["files"]] == [sha(files[p]) for p in Q8_0]
    run = drive(off, op="quant", repo=REPO, quant="Q4_K_M", dest=str(tmp_path / "c"))
    assert run.returncode == 3
    msg = run.result["message"]
    assert "HF_HUB_OFFLINE is set" in msg and "Hugging Face cache" in msg and "'Q4_K_M' not found" in msg
    assert len(hub.requests) == n


def test_offline_with_a_lock_uses_the_pinned_commit(hub, unsloth, tmp_path):
    commit, _ = unsloth
    home, lock = tmp_path / "hf", tmp_path / "hub.lock.json"
    assert drive(hf_env(hub, home), op="quant", repo=REPO, quant="Q8_0", dest=str(tmp_path / "a"),
                 lock=str(lock)).returncode == 0
    n = len(hub.requests)
    run = drive(hf_env(hub, home, HF_HUB_OFFLINE="1"), op="quant", repo=REPO, quant="Q8_0",
                dest=str(tmp_path / "b"), lock=str(lock))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.result["manifest"]["origin"]["commit"] == commit and run.result["manifest"]["origin"]["locked"]
    assert len(hub.requests) == n
    # a locked selection whose files were never fetched: named in the error
    entries = json.loads(lock.read_text())["entries"]
    (key, entry), = entries.items()
    entries[key.replace("Q8_0", "Q4_K_M")] = {**entry, "files": [
        {"path": "Qwen3.5-35B-A3B-Q4_K_M.gguf", "size": 1, "sha256": "0" * 64, "blob_id": None}]}
    lock.write_text(json.dumps({"version": 1, "entries": entries}))
    run = drive(hf_env(hub, home, HF_HUB_OFFLINE="1"), op="quant", repo=REPO, quant="Q4_K_M",
                dest=str(tmp_path / "c"), lock=str(lock))
    assert run.returncode == 3 and "['Qwen3.5-35B-A3B-Q4_K_M.gguf']" in run.result["message"]


@pytest.mark.faults
def test_disk_preflight_refuses_before_downloading(hub, unsloth, tmp_path):
    _, files = unsloth
    need = sum(len(files[p]) for p in Q8_0)
    run = drive(hf_env(hub, tmp_path / "hf"), op="quant", repo=REPO, quant="Q8_0", dest=str(tmp_path / "q"),
                free=1000)
    assert run.returncode == 3, run.stdout + run.stderr
    msg = run.result["message"]
    assert "not enough disk space" in msg and f"({need} bytes)" in msg and "(1000 bytes) free" in msg
    assert "KiB" in msg
    assert not any("/resolve/" in r.path for r in hub.requests)  # refused before any file request
    # enough space: goes ahead
    run = drive(hf_env(hub, tmp_path / "hf"), op="quant", repo=REPO, quant="Q8_0", dest=str(tmp_path / "q"),
                free=need)
    assert run.returncode == 0, run.stdout + run.stderr


def test_demo_base_model_through_the_hub_path(hub, tmp_path):
    """models.*.source.hub: the file quants are made from, fetched through this path (the demo's model)."""
    repo = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
    data = tiny_gguf("SmolLM2-135M-Instruct Q4_1")
    commit = hub.commit(repo, {"SmolLM2-135M-Instruct.Q4_1.gguf": data})
    dest = tmp_path / "models" / "smollm2" / "source" / "model.gguf"
    run = drive(hf_env(hub, tmp_path / "hf"), op="source", dest=str(dest), cache=str(tmp_path / "cache"),
                spec={"repo": repo, "file": "SmolLM2-135M-Instruct.Q4_1.gguf"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.result["origin"]["commit"] == commit
    assert dest.read_bytes() == data
