# What a KV-cache type costs at the contexts you serve: ggufbench-kvscore (built with every llama.cpp build) decodes
# the same tokens with kv_cost.ref_kv and every KV type of kv_cost.kv in lockstep and scores each against the
# reference, in host memory that does not grow with the context; nothing is written but the record.


rule kv_cost:
    input:
        unpack(kv_cost_inputs),
    output:
        record=paths.KV_COST,
    log:
        "logs/kv_cost/{build}/{model}/{quant}/ctx{ctx}.log",
    benchmark:
        "benchmarks/kv_cost/{build}/{model}/{quant}/ctx{ctx}.tsv"
    conda:
        "../envs/python.yaml"
    threads: 8
    resources:
        gpu=get_gpu,
    params:
        cells=kv_cost_cells,
        run=get_run,
        gpu=get_gpu_settings,
    script:
        "../scripts/kv_cost.py"
