"""The workflow on a real Slurm (Debian's slurm-wlm 22.05, snakemake-executor-plugin-slurm): a single-node
cluster brought up by tests/slurm/up.sh in a temporary folder (own munge key and socket, own ports), the
reduced demo (config/test-slurm.yaml) submitted through profiles/slurm end to end, once with the squeue
status check and once with the default sacct one (MariaDB + slurmdbd), plus the GPU request and bad input.

Needs root and the packages (CI installs them: see .ci/run); skipped with the reason otherwise. Every daemon
is stopped by its recorded PID (tests/slurm/down.sh) and the test checks that none is left.

The test node is the real machine (its CPUs, its free memory), so the profile is run with two adjustments
written into a copy of it: every job's threads capped at 1 (--max-threads; two jobs run side by side) and its
memory at 2000 MB, with partition `debug` (and account `acct` with accounting). Everything else (runtimes,
which rules are submitted, the GPU requests from the rules) is the profile and the workflow as they are."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import TESTS
from tests.support.workflow import REPO

pytestmark = pytest.mark.e2e
HERE = TESTS / "slurm"
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
CONFIG = REPO / "config" / "test-slurm.yaml"
# Rules that never become Slurm jobs (localrules in the workflow): light, or they need the network.
LOCAL_RULES = {"make_corpus", "fetch_model_source", "aggregate", "figures", "summary_report"}
# Rules that run llama.cpp: each must be submitted with --gpus=1 for a CUDA build and without for a CPU one.
GPU_RULES = {"kld_base", "kld", "perplexity", "llama_bench"}
FAST = ["--slurm-init-seconds-before-status-checks", "2"]  # the default first check waits 40 s

_missing = [t for t in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sacct") if not shutil.which(t)]
_missing_acct = [t for t in ("slurmdbd", "mariadbd", "mariadb-install-db") if not shutil.which(t)]
needs_slurm = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: it starts its own munged, slurmctld and slurmd"),
    pytest.mark.skipif(bool(_missing), reason=f"Slurm packages absent ({', '.join(_missing)} not found): "
                       "apt-get install slurm-wlm munge"),
]
needs_accounting = pytest.mark.skipif(
    bool(_missing_acct),
    reason=f"accounting packages absent ({', '.join(_missing_acct)} not found): "
    "apt-get install slurmdbd mariadb-server")


# --- the cluster -------------------------------------------------------------------------------------------


def _pids(folder: Path) -> dict[str, int]:
    path = folder / "pids"
    if not path.exists():
        return {}
    return {name: int(pid) for name, pid in (line.split() for line in path.read_text().splitlines() if line)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _processes_mentioning(folder: Path) -> list[str]:
    """Processes whose command line names the cluster's folder (every daemon up.sh starts does)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(folder) in cmdline:
            found.append(f"{proc.name}: {cmdline.strip()}")
    return found


class Cluster:
    def __init__(self, folder: Path, accounting: bool):
        self.folder = folder
        self.accounting = accounting
        self.env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf"),
                    "PATH": f"{folder / 'bin'}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}

    def up(self) -> None:
        args = [str(HERE / "up.sh"), str(self.folder)] + (["--accounting"] if self.accounting else [])
        proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            self.down()
            raise AssertionError(f"tests/slurm/up.sh failed:\n{proc.stdout}\n{proc.stderr}")

    def down(self) -> None:
        pids = _pids(self.folder)
        proc = subprocess.run([str(HERE / "down.sh"), str(self.folder)], capture_output=True, text=True, timeout=120)
        left = [f"{name} {pid}" for name, pid in pids.items() if _alive(pid)] + _processes_mentioning(self.folder)
        assert proc.returncode == 0 and not left, f"daemons left running: {left}\n{proc.stderr}"

    def profile(self, tmp: Path, **default_resources: str) -> Path:
        """profiles/slurm with this node's limits (see the module docstring); returns the profile folder."""
        profile = yaml.safe_load(PROFILE.read_text())
        profile["max-threads"] = 1
        profile["default-resources"] = ["mem_mb=1000", "runtime=30", "slurm_partition=debug"] + [
            f"{k}={v}" for k, v in default_resources.items()]
        for resources in profile["set-resources"].values():
            resources["mem_mb"] = min(resources.get("mem_mb", 2000), 2000)
        folder = tmp / "profile"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
        return folder

    def snakemake(self, workdir: Path, profile: Path, *args: str, configfile: Path = CONFIG, timeout: int = 900,
                  env: dict | None = None) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(configfile), "--profile", str(profile), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env or self.env, check=False)
        (workdir / "snakemake-output.txt").parent.mkdir(parents=True, exist_ok=True)
        (workdir / "snakemake-output.txt").write_text(proc.stdout + proc.stderr)
        return proc


