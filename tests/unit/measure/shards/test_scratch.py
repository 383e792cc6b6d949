"""measure.shards.scratch: at most `parallel` shard jobs hold a scratch folder at once (file locks), and the peak size
of a folder while a block runs."""

from __future__ import annotations

import threading
import time

import pytest

from ggufbench.measure.shards.scratch import FolderSampler, folder_bytes, scratch_slot


def test_each_job_alive_at_once_gets_its_own_slot_and_a_freed_slot_is_taken_again(tmp_path):
    root = tmp_path / "scratch"
    with scratch_slot(root, 2) as a, scratch_slot(root, 2) as b:
        assert (a, b) == (0, 1)
        assert sorted(p.name for p in root.iterdir()) == [".ggufbench-kld-slot-0.lock", ".ggufbench-kld-slot-1.lock"]
    with pytest.raises(RuntimeError), scratch_slot(root, 2):
        raise RuntimeError("the shard failed")
    with scratch_slot(root, 2) as c:  # given back even though the block raised
        assert c == 0


def test_with_every_slot_taken_a_job_waits_until_one_is_given_back(tmp_path):
    root = tmp_path / "scratch"
    got: list[tuple[int, float]] = []

    def second():
        with scratch_slot(root, 1, poll_s=0.01) as slot:
            got.append((slot, time.monotonic()))

    with scratch_slot(root, 1) as first:
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.2)
        assert got == [] and first == 0  # still waiting
        released = time.monotonic()
    t.join(timeout=10)
    assert len(got) == 1 and got[0][0] == 0 and got[0][1] >= released


def test_folder_sampler_keeps_the_peak_of_files_removed_before_the_block_ends(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "small").write_bytes(b"x" * 10)
    with FolderSampler(tmp_path, interval_s=0.01) as s:
        big = tmp_path / "sub" / "base.logits"
        big.write_bytes(b"x" * 5000)
        deadline = time.monotonic() + 10
        while s.peak_bytes < 5010 and time.monotonic() < deadline:
            time.sleep(0.01)
        big.unlink()
    assert s.peak_bytes == 5010 and s.samples >= 2
    assert folder_bytes(tmp_path) == 10
    assert folder_bytes(tmp_path / "missing") == 0


def test_folder_sampler_samples_once_at_the_end_of_the_block(tmp_path):
    with FolderSampler(tmp_path, interval_s=60) as s:
        time.sleep(0.1)  # the thread's first sample is taken; the next would be in 60 s
        (tmp_path / "base.logits").write_bytes(b"x" * 1000)
    assert s.peak_bytes == 1000
