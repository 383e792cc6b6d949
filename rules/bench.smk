# Speed: llama-bench (-o jsonl) per build x model x quant x offload strategy, a call per setting with its peak
# GPU memory sampled through NVML. A bench job owns the cores it sweeps (threads: all of the machine's).


rule llama_bench:
    input:
        unpack(bench_inputs),
    output:
        record=paths.BENCH,
    log:
        "logs/bench/{build}/{model}/{quant}/{strategy}.log",
    benchmark:
        "benchmarks/bench/{build}/{model}/{quant}/{strategy}.tsv"
    conda:
        "../envs/python.yaml"
    threads: tool_threads(workflow.cores)
    resources:
        gpu=get_gpu,
    params:
        bench=get_bench_measured,
        spec=bench_strategy_spec,
        run=get_run,
        gpu=get_gpu_settings,
    script:
        "../scripts/llama_bench.py"


rule tune_offload:
    input:
        unpack(bench_inputs),
    output:
        record=paths.TUNE,
    log:
        "logs/tune/{build}/{model}/{quant}/vram-{budget}GiB_ctx{ctx}.log",
    benchmark:
        "benchmarks/tune/{build}/{model}/{quant}/vram-{budget}GiB_ctx{ctx}.tsv"
    conda:
        "../envs/python.yaml"
    threads: tool_threads(workflow.cores)
    resources:
        gpu=get_gpu,
    params:
        tuner=TUNER,
        contexts=BENCH["contexts"],
        run=get_run,
    script:
        "../scripts/tune_offload.py"
