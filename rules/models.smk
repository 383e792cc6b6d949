# GGUF files: a model's source file, quants made from it with llama-quantize, or quants from the Hub / disk.
# Every quant ends as a manifest.json (files, sizes, sha256, origin) that later jobs read.


rule fetch_model_source:
    output:
        gguf=paths.MODEL_SOURCE,
        record=paths.MODEL_SOURCE_RECORD,
    log:
        "logs/models/{model}/source.log",
    conda:
        "../envs/python.yaml"
    params:
        source=model_source_spec,
        cache_dir=get_cache_dir(),
    script:
        "../scripts/fetch_model_source.py"


rule quantize_gguf:
    input:
        unpack(quantize_inputs),
    output:
        manifest=quant_manifest("quantize"),
    log:
        "logs/models/{model}/quantize_{quant}.log",
    benchmark:
        "benchmarks/models/{model}/quantize_{quant}.tsv"
    conda:
        "../envs/python.yaml"
    threads: workflow.cores
    params:
        origin=quant_origin,
    script:
        "../scripts/quantize_gguf.py"


# Files go to the Hugging Face cache (HF_HUB_CACHE / HF_HOME) and are linked here; pinned to a commit (the
# config's hub_lock file when set), checked against the hub's sha256. A cut download resumes: see docs/hub.md.
rule download_gguf:
    output:
        manifest=quant_manifest("hub"),
    log:
        "logs/models/{model}/download_{quant}.log",
    benchmark:
        "benchmarks/models/{model}/download_{quant}.tsv"
    # a transfer that failed mid-file left a .partial: another attempt asks only for the rest
    retries: 2
    conda:
        "../envs/python.yaml"
    resources:
        downloads=1,
    params:
        origin=quant_origin,
    script:
        "../scripts/download_gguf.py"


rule local_gguf:
    output:
        manifest=quant_manifest("local"),
    log:
        "logs/models/{model}/local_{quant}.log",
    conda:
        "../envs/python.yaml"
    params:
        origin=quant_origin,
    script:
        "../scripts/local_gguf.py"
