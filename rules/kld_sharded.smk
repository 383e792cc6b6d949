# KL divergence, kld.mode: sharded — the whole corpus against the baseline in bounded disk (docs/kld-sharded.md).
# A checkpoint tokenizes the corpus and sizes the shards from the exact logits forecast; one job per shard holds
# its baseline pass and every quant's KLD pass, its logits only in local scratch; the combine rules write the
# same records as mode chunks (results/kld, results/kld-base), so PPL cells, tables and report read either.


localrules:
    kld_combine,  # arithmetic on the shard records: not worth a cluster job
    kld_base_combine,


checkpoint kld_shard_plan:
    input:
        unpack(kld_shard_plan_inputs),
    output:
        plan=paths.KLD_SHARD_PLAN,
        tokens=paths.KLD_SHARD_TOKENS,
    log:
        "logs/kld/{build}/{model}/shard-plan_ctx{ctx}.log",
    conda:
        "../envs/python.yaml"
    params:
        chunks=KLD.get("chunks"),
        sharded=KLD_SHARDED,
    script:
        "../scripts/kld_shard_plan.py"


rule kld_shard:
    input:
        unpack(kld_shard_inputs),
    output:
        record=paths.KLD_SHARD,
    log:
        "logs/kld/{build}/{model}/shard-{shard}_ctx{ctx}.log",
    benchmark:
        "benchmarks/kld/{build}/{model}/shard-{shard}_ctx{ctx}.tsv"
    conda:
        "../envs/python.yaml"
    threads: 8
    resources:
        gpu=get_gpu,
        disk_mb=kld_shard_disk_mb,  # the shard's logits (exact forecast): Slurm's node-local --tmp
    params:
        base_kv=DEPS.kld_base_kv,
        runs=kld_shard_runs,
        quants=kld_shard_quants,
        scratch_dir=KLD_SHARDED.get("scratch_dir"),
        run=get_run,
        gpu=get_gpu_settings,
    script:
        "../scripts/kld_shard.py"


rule kld_combine:
    input:
        shards=get_kld_shard_records,
        plan=paths.KLD_SHARD_PLAN,
    output:
        record=paths.KLD,
    log:
        "logs/kld/{build}/{model}/{quant}_ctx{ctx}_kv-{kv}.combine.log",
    conda:
        "../envs/python.yaml"
    params:
        chunks=KLD.get("chunks"),
    script:
        "../scripts/kld_combine.py"


rule kld_base_combine:
    input:
        shards=get_kld_shard_records,
        plan=paths.KLD_SHARD_PLAN,
    output:
        record=paths.KLD_BASE,
    log:
        "logs/kld/{build}/{model}/base_ctx{ctx}_kv-{kv}.combine.log",
    conda:
        "../envs/python.yaml"
    params:
        chunks=KLD.get("chunks"),
    script:
        "../scripts/kld_base_combine.py"
