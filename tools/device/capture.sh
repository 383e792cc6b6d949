#!/usr/bin/env bash
# Captures for tests/data/cuda-h200-oom (issue 13), after `run.sh capture` built results/builds/cuda:
# llama-bench, llama-fit-params and llama-server on a synthetic qwen35moe F16 of ~3 GiB with only 2 GiB of the
# GPU free (held by src/ggufbench/llamacpp/emulate.py), and the helper's release when its parent is killed.
set -u
out=$1; cap=$out/cap; mkdir -p "$cap"
B=results/builds/cuda/bin; M=/tmp/synth-q35-3g.gguf
export PYTHONPATH=$PWD/src:${PYTHONPATH:-}
t0=$(date +%s)
python3 -m ggufbench.synth --arch qwen35moe --vocab .carry/ggml-vocab-qwen35.gguf --out $M --target-gib 3 \
  > "$cap/synth.json" 2> "$cap/synth.err"; echo "synth rc=$? seconds=$(( $(date +%s) - t0 ))" | tee -a "$out/wall.txt"
used() { nvidia-smi --query-gpu=memory.used,memory.free --format=csv,noheader,nounits; }
torchfree() { python3 -c "import torch; f,t=torch.cuda.mem_get_info(); print(f'{f/2**20:.0f} {t/2**20:.0f}')"; }
echo "idle: nvidia-smi used,free MiB: $(used); torch free,total MiB: $(torchfree)" | tee -a "$cap/hold.txt"
# hold all but 2 GiB until fd 7 closes
mkfifo /tmp/holdin
python3 -m ggufbench.llamacpp.emulate --free-mib 2048 < /tmp/holdin > "$cap/hold.json" & hp=$!
exec 7>/tmp/holdin
for _ in $(seq 60); do [ -s "$cap/hold.json" ] && break; sleep 0.5; done
cat "$cap/hold.json"
echo "held: nvidia-smi used,free MiB: $(used); torch free,total MiB: $(torchfree)" | tee -a "$cap/hold.txt"
c() { local name=$1; shift; local s=$(date +%s.%N)
  timeout 90 "$@" > "$cap/$name.out" 2> "$cap/$name.err"; local rc=$?
  echo "$name rc=$rc seconds=$(python3 -c "print(round($(date +%s.%N)-$s,1))") cmd: $*" | tee -a "$cap/index.txt"; }
common=(-m $M -o jsonl -p 512 -n 32 -r 2 -t 16 -fa on)
c bench_all_gpu $B/llama-bench "${common[@]}" -ngl 99
c bench_ncmoe2 $B/llama-bench "${common[@]}" -ngl 99 -ncmoe 2
c bench_ncmoe8 $B/llama-bench "${common[@]}" -ngl 99 -ncmoe 8
c bench_exps_cpu_ctx4096 $B/llama-bench "${common[@]}" -ngl 99 -ot exps=CPU -d 3584
c bench_exps_cpu_ctx65536 $B/llama-bench "${common[@]}" -ngl 99 -ot exps=CPU -d 65024
c bench_fit256_ctx4096 $B/llama-bench "${common[@]}" -fitt 256 -d 3584
c bench_fit1024_verbose $B/llama-bench "${common[@]}" -fitt 1024 -v
c fit_params_256 $B/llama-fit-params -m $M -c 4096 -fitt 256 -fa on
c server_all_gpu $B/llama-server -m $M -c 4096 -ngl 99 --fit off -fa on -t 16 --host 127.0.0.1 --port 18181
c server_ncmoe2 $B/llama-server -m $M -c 4096 -ngl 99 -ncmoe 2 --fit off -fa on -t 16 --host 127.0.0.1 --port 18181
# a server that starts: exps=CPU, health, one completion, stopped
$B/llama-server -m $M -c 4096 -ngl 99 -ot exps=CPU --fit off -fa on -t 16 --host 127.0.0.1 --port 18182 \
  > "$cap/server_exps_cpu.out" 2> "$cap/server_exps_cpu.err" & sp=$!
python3 - "$cap" <<'PY'
import json, sys, time, urllib.request
cap = sys.argv[1]; t0 = time.time(); health = None
while time.time() - t0 < 120:
    try:
        health = urllib.request.urlopen("http://127.0.0.1:18182/health", timeout=2).read().decode(); break
    except Exception as e:
        health = repr(e); time.sleep(0.25)
t1 = time.time()
req = urllib.request.Request("http://127.0.0.1:18182/completion", method="POST",
      data=json.dumps({"prompt": "The capital of France is", "n_predict": 32}).encode(),
      headers={"Content-Type": "application/json"})
body = urllib.request.urlopen(req, timeout=120).read().decode()
open(f"{cap}/server_exps_cpu.completion.json", "w").write(body)
print(f"server health after {t1 - t0:.1f} s: {health}")
PY
kill $sp; wait $sp; echo "server_exps_cpu rc=$?" | tee -a "$cap/index.txt"
exec 7>&-; wait $hp; echo "holder rc=$?" | tee -a "$cap/hold.txt"; sleep 1
echo "released: nvidia-smi used,free MiB: $(used); torch free,total MiB: $(torchfree)" | tee -a "$cap/hold.txt"
# the helper dies with a killed job: the parent holds via emulated_gpu, then SIGKILL
python3 -c "
import json, time
from ggufbench.llamacpp.emulate import emulated_gpu
with emulated_gpu(2.0, True) as r:
    print(json.dumps(r), flush=True); time.sleep(600)" > "$cap/kill_parent.json" & pp=$!
for _ in $(seq 60); do [ -s "$cap/kill_parent.json" ] && break; sleep 0.5; done
echo "held by a job: $(used)" | tee -a "$cap/hold.txt"; kill -9 $pp; sleep 3
echo "3 s after kill -9 of the job: $(used); helper processes left: $(pgrep -fc emulate.py)" | tee -a "$cap/hold.txt"
python3 -m ggufbench.llamacpp.emulate --free-mib 999999 > "$cap/hold_too_much.json" < /dev/null; echo "rc=$?" >> "$cap/hold_too_much.json"
tar -C "$out" -czf "$out/captures.tar.gz" cap && rm -rf "$cap"
