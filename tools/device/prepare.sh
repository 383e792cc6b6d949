#!/usr/bin/env bash
# Fills .carry/ (git-ignored) for tools/device/run.sh, from the CPU machine's cache and demo run:
# cp312 wheels of snakemake and gguf (pulp left out: 16 MB, only the ILP scheduler needs it), llama.cpp's
# source from the sdist, the model split in two, and the demo corpus text.
set -euo pipefail
cache=${GGUFBENCH_CACHE:-$HOME/.cache/ggufbench}
mkdir -p .carry
bash ../shared/tools/wheelhouse.sh .carry/whl --skip numpy,pandas,pyarrow,matplotlib,pyyaml,requests,jinja2,\
markupsafe,psutil,packaging,urllib3,idna,certifi,charset_normalizer,tabulate,wrapt,attrs,typing_extensions,\
huggingface_hub,nvidia_ml_py,tqdm,pulp snakemake==9.27.1 gguf nvidia-ml-py
src=$(ls -d "$cache"/sources/sdist-*/llama_cpp_python-0.3.36/vendor | head -1)
tar -C "$src" --exclude=llama.cpp/models --exclude=llama.cpp/docs --exclude=llama.cpp/.git \
  -cJf .carry/llama.cpp-0c1e570.tar.xz llama.cpp
head -c 44000000 results/models/smollm2-135m/source/model.gguf > .carry/smol.part1
tail -c +44000001 results/models/smollm2-135m/source/model.gguf > .carry/smol.part2
cp results/data/pydocs/corpus.txt .carry/pydocs-cpython-3.11.7.txt
du -sh .carry/*