def _sbatch_calls(output: str) -> list[tuple[str, str]]:
    """(rule, sbatch options before --wrap) for every sbatch line the plugin logged (--verbose, or its error
    message for a refused submission)."""
    calls = []
    for line in output.splitlines():
        m = re.search(r"(sbatch --parsable .*?)--wrap=", line)
        if m:
            rule = re.search(r"--comment rule_([a-z_]+?)(?:_wildcards_\S*)?\s", m.group(1)).group(1)
            calls.append((rule, m.group(1)))
    return calls


def _fail(proc: subprocess.CompletedProcess) -> str:
    return (f"snakemake exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-8000:]}\n"
            f"--- stderr ---\n{proc.stderr[-8000:]}")


@pytest.fixture(scope="class")
def plain_cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("slurm-plain"), accounting=False)
    cluster.up()
    yield cluster
    cluster.down()


@pytest.fixture(scope="class")
def accounting_cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("slurm-acct"), accounting=True)
    cluster.up()
    yield cluster
    cluster.down()


def _check_demo_run(workdir: Path, proc: subprocess.CompletedProcess) -> list[tuple[str, str]]:
    assert proc.returncode == 0, _fail(proc)
    assert (workdir / "reports/summary.html").stat().st_size > 0
    calls = _sbatch_calls(proc.stdout + proc.stderr)
    submitted = {rule for rule, _ in calls}
    # every measuring rule went through Slurm; the light ones ran where snakemake runs
    assert {"build_llama_cpp", "quantize_gguf"} | GPU_RULES <= submitted, submitted
    assert not submitted & LOCAL_RULES, f"light rules submitted to Slurm: {submitted & LOCAL_RULES}"
    profile = yaml.safe_load(PROFILE.read_text())
    for rule, options in calls:
        # a CPU build: no GPU asked for
        assert "--gpus" not in options and "--gres" not in options, options
        # the profile's wall time reached sbatch
        runtime = profile["set-resources"].get(rule, {}).get("runtime")
        if runtime:
            assert f" -t {runtime} " in options, (rule, options)
        assert "--cpus-per-task=1" in options and " -p debug " in options, options
    return calls


# --- the profile itself (no Slurm needed) ---------------------------------------------------------------


def test_profile_covers_every_rule_that_runs_llama_cpp_and_comments_every_entry():
    profile = yaml.safe_load(PROFILE.read_text())
    smk = "\n".join(p.read_text() for p in (REPO / "rules").glob("*.smk"))
    rules = set(re.findall(r"^(?:rule|checkpoint) (\w+):", smk, re.M))
    assert profile["executor"] == "slurm"
    for key in ("set-threads", "set-resources"):
        assert set(profile[key]) <= rules, f"{key} names rules the workflow lacks: {set(profile[key]) - rules}"
    heavy = (GPU_RULES | {"build_llama_cpp", "kld_shard"}) & rules  # kld_shard: kld.mode sharded
    assert heavy <= set(profile["set-threads"]) and heavy <= set(profile["set-resources"])
    for rule in heavy:
        assert {"mem_mb", "runtime"} <= set(profile["set-resources"][rule]), rule
        # the GPU comes from the rule (1 for a CUDA build, 0 for CPU), so the profile must not fix it
        assert "gpu" not in profile["set-resources"][rule], rule
    # account and partition are the user's
    assert not any(r.startswith(("slurm_account", "slurm_partition")) for r in profile["default-resources"])
    lines = PROFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() and not line.lstrip().startswith(("#", "-")) and "#" not in line:
            assert lines[i - 1].lstrip().startswith("#") or line.endswith(":"), f"uncommented entry: {line!r}"


# --- without accounting: the squeue status check ----------------------------------------------------------


