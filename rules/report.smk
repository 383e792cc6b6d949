# Every result JSON -> tidy Parquet tables (with provenance columns) -> figures -> reports/summary.html.


rule aggregate:
    input:
        perplexity=get_perplexity_results(),
        kld=get_kld_results(),
        bench=get_bench_results(),
        tune=get_tune_results(),
        tasks=get_task_results() + get_task_noise_floor_results(),
        kv_cost=get_kv_cost_results(),
        builds=expand(paths.BUILD_RECORD, build=BUILDS),
        # what each record must have measured: the build, the quant's file and the corpus that are there now
        manifests=DEPS.manifests(),
        corpora=DEPS.corpus_records(),
    output:
        perplexity=paths.table("perplexity"),
        kld=paths.table("kld"),
        bench=paths.table("bench"),
        tune=paths.table("tune"),
        builds=paths.table("builds"),
        chunks=paths.table("chunks"),
        tasks=paths.table("tasks"),
        task_questions=paths.table("task_questions"),
        kv_cost=paths.table("kv_cost"),
        kv_cost_positions=paths.table("kv_cost_positions"),
    log:
        "logs/report/aggregate.log",
    conda:
        "../envs/python.yaml"
    params:
        # how llama-bench's repetitions are summarised: changing it re-aggregates, measures nothing anew
        bench_summary=DEPS.bench_summary(),
        # each model's baseline cell of the task passes: the flips are counted against it
        task_baselines=DEPS.task_baselines(),
        code=DEPS.code("aggregate"),  # the tables are made again when the code that makes them changes
    script:
        "../scripts/aggregate.py"


rule figures:
    input:
        perplexity=rules.aggregate.output.perplexity,
        kld=rules.aggregate.output.kld,
        bench=rules.aggregate.output.bench,
        tasks=rules.aggregate.output.tasks,
        kv_cost_positions=rules.aggregate.output.kv_cost_positions,
    output:
        # one question each (src/ggufbench/report/figures.py FIGURES); the keys are the figure names the script makes
        kld_vs_size=report(
            "reports/figures/kld_vs_size.png",
            caption="../docs/report/kld_vs_size.rst",
            category="Quality",
            labels={"figure": "KLD vs size"},
        ),
        ppl_vs_size=report(
            "reports/figures/ppl_vs_size.png",
            caption="../docs/report/ppl_vs_size.rst",
            category="Quality",
            labels={"figure": "PPL vs size"},
        ),
        kv_heatmap=report(
            "reports/figures/kv_heatmap.png",
            caption="../docs/report/kv_heatmap.rst",
            category="Quality",
            labels={"figure": "KV type x context"},
        ),
        flips_vs_kld=report(
            "reports/figures/flips_vs_kld.png",
            caption="../docs/report/flips_vs_kld.rst",
            category="Quality",
            labels={"figure": "flips vs KLD"},
        ),
        kld_percentiles=report(
            "reports/figures/kld_percentiles.png",
            caption="../docs/report/kld_percentiles.rst",
            category="Quality",
            labels={"figure": "KLD percentiles"},
        ),
        speed=report(
            "reports/figures/speed.png",
            caption="../docs/report/speed.rst",
            category="Speed",
            labels={"figure": "t/s per quant"},
        ),
        speed_vs_vram=report(
            "reports/figures/speed_vs_vram.png",
            caption="../docs/report/speed_vs_vram.rst",
            category="Speed",
            labels={"figure": "t/s vs VRAM"},
        ),
        kv_cost_by_position=report(
            "reports/figures/kv_cost_by_position.png",
            caption="../docs/report/kv_cost_by_position.rst",
            category="Quality",
            labels={"figure": "KV cost by position"},
        ),
        threads=report(
            "reports/figures/threads.png",
            caption="../docs/report/threads.rst",
            category="Speed",
            labels={"figure": "threads"},
        ),
    log:
        "logs/report/figures.log",
    conda:
        "../envs/python.yaml"
    params:
        code=DEPS.code("figures"),
    script:
        "../scripts/figures.py"


rule summary_report:
    input:
        tables=[*rules.aggregate.output, paths.table("server")],
        figures=rules.figures.output,
    output:
        html="reports/summary.html",
    log:
        "logs/report/summary.log",
    conda:
        "../envs/python.yaml"
    params:
        title=config.get("report", {}).get("title", "ggufbench report"),
        config=config,
        code=DEPS.code("summary_report"),
    script:
        "../scripts/summary_report.py"
