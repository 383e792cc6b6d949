# KL divergence against the baseline quant's logits. The logits file is huge (vocab x tokens): it is
# forecast exactly and checked against a budget and free disk before it is written, limited by --chunks,
# written under a temporary name; kept for the quants and KV types added later (kld.keep_logits; false makes it
# temp(): removed once every quant's KLD job has read it, at the price of a full rerun when a quant is added).


rule kld_base:
    input:
        unpack(kld_base_inputs),
    output:
        logits=paths.KLD_BASE_LOGITS if KLD.get("keep_logits", True) else temp(paths.KLD_BASE_LOGITS),
        record=paths.KLD_BASE,
    log:
        "logs/kld/{build}/{model}/base_ctx{ctx}_kv-{kv}.log",
    benchmark:
        "benchmarks/kld/{build}/{model}/base_ctx{ctx}_kv-{kv}.tsv"
    conda:
        "../envs/python.yaml"
    threads: 8
    resources:
        gpu=get_gpu,
    params:
        chunks=KLD.get("chunks"),
        run=get_run,  # kld.max_logits_gib, a disk guard, is read from the config: changing it measures nothing anew
        gpu=get_gpu_settings,
    script:
        "../scripts/kld_base.py"


rule kld:
    input:
        unpack(kld_inputs),
    output:
        record=paths.KLD,
    log:
        "logs/kld/{build}/{model}/{quant}_ctx{ctx}_kv-{kv}.log",
    benchmark:
        "benchmarks/kld/{build}/{model}/{quant}_ctx{ctx}_kv-{kv}.tsv"
    conda:
        "../envs/python.yaml"
    threads: 8
    resources:
        gpu=get_gpu,
    params:
        run=get_run,
        gpu=get_gpu_settings,
    script:
        "../scripts/kld.py"
