#!/usr/bin/env bash
# Real output of one llama.cpp build, for tests/data/cpu-<version>/: what the feature probe reads (--help,
# --version), PPL and KLD runs of the demo's quants (12 chunks at ctx 512 of the demo corpus, 2 threads), the
# baseline logits' size, and llama-bench JSONL. Run after the demo (it uses its quants and corpus), e.g.
#   bash tools/capture_version.sh results/builds/cpu/bin tests/data/cpu-0.3.36
#   FA_PPL=-fa FA_BENCH="-fa 1" bash tools/capture_version.sh results/builds/old/bin tests/data/cpu-0.3.16
# (a llama.cpp from before -fa took a value: a bare -fa, and -fa 1 in llama-bench)
set -euo pipefail
bin=${1:?usage: capture_version.sh BIN_DIR OUT_DIR}; out=${2:?usage: capture_version.sh BIN_DIR OUT_DIR}
read -r -a fa_ppl <<< "${FA_PPL:--fa on}"; read -r -a fa_bench <<< "${FA_BENCH:--fa on}"
m=results/models/smollm2-135m/quantized; corpus=results/data/pydocs/corpus.txt
mkdir -p "$out"; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$bin/llama-perplexity" --version > "$out/version.txt" 2>&1
for t in llama-perplexity llama-bench llama-quantize; do "$bin/$t" --help > "$out/help_$t.txt" 2>&1 || true; done
ppl=("$bin/llama-perplexity" -c 512 -t 2 "${fa_ppl[@]}" -f "$corpus" --chunks 12)
"${ppl[@]}" -m $m/Q8_0/smollm2-135m-Q8_0.gguf > "$out/ppl_q8_0_kv-f16.txt" 2>&1
"${ppl[@]}" -m $m/F16/smollm2-135m-F16.gguf --kl-divergence-base "$tmp/base.kld" > "$out/kld_base_f16.txt" 2>&1
stat -c %s "$tmp/base.kld" > "$out/kld_base_f16.size"
for q in Q8_0 Q2_K; do
  "${ppl[@]}" -m $m/$q/smollm2-135m-$q.gguf --kl-divergence-base "$tmp/base.kld" --kl-divergence \
    > "$out/kld_${q,,}.txt" 2>&1
done
"$bin/llama-bench" -m $m/Q8_0/smollm2-135m-Q8_0.gguf -o jsonl -p 512 -n 128 -d 0 -r 3 -t 2 "${fa_bench[@]}" \
  -ctk f16 -ctv f16 > "$out/bench_q8_0.jsonl" 2> "$out/bench_q8_0.stderr"
ls -la "$out"
