#!/usr/bin/env bash
# Runs the demo on the lent GPU machine (no network, Python 3.12, CUDA 13 nvcc) in calls made right after each
# other, because the model (98 MB) is over one call's 64 MiB: `build NAME` (the first carries wheels,
# llama.cpp and model part 1), then `demo` (carries model part 2 and the corpus). Prepare .carry/ with
# tools/device/prepare.sh on the CPU machine.
set -euo pipefail
stage=${1:?usage: run.sh build NAME | demo | moe | sharded | capture | study | longctx | update build NAME | update demo}
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .carry/whl/*.whl 2>&1 | grep -v "^WARNING: Target" || true
export PYTHONPATH=/tmp/site GGUFBENCH_CACHE=/tmp/ggufbench-cache PYTHONUNBUFFERED=1
sm=(python3 -m snakemake --configfile tools/device/demo-cuda.yaml --cores 16 --scheduler greedy)
out=${OUT:-/tmp/out}
mkdir -p "$out"
case $stage in
  build)
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
    nvcc --version | tail -2 | tee -a "$out/gpu.txt"
    name=${2:?build name}
    /usr/bin/time -v "${sm[@]}" "results/builds/$name/build.json" 2>&1 | grep -E "Elapsed|Exit|Error|rror:" || true
    cp "results/builds/$name/build.json" "$out/" && cp "logs/build/$name.log" "$out/" ;;
  demo)
    cat .carry/smol.part1 .carry/smol.part2 > .carry/SmolLM2-135M-Instruct.Q4_1.gguf
    start=$(date +%s)
    "${sm[@]}" reports/summary.html 2>&1 | tail -30
    echo "demo wall seconds (build reused): $(( $(date +%s) - start ))" | tee "$out/wall.txt"
    tar -czf "$out/demo-cuda.tar.gz" results/tables results/builds/*/build.json reports logs benchmarks \
      results/perplexity results/kld results/kld-base results/bench ;;
  sharded)
    # issue 9 after `build cuda`: the whole demo corpus's KLD in shards, then unsharded in a second folder
    cat .carry/smol.part1 .carry/smol.part2 > .carry/SmolLM2-135M-Instruct.Q4_1.gguf
    k=results/kld/cuda/smollm2-135m; targets=(results/kld-base/cuda/smollm2-135m/ctx512_kv-f16.json
      $k/Q8_0_ctx512_kv-f16.json $k/Q4_K_M_ctx512_kv-f16.json $k/Q2_K_ctx512_kv-f16.json)
    mkdir -p /tmp/unsharded && ln -sfn "$PWD/.carry" /tmp/unsharded/.carry
    python3 -c "import yaml; c = yaml.safe_load(open('tools/device/sharded-cuda.yaml')); k = c['kld']
