#!/usr/bin/env bash
# Fills .carry/ (git-ignored) for tools/device/run.sh, from the CPU machine's cache and demo run:
# cp312 wheels of snakemake and gguf (pulp left out: 16 MB, only the ILP scheduler needs it), llama.cpp's
# sources from the sdists, the model split in two, and the demo corpus text.
set -euo pipefail
cache=${GGUFBENCH_CACHE:-$HOME/.cache/ggufbench}
mkdir -p .carry
bash ../shared/tools/wheelhouse.sh .carry/whl --skip numpy,pandas,pyarrow,matplotlib,pyyaml,requests,jinja2,\
markupsafe,psutil,packaging,urllib3,idna,certifi,charset_normalizer,tabulate,wrapt,attrs,typing_extensions,\
huggingface_hub,nvidia_ml_py,tqdm,pulp snakemake==9.27.1 gguf nvidia-ml-py
# llama.cpp of llama-cpp-python 0.3.36 (the demo's) and of 0.3.16 (issue 18's older version: run config/update.yaml
# first, so that its sdist is in the cache)
for v in 0.3.36:0c1e570 0.3.16:4227c9b; do
  src=$(ls -d "$cache"/sources/sdist-*/llama_cpp_python-${v%%:*}/vendor | head -1)
  [ -n "$src" ] || { echo "no llama-cpp-python ${v%%:*} sdist in $cache/sources: run its build first" >&2; exit 1; }
  tar -C "$src" --exclude=llama.cpp/models --exclude=llama.cpp/docs --exclude=llama.cpp/.git \
    -cJf ".carry/llama.cpp-${v#*:}.tar.xz" llama.cpp
done
head -c 44000000 results/models/smollm2-135m/source/model.gguf > .carry/smol.part1
tail -c +44000001 results/models/smollm2-135m/source/model.gguf > .carry/smol.part2
cp results/data/pydocs/corpus.txt .carry/pydocs-cpython-3.11.7.txt
du -sh .carry/*
