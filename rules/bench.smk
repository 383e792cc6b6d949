# Speed: llama-bench (-o jsonl) per build x model x quant, with the peak GPU memory sampled through NVML.


rule llama_bench:
    input:
        unpack(bench_inputs),
    output:
        record="results/bench/{build}/{model}/{quant}.json",
    params:
        bench=BENCH,
        run=RUN,
    threads: 8
    resources:
        gpu=get_gpu,
    log:
        "logs/bench/{build}/{model}/{quant}.log",
    benchmark:
        "benchmarks/bench/{build}/{model}/{quant}.tsv"
    conda:
        "../envs/python.yaml"
    script:
        "../scripts/llama_bench.py"
