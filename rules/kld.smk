# KL divergence against the baseline quant's logits. The logits file is huge (vocab x tokens): it is
# forecast exactly and checked against a budget and free disk before it is written, limited by --chunks,
# written under a temporary name, and temp(): removed once every quant's KLD job has read it.


rule kld_base:
    input:
        unpack(kld_base_inputs),
    output:
        logits=temp(paths.KLD_BASE_LOGITS),
        record=paths.KLD_BASE,
    params:
        chunks=KLD.get("chunks"),
        max_logits_gib=KLD["max_logits_gib"],
        run=RUN,
        gpu=get_gpu_settings,
    threads: 8
    resources:
        gpu=get_gpu,
    log:
        "logs/kld/{build}/{model}/base_ctx{ctx}_kv-{kv}.log",
    benchmark:
        "benchmarks/kld/{build}/{model}/base_ctx{ctx}_kv-{kv}.tsv"
    conda:
        "../envs/python.yaml"
    script:
        "../scripts/kld_base.py"


rule kld:
    input:
        unpack(kld_inputs),
    output:
        record=paths.KLD,
    params:
        run=RUN,
        gpu=get_gpu_settings,
    threads: 8
    resources:
        gpu=get_gpu,
    log:
        "logs/kld/{build}/{model}/{quant}_ctx{ctx}_kv-{kv}.log",
    benchmark:
        "benchmarks/kld/{build}/{model}/{quant}_ctx{ctx}_kv-{kv}.tsv"
    conda:
        "../envs/python.yaml"
    script:
        "../scripts/kld.py"
