"""measure.server_check: the server check starts the candidates that fit a budget in pick order (report.proof ranks
them), with a stand-in llama-server
(a tiny HTTP server, or one that fails as the H200 did without memory: tests/data/cuda-h200-oom), until one starts;
and records what happened when nothing fits or nothing starts. PPL records are real CPU captures."""

from __future__ import annotations

import sys

import pytest

from ggufbench.core.config import defaults
from ggufbench.core.io import read_json, record, write_json
from ggufbench.llamacpp.perplexity_output import parse_kld, parse_perplexity
from ggufbench.measure.provenance import provenance
from ggufbench.measure.server_check import server_check_job
from ggufbench.report.proof import candidates
from tests.support import DATA
from tests.support.jobs import make_job
from tests.support.models import quant_manifest, sha

CPU = DATA / "cpu-0.3.36"
RUN = {"n_gpu_layers": 99, "flash_attn": "on"}
CONFIG = {"models": {"smol": {"baseline": "F16"}}, "kld": {"base_kv": "f16"}, "perplexity": {"kv": ["f16"]}}
# quant -> (file size, the real capture of its run at ctx 512 with f16 KV): the F16 baseline pass, Q8_0's and
# Q2_K's KLD runs (KLD 0.0041 and 0.4164: the pick order is F16, Q8_0, Q2_K where they fit)
QUANTS = {"F16": (270_000_000, "kld_base_f16.txt"), "Q8_0": (145_000_000, "kld_q8_0.txt"),
          "Q2_K": (90_000_000, "kld_q2_k.txt")}

SERVER = """#!{python}
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
args = sys.argv[1:]
model = args[args.index("-m") + 1]
open({started!r}, "a").write(model.rsplit("-", 1)[-1] + "\\n")
if any(model.endswith(f"-{{q}}.gguf") for q in {oom!r}):
    sys.stdout.write(open({oom_log!r}).read())
    sys.exit(1)

class H(BaseHTTPRequestHandler):
    def reply(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.reply({{"model_path": model}} if self.path == "/props" else {{"status": "ok"}})

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.reply({{"content": " red, green and blue", "timings": {{"predicted_n": 4, "predicted_per_second": 50.0,
                                                                   "prompt_n": 7, "prompt_per_second": 400.0}}}})

port = int(args[args.index("--port") + 1])
httpd = HTTPServer(("127.0.0.1", port), H)
print("srv  llama_server: model loaded", flush=True)  # what llama-server prints once it serves (llamacpp.server)
print(f"srv  llama_server: listening on http://127.0.0.1:{{port}}", flush=True)
httpd.serve_forever()
"""


def write_records(tmp_path):
    """The build record, each quant's manifest, and the PPL/KLD records of real captures: (build, manifests,
    records as the rule's inputs name them)."""
    build = tmp_path / "build.json"
    write_json(build, {"build": "cpu", "key": "k1", "version": "0.5.0-dev", "commit": "0c1e570", "backend": "CPU"})
    manifests, records = {}, {"perplexity": [], "kld": [], "bench": [], "tune": []}
    params = {"ctx": 512, "kv": "f16", "type_k": "f16", "type_v": "f16", "threads": 2, **RUN}
    for quant, (size, capture) in QUANTS.items():
        manifests[quant] = quant_manifest(tmp_path / quant, "smol", quant)
        text, path = (CPU / capture).read_text(encoding="utf-8"), tmp_path / f"{quant}.json"
        prov = {**provenance(build, manifests[quant]), "file_size_bytes": size}  # SmolLM2's sizes, tiny files
        if quant == "F16":
            write_json(path, record("kld_base", prov, params, parse_perplexity(text).to_dict()))
        else:  # a KLD run is its quant's PPL cell too (Mean PPL(Q))
            prov.update(baseline_quant="F16", baseline_sha256=sha(manifests["F16"]), baseline_kv="f16")
            write_json(path, record("kld", prov, params, parse_kld(text).flat()))
            records["kld"].append(path)
        records["perplexity"].append(path)
    return build, manifests, records


@pytest.fixture
def setup(tmp_path):
    build, manifests, records = write_records(tmp_path)

    def check(budget_gib: float, oom=(), max_attempts: int = 3) -> dict:
        server = tmp_path / "llama-server"
        server.write_text(SERVER.format(python=sys.executable, started=str(tmp_path / "started"), oom=list(oom),
                                        oom_log=str(DATA / "cuda-h200-oom/server_all_gpu.err")))
        server.chmod(0o755)
        out = tmp_path / "server.json"
        job = make_job(tool=server, build_json=build, run=RUN, out=out, log=tmp_path / "server.log")
        rec = server_check_job(job, **candidates(records, CONFIG, model="smol", build="cpu", context=1024,
                                                         budget_gib=budget_gib),
                               manifests=manifests, budget_gib=budget_gib, context=1024,
                               server={**defaults("server"), "timeout_s": 30, "max_attempts": max_attempts})
        assert read_json(out) == rec
        started = tmp_path / "started"
        return rec, started.read_text().split() if started.exists() else []

    return check