k.pop('sharded'); k.update(mode='chunks', chunks=179, max_logits_gib=5); yaml.safe_dump(c, open('/tmp/unsharded.yaml', 'w'))"
    for mode in sharded unsharded; do
      if [ $mode = sharded ]; then args=(--configfile tools/device/sharded-cuda.yaml);
      else args=(--directory /tmp/unsharded --configfile /tmp/unsharded.yaml); fi
      start=$(date +%s)
      python3 -m snakemake -s Snakefile "${args[@]}" --cores 16 --scheduler greedy "${targets[@]}" 2>&1 \
        | grep -E "Finished|Error|rror:|steps" || true
      echo "$mode wall seconds: $(( $(date +%s) - start ))" | tee -a "$out/wall.txt"
    done
    df -h /tmp | tee -a "$out/wall.txt"
    tar -czf "$out/sharded-cuda.tar.gz" results/kld results/kld-base results/kld-shards/*/*/*/plan.json \
      results/kld-shards/*/*/*/shard-*.json logs/kld benchmarks/kld results/builds/*/build.json || true
    tar -C /tmp/unsharded -czf "$out/unsharded-cuda.tar.gz" results/kld results/kld-base logs/kld benchmarks/kld || true
    if [ -n "${TUNE_TIMEOUT:-}" ]; then  # then the issue-5 tuner on the same build, as long as time allows
      t=results/tune/cuda/synth-moe/F16/vram-2.5GiB_ctx576.json
      timeout "$TUNE_TIMEOUT" python3 -m snakemake --configfile tools/device/moe-cuda.yaml --cores 16 "$t" 2>&1 \
        | grep -E "Finished|Error|rror:|steps" || true
      tar -czf "$out/tune-cuda.tar.gz" results/tune logs/tune benchmarks/tune 2>/dev/null || true
    fi ;;
  capture)
    # issue 13's evidence: real llama.cpp output on a GPU with too little free memory (all but 2 GiB held by
    # ggufbench's own emulation helper), llama-server starting and refusing, and the helper's release on kill
    sm=(python3 -m snakemake --configfile tools/device/offload-cuda.yaml --cores 16)
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv | tee "$out/gpu.txt"
    start=$(date +%s)
    "${sm[@]}" results/builds/cuda/build.json 2>&1 | grep -E "Finished|Error|rror:|steps" || true
    echo "build seconds: $(( $(date +%s) - start ))" | tee "$out/wall.txt"
    cp logs/build/cuda.log "$out/" || true
    bash tools/device/capture.sh "$out" 2>&1 | tail -40 ;;
  longctx)
    # issue 29 (tools/device/longctx-cuda.yaml): the scorer at 8192 and 32768, sharded KLD at 8192, one task cell;
    # each target in turn within LONGCTX_SECONDS, device memory sampled by nvidia-smi every second beside them
    cfg=tools/device/longctx-cuda.yaml
    sm=(python3 -m snakemake --configfile $cfg --cores 16 --scheduler greedy --keep-going --rerun-incomplete)
    deadline=$(( $(date +%s) + ${LONGCTX_SECONDS:-540} )); left() { echo $(( deadline - $(date +%s) )); }
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv | tee "$out/gpu.txt"
    nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader -l 1 > "$out/gpu-memory.csv" &
    smi=$!
    k=results/kv-cost/cuda/qwen35-shape/Q4_K_M
    for t in results/builds/cuda/build.json $k/ctx8192.json $k/ctx32768.json \
             results/kld/cuda/qwen35-shape/Q3_K_M_ctx8192_kv-f16.json \
             results/kld-base/cuda/qwen35-shape/ctx8192_kv-f16.json \
             results/tasks/cuda/qwen35-shape/cloze/Q4_K_M_kv-f16.json; do
      [ "$(left)" -gt 30 ] || break
      s=$(date +%s); timeout "$(left)" "${sm[@]}" "$t" 2>&1 | grep -E "rror|steps" || true
      echo "$t: $(( $(date +%s) - s )) s" | tee -a "$out/wall.txt"
    done
    kill $smi || true
    tar -czf "$out/longctx.tar.gz" results/kv-cost results/kld results/kld-base results/kld-shards/*/*/*/plan.json \
      results/kld-shards/*/*/*/shard-*.json results/tasks results/builds/cuda/build.json logs benchmarks \
      2>/dev/null || true ;;
  study)
    # issues 19 and 13 at the study's scale (tools/device/study-cuda.yaml), in calls made right after each other
    # on the warm machine: each resumes where the last stopped and returns what exists by then
    cfg=tools/device/study-cuda.yaml; state=/tmp/study-state; mkdir -p "$state"
    sm=(python3 -m snakemake --configfile $cfg --cores 16 --scheduler greedy --keep-going --rerun-incomplete)
    deadline=$(( $(date +%s) + ${STUDY_SECONDS:-520} )); left() { echo $(( deadline - $(date +%s) )); }
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv | tee "$out/gpu.txt"
    python3 -m snakemake --configfile $cfg --unlock > /dev/null 2>&1 || true
    if [ ! -f results/builds/cuda/build.json ]; then
      s=$(date +%s); timeout "$(left)" "${sm[@]}" results/builds/cuda/build.json 2>&1 | grep -E "rror|steps" || true
      echo "build seconds: $(( $(date +%s) - s ))" | tee -a "$state/wall.txt"
    fi
    if [ ! -f "$state/q8.done" ] && [ "$(left)" -gt 200 ]; then  # the Q8_0 at full shape: written, run, deleted
      s=$(date +%s)
      PYTHONPATH=$PWD/src:$PYTHONPATH python3 -m ggufbench.synth --preset qwen35moe-35b-a3b --dtype Q8_0 \
        --vocab .carry/ggml-vocab-qwen35.gguf --out /tmp/q8.gguf > "$state/q8-synth.json" 2> "$state/q8-synth.err"
      echo "Q8_0 written: $(( $(date +%s) - s )) s, $(stat -c %s /tmp/q8.gguf) bytes" | tee -a "$state/wall.txt"
      PYTHONPATH=$PWD/src:$PYTHONPATH python3 -c "
import subprocess, sys
from ggufbench.llamacpp.emulate import emulated_gpu
with emulated_gpu(16, True) as e:
    print(e, file=sys.stderr)
    r = subprocess.run(['results/builds/cuda/bin/llama-bench', '-m', '/tmp/q8.gguf', '-o', 'jsonl', '-p', '512', '-n',
                        '32', '-r', '2', '-t', '16', '-fa', 'on', '-ngl', '99', '-ot', 'exps=CPU'], capture_output=True, text=True)
    open('$state/q8-bench.jsonl', 'w').write(r.stdout); open('$state/q8-bench.err', 'w').write(r.stderr)
" 2> "$state/q8-emulation.txt"
      rm -f /tmp/q8.gguf; touch "$state/q8.done"
      echo "Q8_0 check: $(( $(date +%s) - s )) s" | tee -a "$state/wall.txt"
    fi
    s=$(date +%s)
    timeout "$(left)" "${sm[@]}" reports/summary.html 2>&1 | grep -E "Finished job|rror|steps" | tail -30 || true
    echo "workflow call seconds: $(( $(date +%s) - s ))" | tee -a "$state/wall.txt"
    df -h /tmp | tail -1 >> "$state/wall.txt"
    tar -czf "$out/study.tar.gz" results/bench results/tune results/server results/tables reports \
      results/builds/cuda/build.json results/models/*/source/source.json results/models/*/quantized/*/manifest.json \
      logs benchmarks "$state" 2>/dev/null || true ;;
  moe)
    # the whole issue-5 run in one call: build, synthetic MoE, strategies, tuner; whatever finished comes back
    sm=(python3 -m snakemake --configfile tools/device/moe-cuda.yaml --cores 16 --scheduler greedy --keep-going)
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
    t=results/bench/cuda/synth-moe/F16
    timeout "${MOE_TIMEOUT:-390}" "${sm[@]}" results/builds/cuda/build.json $t/all-gpu.json $t/exps-cpu.json \
      $t/n-cpu-moe.json $t/fit-256.json results/tune/cuda/synth-moe/F16/vram-2.5GiB_ctx576.json 2>&1 \
      | grep -E "Finished|Error|rror:|steps" || true
    tar -czf "$out/moe-cuda.tar.gz" results/bench results/tune results/builds/*/build.json \
      results/models/synth-moe/source/source.json logs benchmarks 2>/dev/null || true ;;
  update)
    # issue 18: the demo on two llama.cpp versions built with CUDA (tools/device/update-cuda.yaml), in calls made
    # right after each other: `update build previous` (carries wheels and .carry/llama.cpp-4227c9b.tar.xz),
    # `update build current` (llama.cpp-0c1e570.tar.xz), `update demo` (the model's two parts and the corpus)
    sm=(python3 -m snakemake --configfile tools/device/update-cuda.yaml --cores 16 --scheduler greedy)
    case ${2:?update build NAME | update demo} in
      build)
        name=${3:?build name}
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
        s=$(date +%s)
        # the model and the other build's source may not be here yet: this build alone reads neither, but the
        # config check wants their files to exist, so this call names files it has in their place
        stand_in=(--config "models={smollm2-135m: {source: {local: {path: .carry/smol.part1}}}}")
        if [ "$name" = previous ] && [ ! -f .carry/llama.cpp-0c1e570.tar.xz ]; then
          stand_in+=("builds={current: {source: {local: {path: .carry/llama.cpp-4227c9b.tar.xz}}}}"); fi
        if [ "$name" = current ] && [ ! -f .carry/llama.cpp-4227c9b.tar.xz ]; then
          stand_in+=("builds={previous: {source: {local: {path: .carry/llama.cpp-0c1e570.tar.xz}}}}"); fi
        "${sm[@]}" "results/builds/$name/build.json" "${stand_in[@]}" 2>&1 \
          | grep -E "Finished|Error|rror:|steps|inconsistent|  " || true
        echo "$name build seconds: $(( $(date +%s) - s ))" | tee "$out/wall.txt"
        cp "results/builds/$name/build.json" "$out/" || true; cp "logs/build/$name.log" "$out/" || true
        for t in llama-perplexity llama-bench llama-quantize; do
          "results/builds/$name/bin/$t" --help > "$out/help_$t.txt" 2>&1 || true
        done ;;
      demo)
        cat .carry/smol.part1 .carry/smol.part2 > .carry/SmolLM2-135M-Instruct.Q4_1.gguf
        s=$(date +%s)
        "${sm[@]}" reports/summary.html 2>&1 | grep -E "Finished job|rror|steps" | tail -30 || true
        echo "demo on both builds, wall seconds: $(( $(date +%s) - s ))" | tee "$out/wall.txt"
        tar -czf "$out/update-cuda.tar.gz" results/tables results/builds/*/build.json reports logs benchmarks \
          results/perplexity results/kld results/kld-base results/bench 2>/dev/null || true ;;
    esac ;;
esac