class TestSlurmSqueue:
    pytestmark = needs_slurm

    def test_demo_end_to_end_with_squeue_status(self, plain_cluster, tmp_path_factory):
        tmp = tmp_path_factory.mktemp("squeue-run")
        workdir = tmp / "work"
        proc = plain_cluster.snakemake(workdir, plain_cluster.profile(tmp), "--verbose", *FAST,
                                       "--slurm-status-command", "squeue", "reports/summary.html")
        _check_demo_run(workdir, proc)
        out = proc.stdout + proc.stderr
        assert "status query" in out.lower() and "command=squeue" in out, "the squeue status check was not used"
        TestSlurmSqueue.workdir = workdir

    def test_gpu_rules_ask_slurm_for_a_gpu(self, plain_cluster, tmp_path_factory):
        """A second build with `cuda: true` (its binaries: the CPU build's, copied, so no CUDA compile is
        needed to reach its jobs): every job of a rule that runs llama.cpp on it is submitted with --gpus=1.
        This node has no GPU (no GresTypes), so Slurm refuses each one at once: a clear error, no hang."""
        workdir = getattr(TestSlurmSqueue, "workdir", None)
        if workdir is None or not (workdir / "results/builds/cpu/build.json").exists():
            pytest.skip("needs the demo run above")
        tmp = tmp_path_factory.mktemp("gpu-run")
        config = yaml.safe_load(CONFIG.read_text())
        config["builds"]["cuda"] = {**config["builds"]["cpu"], "cuda": True, "cuda_architectures": "90"}
        cfg = tmp / "cuda.yaml"
        cfg.write_text(yaml.safe_dump(config))
        shutil.copytree(workdir / "results/builds/cpu", workdir / "results/builds/cuda")
        proc = plain_cluster.snakemake(workdir, plain_cluster.profile(tmp), *FAST, "--keep-going",
                                       "--slurm-status-command", "squeue", "reports/summary.html",
                                       configfile=cfg, timeout=300)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, "a GPU job was accepted by a node without GPUs"
        calls = _sbatch_calls(out)
        gpu_calls = [(rule, opts) for rule, opts in calls if "_wildcards_cuda_" in opts]
        assert {rule for rule, _ in gpu_calls} >= GPU_RULES - {"kld"}, calls  # kld waits for kld_base
        for rule, opts in gpu_calls:
            assert rule in GPU_RULES and " --gpus=1" in opts, (rule, opts)
        assert "Invalid generic resource (gres) specification" in out

    def test_unknown_partition_fails_at_once(self, plain_cluster, tmp_path_factory):
        tmp = tmp_path_factory.mktemp("bad-partition")
        proc = plain_cluster.snakemake(tmp / "work", plain_cluster.profile(tmp), *FAST,
                                       "--slurm-status-command", "squeue", "results/builds/cpu/build.json",
                                       "--default-resources", "slurm_partition=nosuch", "mem_mb=1000",
                                       timeout=180)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert "Invalid partition name specified" in out, out[-4000:]

    def test_unreachable_controller_fails_not_hangs(self, plain_cluster, tmp_path_factory):
        """The same cluster's config with the controller's port pointing at nothing (port 1)."""
        tmp = tmp_path_factory.mktemp("unreachable")
        conf = tmp / "slurm.conf"
        conf.write_text(re.sub(r"(?m)^SlurmctldPort=\d+", "SlurmctldPort=1",
                               (plain_cluster.folder / "slurm.conf").read_text()))
        env = {**plain_cluster.env, "SLURM_CONF": str(conf)}
        proc = plain_cluster.snakemake(tmp / "work", plain_cluster.profile(tmp), *FAST,
                                       "--slurm-status-command", "squeue", "results/builds/cpu/build.json",
                                       timeout=180, env=env)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert "Unable to contact slurm controller" in out, out[-4000:]


# --- with accounting (MariaDB + slurmdbd): the default sacct status check -------------------------------------


class TestSlurmSacct:
    pytestmark = [*needs_slurm, needs_accounting]

    def test_demo_end_to_end_with_sacct_status(self, accounting_cluster, tmp_path_factory):
        tmp = tmp_path_factory.mktemp("sacct-run")
        workdir = tmp / "work"
        proc = accounting_cluster.snakemake(workdir, accounting_cluster.profile(tmp, slurm_account="acct"),
                                            "--verbose", *FAST, "reports/summary.html")
        calls = _check_demo_run(workdir, proc)
        assert all(" -A acct " in opts for _, opts in calls)
        assert "command=sacct" in proc.stdout + proc.stderr, "the sacct status check was not used"
        # and Slurm's accounting saw every job complete
        sacct = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State"], capture_output=True, text=True,
                               env=accounting_cluster.env, check=True).stdout.split()
        assert len(sacct) == len(calls) and all(s.endswith("|COMPLETED") for s in sacct), sacct

    def test_unknown_account_fails_at_once(self, accounting_cluster, tmp_path_factory):
        tmp = tmp_path_factory.mktemp("bad-account")
        proc = accounting_cluster.snakemake(tmp / "work", accounting_cluster.profile(tmp), *FAST,
                                            "results/builds/cpu/build.json", "--default-resources",
                                            "slurm_account=nosuch", "slurm_partition=debug", "mem_mb=1000",
                                            timeout=180)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert "The given account nosuch appears to be invalid" in out, out[-4000:]
