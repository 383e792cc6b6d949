# llama.cpp, built by the workflow from the source each build names (git ref, local tree/tarball, PyPI sdist).


rule build_llama_cpp:
    output:
        # the record alone: the tools beside it (bin/) are no rule's output or input, so a deleted one never puts
        # this job, and so every measurement after it, back in the DAG; the job that runs a tool puts it back
        # (build.ensure_tool)
        record=paths.BUILD_RECORD,
    log:
        "logs/build/{build}.log",
    benchmark:
        "benchmarks/build/{build}.tsv"
    conda:
        "../envs/build.yaml"
    threads: workflow.cores
    resources:
        mem_mb=8000,
    params:
        # the build's whole config: changing any of it reruns this build (and only its results)
        spec=build_spec,
        cache_dir=get_cache_dir(),
    script:
        "../scripts/build_llama_cpp.py"