def test_the_pick_is_started_first_and_a_candidate_that_does_not_fit_gives_way_to_the_next(setup):
    rec, started = setup(1.0, oom=["F16"])
    assert started == ["F16.gguf", "Q8_0.gguf"]  # Q2_K, the worst quality, is never tried
    res = rec["result"]
    assert res["status"] == "started" and (res["n_candidates"], res["n_fit"]) == (3, 3)
    a, b = res["attempts"]
    assert (a["quant"], a["status"]) == ("F16", "does not fit")
    assert a["reason"] == "cudaMalloc of 2442.40 MiB on device 0 failed: out of memory while loading the model"
    assert (b["quant"], b["status"], b["predicted_per_second"], b["basis"]) == ("Q8_0", "started", 50.0,
                                                                                "file size (lower bound)")
    assert (res["recommendation"]["quant"], res["recommendation"]["kld"]) == ("Q8_0", 0.004116)
    assert res["command"] == b["command"] and "-m " in b["command"] and "smol-Q8_0.gguf -c 1024" in b["command"]
    assert rec["provenance"]["quant"] == "Q8_0" and "--port" in rec["tool"]["cmd"]


def test_when_no_candidate_starts_within_max_attempts_nothing_is_recommended(setup):
    rec, started = setup(0.2, oom=QUANTS, max_attempts=1)  # 0.2 GiB: Q8_0 and Q2_K fit, F16 does not
    res = rec["result"]
    assert started == ["Q8_0.gguf"]
    assert (res["status"], res["n_fit"], res["recommendation"], res["command"]) == ("none started", 2, None, None)
    assert [(a["quant"], a["status"]) for a in res["attempts"]] == [("Q8_0", "does not fit")]
    assert rec["provenance"]["quant"] == "Q8_0" and rec["tool"]["cmd"] is None  # the first pick's


def test_when_nothing_fits_the_budget_no_server_is_started(setup):
    rec, started = setup(0.05)  # 53.7 MB: under every file
    res = rec["result"]
    assert started == [] and res["attempts"] == []
    assert (res["status"], res["n_candidates"], res["n_fit"], res["recommendation"]) == ("nothing fits", 3, 0, None)
    assert rec["provenance"]["quant"] == "F16"  # the model's baseline


# The study's C7 (issue 28): the setting a bench row measured is the command the server check proves ------------

def _bench_record(tmp_path, build, manifests, strategy: str, setting: dict, speed: float) -> str:
    """A bench record of Q8_0 with the rows of the real capture (0c1e570's llama-bench), as the setting named them
    (-b/-ub, its threads, the load mode) and their speeds times `speed`; at the path a bench job writes."""
    from ggufbench.llamacpp.bench_output import parse_bench_jsonl, summarize

    rows = []
    for r in parse_bench_jsonl((CPU / "bench_q8_0.jsonl").read_text()):
        r = {**r, "n_batch": setting.get("batch") or 2048, "n_ubatch": setting.get("ubatch") or 512,
             "n_threads": (setting.get("threads") or [2])[0], "load_mode": "none" if setting.get("no_mmap") else "auto",
             "samples_ts": [s * speed for s in r["samples_ts"]]}
        rows.append({**summarize(r, True, 5.0), "status": "measured", "strategy": strategy, "setting": setting,
                     "vram": {"available": False, "reason": "no GPU"}, "load": None, "loaded": None})
    prov = {**provenance(build, manifests["Q8_0"]), "file_size_bytes": QUANTS["Q8_0"][0]}
    path = tmp_path / "results" / "bench" / "cpu" / "smol" / "Q8_0" / f"{strategy}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record("bench", prov, {"strategy": strategy, **RUN}, {"rows": rows, "calls": []}))
    return str(path)


def test_the_proven_command_carries_every_flag_the_measured_setting_used(setup, tmp_path):
    """C7 on a CPU build: -b/-ub 4096, no mmap, its own 20 threads, measured faster than llama.cpp's defaults; the
    pick's llama-server command has exactly those flags (-lm none: 0c1e570's spelling of --no-mmap)."""
    build, manifests, records = write_records(tmp_path)
    c7 = {"kv": "f16", "batch": 4096, "ubatch": 4096, "context": None, "threads": [20], "no_mmap": True}
    records["bench"] = [_bench_record(tmp_path, build, manifests, "default", {"kv": "f16", "context": None}, 1.0),
                        _bench_record(tmp_path, build, manifests, "c7", c7, 1.5)]
    c = candidates(records, CONFIG, model="smol", build="cpu", context=1024, budget_gib=0.2)
    pick = c["ranked"][0]
    assert (pick["quant"], pick["threads"], pick["spec"]) == ("Q8_0", 20, {"batch": 4096, "ubatch": 4096,
                                                                          "no_mmap": True})
    assert pick["strategy"] == "CPU only -b 4096 -ub 4096 --no-mmap"  # apart from the default setting's row
    server = tmp_path / "llama-server"
    server.write_text(SERVER.format(python=sys.executable, started=str(tmp_path / "started"), oom=[],
                                    oom_log=str(DATA / "cuda-h200-oom/server_all_gpu.err")))
    server.chmod(0o755)
    job = make_job(tool=server, build_json=build, run=RUN, out=tmp_path / "server.json", log=tmp_path / "server.log")
    rec = server_check_job(job, **c, manifests=manifests, budget_gib=0.2, context=1024,
                           server={**defaults("server"), "timeout_s": 30, "max_attempts": 1})
    assert rec["result"]["status"] == "started"
    assert rec["result"]["command"].endswith("smol-Q8_0.gguf -c 1024 --fit off -fa on -ctk f16 -ctv f16 -t 20 "
                                             "-b 4096 -ub 4096 -lm none")
