# Does the quant change the answers? A task set is made once per name (tasks.sets: a local or Hub .bin, or a cloze
# set made from a corpus), then every build x model x quant x KV type answers it in one llama-perplexity
# --multiple-choice pass, and the baseline cell answers it again with other batch sizes: the noise floor under any
# quant's flips (src/ggufbench/measure/tasks.py, report/flips.py).


rule make_task_set:
    input:
        unpack(task_set_inputs),
    output:
        tasks=paths.TASK_SET,
        record=paths.TASK_SET_RECORD,
    log:
        "logs/tasks/sets/{taskset}.log",
    conda:
        "../envs/python.yaml"
    params:
        spec=task_set_spec,
    script:
        "../scripts/task_set.py"


rule task_score:
    input:
        unpack(task_score_inputs),
    output:
        record=paths.TASKS,
    log:
        "logs/tasks/{build}/{model}/{taskset}/{quant}_kv-{kv}.log",
    benchmark:
        "benchmarks/tasks/{build}/{model}/{taskset}/{quant}_kv-{kv}.tsv"
    conda:
        "../envs/python.yaml"
    threads: 8
    resources:
        gpu=get_gpu,
    params:
        scoring=task_scoring,
        run=get_run,
        gpu=get_gpu_settings,
    script:
        "../scripts/task_score.py"


rule task_noise_floor:
    input:
        unpack(task_score_inputs),
    output:
        record=paths.TASKS_NOISE_FLOOR,
    log:
        "logs/tasks/{build}/{model}/{taskset}/noise-floor/{quant}_kv-{kv}.log",
    benchmark:
        "benchmarks/tasks/{build}/{model}/{taskset}/noise-floor/{quant}_kv-{kv}.tsv"
    conda:
        "../envs/python.yaml"
    threads: 8
    resources:
        gpu=get_gpu,
    params:
        scoring=task_scoring,
        variant=task_noise_floor,
        run=get_run,
        gpu=get_gpu_settings,
    script:
        "../scripts/task_score.py"
