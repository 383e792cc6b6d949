"""Rule make_task_set: one task set (tasks.sets.<name>) as a checked multiple-choice file and its record."""
import sys

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.measure.tasks import task_set_job
from ggufbench.workflow.job import job_from_snakemake

i = snakemake.input
task_set_job(job_from_snakemake(snakemake), name=snakemake.wildcards.taskset, spec=snakemake.params.spec,
             corpus=i.corpus if "corpus" in i.keys() else None,
             corpus_record=i.corpus_record if "corpus_record" in i.keys() else None)
