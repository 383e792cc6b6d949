"""Building llama.cpp: fetch a source, configure with CMake, build only the tools the workflow runs.

Sources (config `builds.<name>.source`, exactly one of):
  git:         {url, ref}                     cloned into the cache, ref resolved to a commit
  local:       {path}                         a llama.cpp source folder or a .tar.gz/.tar.xz/.zip of one
  pypi_sdist:  {package, version, subdir}     e.g. llama-cpp-python's sdist, whose vendor/llama.cpp is
                                              a full llama.cpp tree (with its git metadata)
A build is keyed by source identity + CMake arguments + compiler and nvcc versions. Finished builds live in a
cache outside the repo (GGUFBENCH_CACHE, default ~/.cache/ggufbench), so an unchanged build is reused by
every checkout and test run on the machine; a build that fails or is killed leaves only a scratch folder.

Beside the tools, the build makes ggufbench's own KV-cost scorer (ggufbench-kvscore, llamacpp/kvscore/: one C++
file against llama.h) as one more target of llama.cpp's own CMake build, added from outside its tree through
CMAKE_PROJECT_llama.cpp_INCLUDE; the scorer's source hash is part of the build key. A scorer that does not compile
against a llama.cpp costs that build nothing else: the record lists it under `missing_tools` with the reason, as a
build made before the scorer existed lacks it in `tools` (features `kvscore`: false).

A build's record (results/builds/<build>/build.json) notes each tool's size and sha256, so the jobs that run a tool
check it there without the cache (ensure_tool): the cache is needed only to put back a tool that changed, and then
the one named now ($GGUFBENCH_CACHE or the config's cache_dir) is used, found by the build's key, wherever the
build was cached when it was made. A cache that cannot be written still gives what it holds intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from ..core.cache import (
    READ_ONLY,
    cache_dir,
    check_tree,
    exclusive,
    fingerprint,
    not_writable,
    note,
    pypi_download,
    remove_stale_work,
    unwritable,
)
from ..core.errors import ConfigError, ToolFailed
from ..core.io import mismatch, read_json, remove_with_stamp, sha256_file, stamp_verified, write_json
from .features import MINIMUM, check_source, optional_tools, probe
from .kvscore_output import SCORER
from .run import run_tool

# What the workflow runs: measurement tools, llama-server (proven commands); every build has them (the rule's
# outputs). llama-fit-params (what --fit decides) is built too where the source has it (features.OPTIONAL_TOOLS).
TOOLS = ("llama-perplexity", "llama-bench", "llama-quantize", "llama-tokenize", "llama-server")
KEYED_TOOLS = (*TOOLS, "llama-fit-params")  # part of the build key as it was before fit-params became optional
SCORER_DIR = Path(__file__).with_name("kvscore")  # the scorer's C++ source and the CMake file that adds its target
SCORER_SOURCES = ("kvscore.cpp", "kvscore.cmake", "target.cmake")


def scorer_source_hash(folder: Path | None = None) -> str:
    """sha256 over the scorer's source files (names and bytes): part of the build key, so a changed scorer is a new
    build (the same llama.cpp, compiled again with it)."""
    folder = folder or SCORER_DIR
    h = hashlib.sha256()
    for name in SCORER_SOURCES:
        h.update(name.encode() + b"\0" + (folder / name).read_bytes() + b"\0")
    return h.hexdigest()


def scorer_cmake_arg(folder: Path | None = None) -> str:
    """The configure argument that adds the scorer's target to llama.cpp's build (not a build-key entry: the folder
    is this checkout's, its contents are keyed by scorer_source_hash)."""
    return f"-DCMAKE_PROJECT_llama.cpp_INCLUDE={(folder or SCORER_DIR) / 'kvscore.cmake'}"


def _first_line(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    except (FileNotFoundError, PermissionError):
        return None
    lines = [ln for ln in out.splitlines() if ln.strip()]
    return lines[0].strip() if lines else None


def find_nvcc() -> str | None:
    for cand in (shutil.which("nvcc"), os.environ.get("CUDACXX"),
                 os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def nvcc_version(nvcc: str) -> str | None:
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=False).stdout
    m = re.search(r"release (\d+\.\d+)", out)
    return m.group(1) if m else None


def git_commit(path: Path) -> str | None:
    """HEAD of the git checkout at path (sdists of llama-cpp-python carry llama.cpp's git metadata)."""
    out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        return None
    # only trust it if path itself is the top of that checkout, not a folder inside another repo
    top = subprocess.run(["git", "-C", str(path), "rev-parse", "--show-toplevel"], capture_output=True,
                         text=True, check=False).stdout.strip()
    return out.stdout.strip() if top and Path(top).resolve() == path.resolve() else None


# Sources ---------------------------------------------------------------------------------------------

def _extract(archive: Path, dest: Path) -> Path:
    """Extract archive into dest (atomically) and return dest."""
    if dest.exists():
        return dest
    tmp = dest.with_name(dest.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        if e.errno in READ_ONLY:
            raise not_writable(dest.parent, e, f"{archive.name} is not extracted in the cache yet") from e
        raise
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            z.extractall(tmp)
    else:
        with tarfile.open(archive) as t:
            t.extractall(tmp, filter="tar") if sys.version_info >= (3, 12) else t.extractall(tmp)
    tmp.rename(dest)
    return dest


def _single_top(folder: Path) -> Path:
    entries = [p for p in folder.iterdir()]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else folder


def _check_tree(src: Path, where: str) -> Path:
    if not (src / "CMakeLists.txt").is_file() or not (src / "src" / "llama.cpp").is_file():
        raise ConfigError(f"{where}: {src} is not a llama.cpp source tree (expected CMakeLists.txt and "
                          "src/llama.cpp)")
    if not (src / "tools" / "perplexity").is_dir():
        raise ConfigError(f"{where}: this llama.cpp is too old for ggufbench (its tools are still under "
                          f"examples/, not tools/): ggufbench needs {MINIMUM}")
    check_source(src, where)
    return src


def fetch_source(source: dict, cache: Path, log: str | Path | None = None) -> tuple[Path, dict]:
    """Return (llama.cpp source dir, identity record) for one `source:` config entry, by its kind."""
    kinds = [k for k in SOURCES if k in source]
    if len(kinds) != 1:
        raise ConfigError(f"builds.*.source must have exactly one of {', '.join(SOURCES)}; got {list(source)}")
    return SOURCES[kinds[0]](source[kinds[0]], cache, log)


def _from_sdist(spec: dict, cache: Path, log) -> tuple[Path, dict]:
    pkg, ver = spec["package"], str(spec["version"])
    norm = re.sub(r"[-_.]+", "_", pkg).lower()
    archive = pypi_download(f"{pkg}=={ver}", cache / "downloads", f"{norm}-{ver}.[tz]*", binary=False, log=log)
    digest = sha256_file(archive)
    top = _single_top(_extract(archive, cache / "sources" / f"sdist-{digest[:16]}"))
    src = _check_tree(top / spec.get("subdir", "vendor/llama.cpp"), f"pypi_sdist {pkg}=={ver}")
    return src, {"kind": "pypi_sdist", "package": pkg, "version": ver, "sdist": archive.name, "sdist_sha256": digest,
                 "commit": git_commit(src)}


def _from_disk(spec: dict, cache: Path, log) -> tuple[Path, dict]:
    path = Path(spec["path"]).expanduser()
    if not path.exists():
        raise ConfigError(f"builds.*.source.local.path: {path} does not exist")
    if path.is_dir():
        src = _check_tree(path, "builds.*.source.local.path")
        ident = {"kind": "local_dir", "path": str(path.resolve()), "commit": git_commit(src)}
    else:
        digest = sha256_file(path)
        top = _single_top(_extract(path, cache / "sources" / f"tar-{digest[:16]}"))
        src = _check_tree(top, f"builds.*.source.local.path ({path.name})")
        ident = {"kind": "tarball", "path": str(path.resolve()), "sha256": digest, "commit": git_commit(src)}
    declared = spec.get("commit")
    if declared:
        if ident["commit"] and not ident["commit"].startswith(declared):
            raise ConfigError(f"builds.*.source.local.commit: {declared} but the tree's git HEAD is {ident['commit']}")
        ident["commit"] = ident["commit"] or declared
        ident["commit_declared"] = True
    return src, ident


def _from_git(spec: dict, cache: Path, log) -> tuple[Path, dict]:
    url, ref = spec["url"], str(spec["ref"])
    repo = cache / "git" / hashlib.sha256(url.encode()).hexdigest()[:16]
    if re.fullmatch(r"[0-9a-f]{40}", ref) and (cache / "sources" / f"git-{ref}").is_dir():
        commit = ref  # a full commit already extracted: nothing to fetch (offline, or a read-only cache)
    else:
        commit = _git_fetch(repo, url, ref, cache, log)
    src = cache / "sources" / f"git-{commit}"
    if not src.exists():
        tmp = src.with_name(src.name + f".partial-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        archive = subprocess.Popen(["git", "-C", str(repo), "archive", "--format=tar", commit], stdout=subprocess.PIPE)
        with tarfile.open(fileobj=archive.stdout, mode="r|") as t:
            t.extractall(tmp)
        if archive.wait() != 0:
            raise ToolFailed(f"git archive {commit} failed in {repo}")
        tmp.rename(src)
    return src, {"kind": "git", "url": url, "ref": ref, "commit": commit}


def _git_fetch(repo: Path, url: str, ref: str, cache: Path, log) -> str:
    """ref fetched into the cache's clone of url (made first if need be); its commit."""
    refused = unwritable(repo / ".git" if (repo / ".git").is_dir() else repo.parent)
    if refused is not None:
        raise not_writable(cache, refused, f"git ref {ref} of {url} must be fetched into the cache to be resolved (a "
                                           "full 40-hex commit already extracted needs no fetch)")
    if not (repo / ".git").exists():
        shutil.rmtree(repo, ignore_errors=True)
        run_tool(["git", "clone", "--filter=blob:none", "--no-checkout", url, str(repo)], log)
    run_tool(["git", "-C", str(repo), "fetch", "--tags", "origin", ref], log)
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "FETCH_HEAD^{commit}"], capture_output=True,
                          text=True, check=True).stdout.strip()


# A build's `source:` by kind: where its llama.cpp tree comes from.
SOURCES = {"git": _from_git, "local": _from_disk, "pypi_sdist": _from_sdist}


# CMake ----------------------------------------------------------------------------------------------

def resolve_cuda_architectures(requested: str) -> tuple[str, str]:
    """`native` becomes the visible GPUs' compute capabilities through NVML (e.g. "90", "120"); without NVML
    it stays `native` for nvcc to resolve. Returns (architectures, how they were chosen)."""
    if str(requested).strip() != "native":
        return str(requested), "config"
    from .nvml import gpu_info

    info = gpu_info()
    caps = sorted({g["compute_capability"].replace(".", "") for g in info["gpus"]}, key=int)
    if caps:
        return ";".join(caps), "NVML compute capability of " + ", ".join(g["name"] for g in info["gpus"])
    return "native", f"left to nvcc ({info.get('reason')})"


def _arch_numbers(archs: str) -> list[int]:
    return [int(m) for m in re.findall(r"(\d+)", archs)]


def check_toolkit(archs: str, nvcc_ver: str | None) -> None:
    """Blackwell consumer cards (sm_120) need CUDA 12.8+; refuse earlier toolkits before compiling."""
    if nvcc_ver is None:
        return
    major, minor = (int(x) for x in nvcc_ver.split(".")[:2])
    if any(a >= 120 for a in _arch_numbers(archs)) and (major, minor) < (12, 8):
        raise ConfigError(f"builds.*.cuda_architectures {archs!r} asks for Blackwell (sm_120), which nvcc "
                          f"{nvcc_ver} cannot compile: CUDA 12.8 or newer is needed (envs/build.yaml provides "
                          "it for --sdm conda), or build for an older architecture")


# A CPU that lists AMX, on a machine where AMX tile instructions fault (seen on a VM whose kernel grants the
# permission but whose ldtilecfg raises a general protection fault): -march=native would compile ggml's AMX
# kernels and every matmul would die of SIGSEGV. A tiny program, compiled and run once, tells.
_AMX_PROBE = r"""
#include <immintrin.h>
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
static void *use(void *arg) {
    unsigned char cfg[64] __attribute__((aligned(64)));
    memset(cfg, 0, sizeof cfg);
    cfg[0] = 1; cfg[16] = 64; cfg[48] = 16;   /* palette 1; tile 0: 16 rows of 64 bytes */
    _tile_loadconfig(cfg); _tile_zero(0); _tile_release();
    return arg;
}
int main(void) {
    if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */)) return 2;
    pthread_t t;  /* ggml's matmuls run in worker threads */
    use(0); pthread_create(&t, 0, use, 0); pthread_join(t, 0);
    return 0;
}
"""
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"


def amx_faults() -> str | None:
    """Why AMX must be left out of a native build on this machine, or None (no AMX, or it works)."""
    try:
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if "amx_tile" not in flags.split() or not cc:
        return None
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        src, exe = Path(d) / "amx.c", Path(d) / "amx"
        src.write_text(_AMX_PROBE)
        if subprocess.run([cc, "-O1", "-mamx-tile", "-pthread", str(src), "-o", str(exe)], capture_output=True,
                          check=False).returncode != 0:
            return None
        rc = subprocess.run([str(exe)], capture_output=True, check=False).returncode
    if rc < 0 or rc == 2:
        why = f"killed by signal {-rc}" if rc < 0 else "the kernel refused the AMX permission"
        return f"the CPU lists AMX but an AMX tile program was {why} here: built with {NO_AMX}"
    return None


def cmake_args(build: dict, ident: dict) -> list[str]:
    """CMake cache entries for this build (order is stable: it is part of the build key)."""
    args = ["-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF",
            "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=ON",
            "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
            f"-DGGML_NATIVE={'ON' if build.get('native', True) else 'OFF'}"]
    if build.get("cuda", False):
        args += ["-DGGML_CUDA=ON",
                 f"-DCMAKE_CUDA_ARCHITECTURES={build['resolved_cuda_architectures']}",
                 f"-DGGML_CUDA_FA_ALL_QUANTS={'ON' if build.get('fa_all_quants', True) else 'OFF'}"]
    # Provenance the binary itself reports (llama-bench's build_commit): only a real commit.
    if ident.get("commit"):
        args.append(f"-DLLAMA_BUILD_COMMIT={ident['commit'][:12]}")
    if build.get("native", True) and build.get("amx_faults"):
        args += [f"-DCMAKE_C_FLAGS={NO_AMX}", f"-DCMAKE_CXX_FLAGS={NO_AMX}"]
    args += [str(a) for a in build.get("cmake_args", [])]
    return args


def toolchain(cuda: bool) -> dict:
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    tc = {"cmake": _first_line(["cmake", "--version"]), "generator": "Ninja" if shutil.which("ninja") else
          "Unix Makefiles", "cxx": cxx, "cxx_version": _first_line([cxx, "--version"]) if cxx else None,
          "nvcc": None, "nvcc_version": None, "platform": platform.platform(), "machine": platform.machine()}
    if cuda:
        nvcc = find_nvcc()
        if nvcc is None:
            raise ConfigError("builds.*.cuda is true but no nvcc was found (PATH, CUDACXX, CUDA_HOME/bin): "
                              "install the CUDA toolkit, or set cuda: false for a CPU build")
        tc["nvcc"], tc["nvcc_version"] = nvcc, nvcc_version(nvcc)
    if tc["cmake"] is None:
        raise ConfigError("cmake not found on PATH: install CMake (3.14+) to build llama.cpp")
    return tc


def build_key(ident: dict, args: list[str], tc: dict, *, scorer: bool = True) -> str:
    """The build's key: source identity, CMake arguments, compiler and nvcc versions, and the scorer's source.
    scorer=False: the key of llama.cpp's own tools alone, as every key was before the scorer was built (its tools_key:
    a scorer change compiles them again bit for bit, so what they measured stays valid, core/records.py)."""
    keyed = {"source": {k: v for k, v in ident.items() if k != "path" or ident["kind"] == "local_dir"},
             "cmake_args": args, "cxx_version": tc["cxx_version"], "nvcc_version": tc["nvcc_version"],
             "tools": KEYED_TOOLS}
    if scorer:
        keyed["scorer"] = scorer_source_hash()
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:20]


def parse_version(text: str) -> dict:
    """llama-perplexity --version, in either form: `version: 0.5.0-dev (build 1, commit 0c1e570)` / `built with
    GNU 12.2.0 for Linux x86_64` (2026), or `version: 1 (4227c9be4268)` / `built with cc (Debian 12.2.0-14) 12.2.0
    for x86_64-linux-gnu` (2025, the build number alone)."""
    out: dict = {}
    m = re.search(r"version:\s*(\S+)\s*\(build (\d+), commit (\S+?)\)", text)
    if m:
        out.update(version=m.group(1), build_number=int(m.group(2)), binary_commit=m.group(3))
    elif m := re.search(r"version:\s*(\d+)\s*\(([0-9a-f]+|unknown)\)", text):
        out.update(version=m.group(1), build_number=int(m.group(1)), binary_commit=m.group(2))
    m = re.search(r"built with (.+?) for ([^\n]+)", text)
    if m:
        out.update(built_with=m.group(1), target=m.group(2).strip())
    return out


def _reusable(done: Path, log: str | Path | None, writable: bool = True) -> dict[str, dict] | None:
    """The record (bin/<tool> -> {size, sha256}) of a finished build in the cache whose binaries are as they were
    when it was cached, or None. One that is not (a truncated or changed binary) is removed, so it is built again,
    never reused to die of SIGSEGV. writable=False (a cache that cannot be written, read without the key's lock):
    nothing is removed or recorded there."""
    try:
        recorded = json.loads((done / "build.json").read_text())
    except (OSError, ValueError):
        if done.exists():
            if writable:
                note(log, f"{done} has no readable build.json: building again")
                shutil.rmtree(done, ignore_errors=True)
            else:
                note(log, f"{done} has no readable build.json (the cache cannot be written: left as it is)")
        return None
    files = recorded.get("files")
    if not files:  # cached before binaries were recorded: record them now
        missing = [t for t in TOOLS if not (done / "bin" / t).is_file()]
        if missing:
            why = f"bin/{missing[0]} is missing"
        else:
            files = {f"bin/{p.name}": fingerprint(p) for p in sorted((done / "bin").iterdir())
                     if not p.name.startswith(".")}  # not the check stamps
            if writable:
                write_json(done / "build.json", {**recorded, "files": files})
            return files
    else:
        why = check_tree(done, files)
    if why is None:
        return files
    if writable:
        note(log, f"cached build {done}: {why}; removed it, building again")
        shutil.rmtree(done, ignore_errors=True)
    else:
        note(log, f"cached build {done}: {why} (the cache cannot be written: left as it is)")
    return None


def _copy_verified(src: Path, dest: Path, want: dict) -> None:
    """Copy a cached tool to dest whole and as recorded, or not at all: checked as copied, since a cache read without
    its lock may change under the copy. Each job copies to its own temporary (two may put back one tool at once)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    try:
        shutil.copy2(src, tmp)
        got = sha256_file(tmp)
        if got != want["sha256"]:
            raise ToolFailed(f"{src} has sha256 {got[:12]} as copied, its record says {want['sha256'][:12]}: it "
                             "changed while it was copied (another job building it again?); rerun")
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    stamp_verified(dest, got)  # the next check of dest is a stat


def build_llama_cpp(name: str, build: dict, out_dir: Path, *, jobs: int, log: str | Path | None = None,
                    cache: Path | None = None) -> dict:
    """Build (or reuse from the cache) and copy the tools into out_dir/bin; return the build record, which notes
    each tool's size and sha256 (`files`) for ensure_tool. cache: default cache_dir() ($GGUFBENCH_CACHE). A cache
    that cannot be written still gives an identical finished build (read without the key's lock, each tool checked
    as it is copied); only what must be fetched or built there fails, with CacheNotWritable naming the folder."""
    cache = cache or cache_dir()
    spec = dict(build)  # as configured: what ensure_tool builds again from
    src, ident = fetch_source(build["source"], cache, log)
    tc = toolchain(bool(build.get("cuda", False)))
    arch_note = None
    if build.get("cuda"):
        archs, arch_note = resolve_cuda_architectures(build.get("cuda_architectures", "native"))
        check_toolkit(archs, tc["nvcc_version"])
        build = {**build, "resolved_cuda_architectures": archs}
    amx = amx_faults() if build.get("native", True) else None
    if amx:
        note(log, amx)
        build = {**build, "amx_faults": amx}
    args = cmake_args(build, ident)
    key = build_key(ident, args, tc)
    builds = cache / "builds"
    done = builds / key
    # one job at a time per key: a second first build waits and reuses, none removes a folder another copies from
    with exclusive(builds / f".{key}.lock", read_only_ok=True) as refused:
        if refused is None:
            for stale in remove_stale_work(builds, key):
                note(log, f"removed {stale}, the scratch folder of a build that was killed")
            files = _reusable(done, log)
            reused = files is not None
            if not reused:
                files = _compile(src, tc["generator"], args, done, jobs=jobs, log=log)
        else:
            files = _reusable(done, log, writable=False)
            if files is None:
                raise not_writable(cache, refused, f"build {name} (key {key}) is not in the build cache as it was "
                                                   f"cached ({done}), so it must be built there")
            reused = True
            note(log, f"the build cache {cache} cannot be written ({refused.strerror}): using its finished build "
                      f"{done} without the key's lock, each tool checked as it is copied")
        built = sorted(Path(f).name for f in files)
        (out_dir / "bin").mkdir(parents=True, exist_ok=True)
        for old in (out_dir / "bin").iterdir():  # a tool an earlier version of this build had, this one lacks
            if old.name not in built and not old.name.startswith("."):
                remove_with_stamp(old)
        for t in built:
            _copy_verified(done / "bin" / t, out_dir / "bin" / t, files[f"bin/{t}"])
    # llama-perplexity's common arguments have --version in every supported llama.cpp (llama-bench's came later)
    version = parse_version(run_tool([str(out_dir / "bin" / "llama-perplexity"), "--version"], log).output)
    feats = {**probe(out_dir / "bin"), "kvscore": SCORER in built}
    missing = _missing_tools(done)
    # cache_path: where it was cached when made (provenance); ensure_tool finds the entry by key in today's cache
    return {"build": name, "key": key, "tools_key": build_key(ident, args, tc, scorer=False),
            "reused_from_cache": reused, "cache_path": str(done),
            "backend": "CUDA" if build.get("cuda") else "CPU", "source": ident, "source_dir": str(src),
            "commit": ident.get("commit") or version.get("binary_commit") or "unknown",
            "cmake_args": args, "toolchain": tc, **version,
            "cuda_architectures": build.get("resolved_cuda_architectures") if build.get("cuda") else None,
            "cuda_architectures_from": arch_note, "amx": amx,
            "tools": built, "files": {f"bin/{t}": files[f"bin/{t}"] for t in built}, "features": feats,
            "missing_tools": missing, "spec": spec}


def _missing_tools(done: Path) -> dict[str, str]:
    """What the cached build could not make, and why (the scorer, where it did not compile); {} for a build from
    before this was noted."""
    try:
        return dict(json.loads((done / "build.json").read_text()).get("missing") or {})
    except (OSError, ValueError):
        return {}


def _compile(src: Path, generator: str, args: list[str], done: Path, *, jobs: int, log: str | Path | None) -> dict:
    """Configure and build the tools in a scratch folder, then move them in as the finished entry `done` (with the
    key's lock held); return their record. The scorer is built last, on its own: if it does not compile, the
    entry notes why (`missing`) and holds the other tools."""
    work = done.with_name(f"{done.name}.work-{os.getpid()}")
    targets = [*TOOLS, *optional_tools(src)]
    build = ["cmake", "--build", str(work / "cmake"), "--config", "Release", "-j", str(jobs), "--target"]
    run_tool(["cmake", "-S", str(src), "-B", str(work / "cmake"), "-G", generator, *args, scorer_cmake_arg()], log)
    run_tool([*build, *targets], log)
    missing = {}
    try:
        run_tool([*build, SCORER], log)
        targets.append(SCORER)
    except ToolFailed as e:
        missing[SCORER] = f"it did not compile against this llama.cpp: {e}"[:2000]
        note(log, f"{SCORER} left out of this build: {missing[SCORER]}")
    (work / "bin").mkdir()
    for t in targets:
        shutil.copy2(work / "cmake" / "bin" / t, work / "bin" / t)
    shutil.rmtree(work / "cmake")
    files = {f"bin/{t}": fingerprint(work / "bin" / t) for t in targets}
    write_json(work / "build.json", {"key": done.name, "files": files, "missing": missing})
    shutil.rmtree(done, ignore_errors=True)
    work.rename(done)
    return files


def ensure_tool(build_json: str | Path, name: str, log: str | Path | None = None, cache: Path | None = None) -> Path:
    """The tool `name` of the build whose record is build_json, as that build made it, for the job about to run
    it. (The tools are not inputs of the measuring rules: a missing input makes Snakemake run the build job, and
    then every job downstream of it, issue 17.)

    A tool as build.json notes it (size; sha256 when size or mtime moved) is returned without the cache: no lock, no
    read, so a read-only or missing cache costs nothing. Only a tool deleted or changed needs the cache: the one
    named now (cache, default cache_dir(): $GGUFBENCH_CACHE), where the entry is found by the build's key, not at
    the path build.json noted. It is put back from there, or built again there (same key) when the cache lost it
    too, and the job goes on: a deleted binary re-measures nothing. A cache that cannot be written gives what it
    holds intact; where a repair must write it, CacheNotWritable names it and what to do. A record made before
    build.json noted its tools (no `files`) is checked against the cache entry, as before."""
    build_json = Path(build_json)
    rec = read_json(build_json)
    path = build_json.parent / "bin" / name
    if name not in rec.get("tools", TOOLS):
        why = (rec.get("missing_tools") or {}).get(name)
        if name == SCORER and why is None:
            why = "made before ggufbench built its scorer: rebuild it, snakemake --forcerun build_llama_cpp"
        raise ToolFailed(f"build {rec.get('build')} has no {name} (its tools: {', '.join(rec.get('tools', []))})"
                         + (f": {why}" if why else ""))
    noted = (rec.get("files") or {}).get(f"bin/{name}")
    why = mismatch(path, noted["size"], noted["sha256"]) if noted else None
    if noted and why is None:
        return path
    cache = cache or cache_dir()
    done = cache / "builds" / rec["key"]
    with exclusive(done.parent / f".{done.name}.lock", read_only_ok=True) as refused:
        files = _reusable(done, log, writable=refused is None)
        if files is not None:
            return _put_back(path, done, files, noted, log)
    if refused is not None:
        lost = f"the build cache has no intact build of key {rec['key']} ({done})"
        if noted:
            what = f"{path} {why}, and {lost} to put it back from, so it must be built again there"
        else:
            what = (f"{path} can only be checked against the build cache (its build.json predates per-tool records), "
                    f"and {lost}, so it must be built again there")
        raise not_writable(cache, refused, what)
    if "spec" not in rec:
        raise ToolFailed(f"{path} is needed, and neither it nor the build cache entry {done} is as built; rebuild: "
                         f"snakemake --forcerun build_llama_cpp {build_json}")
    note(log, f"{path}: the build cache {cache} has no intact build {rec['build']} (key {rec['key']}); building it "
              "again there")
    again = build_llama_cpp(rec["build"], rec["spec"], build_json.parent, jobs=os.cpu_count() or 2, log=log,
                            cache=cache)
    if again["key"] != rec["key"]:
        raise ToolFailed(f"build {rec['build']} built again as key {again['key']}, its record says {rec['key']} (the "
                         f"toolchain changed since): rebuild it on purpose, snakemake --forcerun build_llama_cpp "
                         f"{build_json}")
    return path


def _put_back(path: Path, done: Path, files: dict[str, dict], noted: dict | None, log: str | Path | None) -> Path:
    """path as the cache entry `done` (intact, its record `files`) has it: kept if it already is, else copied."""
    want = files.get(f"bin/{path.name}")
    if want is None:
        raise ToolFailed(f"the build cache entry {done} has no bin/{path.name}, which its build's record lists: "
                         f"remove {done} and rerun, to build it again")
    why = mismatch(path, want["size"], want["sha256"])
    if why is None:  # as the cache's build of this key: built again since build.json was written (other bytes)
        return path
    _copy_verified(done / "bin" / path.name, path, want)
    line = f"{path} {why}: put back from the build cache ({done})"
    if noted is not None and noted["sha256"] != want["sha256"]:
        line += " (built again since the build's record was written: same key, other bytes)"
    note(log, line)
    return path
