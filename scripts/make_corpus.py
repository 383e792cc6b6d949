"""Rule make_corpus: write one evaluation corpus and its record (source, size, sha256)."""
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "a")
sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # this checkout's ggufbench, installed or not

from ggufbench.core.io import write_json
from ggufbench.sources.corpus import make_corpus

info = make_corpus(snakemake.wildcards.corpus, snakemake.params.spec, Path(snakemake.output.text),
                   lock=snakemake.config.get("hub_lock"))
write_json(snakemake.output.record, info.to_dict())
