# Perplexity matrix: every build x model x quant x context x KV type is one job (a cluster spreads them).


rule perplexity:
    input:
        unpack(perplexity_inputs),
    output:
        record=paths.PERPLEXITY,
    log:
        "logs/perplexity/{build}/{model}/{quant}/ctx{ctx}_kv-{kv}.log",
    benchmark:
        "benchmarks/perplexity/{build}/{model}/{quant}/ctx{ctx}_kv-{kv}.tsv"
    conda:
        "../envs/python.yaml"
    threads: 8
    resources:
        gpu=get_gpu,
    params:
        chunks=perplexity_chunks,
        run=get_run,
        gpu=get_gpu_settings,
    script:
        "../scripts/perplexity.py"
