# The command to run, proven: for each VRAM budget (report.target_gpu, report.vram_budgets_gib) and served
# context, the recommendation's llama-server command is started (with the GPU showing only the budget free),
# answered a completion, and stopped; a candidate that does not start gives way to the next.


rule server_check:
    input:
        unpack(server_check_inputs),
    output:
        record=paths.SERVER,
    log:
        "logs/server/{build}/{model}/vram-{budget}GiB_ctx{ctx}.log",
    conda:
        "../envs/python.yaml"
    threads: tool_threads(workflow.cores)
    resources:
        gpu=get_gpu,
    params:
        quants=model_quants,
        config=recommend_config,
        server=SERVER,
        run=get_run,
    script:
        "../scripts/server_check.py"


rule server_table:
    input:
        get_server_results(),
    output:
        server=paths.table("server"),
    log:
        "logs/report/server_table.log",
    conda:
        "../envs/python.yaml"
    params:
        code=DEPS.code("server_table"),
    script:
        "../scripts/server_table.py"
