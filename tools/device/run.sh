#!/usr/bin/env bash
# Runs the demo on the lent GPU machine (no network, Python 3.12, CUDA 13 nvcc) in calls made right after each
# other, because the model (98 MB) is over one call's 64 MiB: `build NAME` (the first carries wheels,
# llama.cpp and model part 1), then `demo` (carries model part 2 and the corpus). Prepare .carry/ with
# tools/device/prepare.sh on the CPU machine.
set -euo pipefail
stage=${1:?usage: run.sh build NAME | demo | moe | sharded}
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
      t=results/tune/cuda/synth-moe/F16/vram-2.5GiB.json
      timeout "$TUNE_TIMEOUT" python3 -m snakemake --configfile tools/device/moe-cuda.yaml --cores 16 "$t" 2>&1 \
        | grep -E "Finished|Error|rror:|steps" || true
      tar -czf "$out/tune-cuda.tar.gz" results/tune logs/tune benchmarks/tune 2>/dev/null || true
    fi ;;
  moe)
    # the whole issue-5 run in one call: build, synthetic MoE, strategies, tuner; whatever finished comes back
    sm=(python3 -m snakemake --configfile tools/device/moe-cuda.yaml --cores 16 --scheduler greedy --keep-going)
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
    t=results/bench/cuda/synth-moe/F16
    timeout "${MOE_TIMEOUT:-390}" "${sm[@]}" results/builds/cuda/build.json $t/all-gpu.json $t/exps-cpu.json \
      $t/n-cpu-moe.json $t/fit-256.json results/tune/cuda/synth-moe/F16/vram-2.5GiB.json 2>&1 \
      | grep -E "Finished|Error|rror:|steps" || true
    tar -czf "$out/moe-cuda.tar.gz" results/bench results/tune results/builds/*/build.json \
      results/models/synth-moe/source/source.json logs benchmarks 2>/dev/null || true ;;
esac
