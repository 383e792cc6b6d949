"""The task jobs: a task set made once (task_set_job), then one llama-perplexity --multiple-choice pass per quant and
KV type (task_job), each writing a record with every question's correctness, in the file's order, so that the
report compares cells question by question (report/flips.py).

The noise floor is the baseline cell scored again with another batch size (`variant`): the same model, file and
KV type, only how the tokens are split into batches differs, so what flips there is the arithmetic's own noise, the
floor under any quant's flips.
"""

from __future__ import annotations

from pathlib import Path

from ..core.config import kv_pair
from ..core.errors import ConfigError, ToolFailed
from ..core.io import read_json, record, sha256_file, tool_info, write_json
from ..core.job import Job
from ..llamacpp.cli import perplexity_args
from ..llamacpp.run import run_tool
from ..llamacpp.task_output import context_arg, kv_unified_args, kv_unified_form, parse_multiple_choice
from ..sources.manifest import model_path
from ..sources.tasks import make_task_set, read_tasks
from .provenance import provenance
from .quality import run_measurement

MIN_PARALLEL = 4  # llama-perplexity's own floor for the task modes (n_parallel = max(4, -np))
MAIN, NOISE_FLOOR = "main", "noise_floor"


def task_set_job(job: Job, *, name: str, spec: dict, corpus=None, corpus_record=None) -> dict:
    """Make task set `name` (config tasks.sets.<name>) at job.out["tasks"], checked, and its record at
    job.out["record"]. A cloze set is made from the corpus (and carries its record's sha256)."""
    made = make_task_set(name, spec, job.out["tasks"], corpus=Path(corpus) if corpus else None,
                         corpus_record=read_json(corpus_record) if corpus_record else None,
                         lock=job.setting("hub_lock") if "hub" in spec else None)
    job.note(f"task set {name}: {made.file['n_tasks']} tasks, sha256 {made.file['sha256']}")
    rec = record("task_set", None, {"name": name, "spec": spec}, made.to_dict())
    write_json(job.out["record"], rec)
    return rec


def kv_unified(job: Job) -> str | None:
    """How this build's llama-perplexity takes a unified KV cache (task_output.kv_unified_form): from the build
    record's features where it has them, else read from the tool's --help now."""
    features = job.build.get("features") or {}
    if "kv_unified" in features:
        return features["kv_unified"]
    return kv_unified_form(run_tool([job.tool, "--help"], job.log).output)


def check_task_file(tasks: Path, set_record: dict) -> list:
    """The task file is the one its set's record describes (sha256), and parses; its tasks."""
    want = set_record["result"]["file"]["sha256"]
    got = sha256_file(tasks)
    if got != want:
        raise ToolFailed(f"{tasks} has sha256 {got}, its task set's record says {want}: the file changed after it "
                         "was made; rerun the task set's rule (snakemake --forcerun make_task_set)")
    return read_tasks(tasks)


def scoring_params(scoring: dict, variant: dict | None) -> dict:
    """ctx (per sequence, as current llama.cpp's -c), batch and ubatch (None: llama.cpp's defaults) of the pass;
    a noise-floor variant overrides the batch sizes."""
    out = {"ctx": int(scoring.get("ctx", 512)), "batch": scoring.get("batch"), "ubatch": scoring.get("ubatch"),
           "variant": MAIN}
    if variant:
        out.update({k: variant[k] for k in ("batch", "ubatch") if variant.get(k) is not None}, variant=NOISE_FLOOR)
        if (out["batch"], out["ubatch"]) == (scoring.get("batch"), scoring.get("ubatch")):
            raise ConfigError("tasks.noise_floor: the variant has the main pass's batch sizes: it would score the same "
                             "batches again; give tasks.noise_floor another batch or ubatch")
    return out


def task_args(job: Job, model: Path, *, tasks: Path, kv: str, params: dict) -> list:
    """llama-perplexity --multiple-choice over the whole file in its order, with enough sequences for the largest
    task, the unified KV cache as this build needs it, and -c as this build reads it."""
    form, parallel = params["kv_unified"], params["parallel"]
    cmd = perplexity_args(job.tool, model, build=job.build, ctx=context_arg(form, params["ctx"], parallel), kv=kv,
                          threads=job.threads, run=job.run)
    cmd += ["-bf", tasks, "--multiple-choice", "--multiple-choice-tasks", 0, "-np", parallel,
            *kv_unified_args(form)]
    if params["batch"] is not None:
        cmd += ["-b", params["batch"]]
    if params["ubatch"] is not None:
        cmd += ["-ub", params["ubatch"]]
    return cmd


def task_job(job: Job, *, manifest, tasks, task_record, kv: str, scoring: dict, variant: dict | None = None) -> dict:
    """One multiple-choice pass of a quant with a KV type over a task set; the record keeps every question's
    correctness (result.correct, in the file's order). scoring: tasks.ctx/batch/ubatch; variant: the noise floor's
    batch sizes (the baseline cell scored again), None for a plain cell."""
    model = model_path(manifest)
    set_record = read_json(task_record)
    questions = check_task_file(Path(tasks), set_record)
    params = scoring_params(scoring, variant)
    params.update(kv_unified=kv_unified(job), parallel=max(MIN_PARALLEL, max(len(t.answers) for t in questions)))
    cmd = task_args(job, model, tasks=Path(tasks), kv=kv, params=params)
    r, emulation = run_measurement(job, cmd)
    scores = parse_multiple_choice(r.output, len(questions))
    prov = provenance(job.build_json, manifest, None, r.output, emulation)
    made = set_record["result"]
    prov.update(task_set=made["name"], task_set_kind=made["kind"], task_set_source=made["source"],
                task_set_sha256=made["file"]["sha256"])
    k, v = kv_pair(kv)
    rec = record("tasks", prov, {"task_set": made["name"], "kv": kv, "type_k": k, "type_v": v, **params,
                                 "threads": job.threads, **job.run},
                 {**scores.to_dict(), "accuracy": scores.n_correct / scores.n_tasks,
                  "random_chance": made["file"]["random_chance"]}, tool_info(cmd, r.wall_seconds))
    write_json(job.out["record"], rec)
    return rec
