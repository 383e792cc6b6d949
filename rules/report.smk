# Every result JSON -> tidy Parquet tables (with provenance columns) -> figures -> reports/summary.html.


rule aggregate:
    input:
        perplexity=get_perplexity_results(),
        kld=get_kld_results(),
        bench=get_bench_results(),
        builds=expand("results/builds/{build}/build.json", build=BUILDS),
    output:
        perplexity="results/tables/perplexity.parquet",
        kld="results/tables/kld.parquet",
        bench="results/tables/bench.parquet",
        builds="results/tables/builds.parquet",
    log:
        "logs/report/aggregate.log",
    conda:
        "../envs/python.yaml"
    script:
        "../scripts/aggregate.py"


rule figures:
    input:
        perplexity=rules.aggregate.output.perplexity,
        kld=rules.aggregate.output.kld,
        bench=rules.aggregate.output.bench,
    output:
        kld_vs_size=report("reports/figures/kld_vs_size.png", caption="../docs/report/kld_vs_size.rst",
                           category="Quality"),
        ppl_by_kv=report("reports/figures/ppl_by_kv.png", caption="../docs/report/ppl_by_kv.rst",
                         category="Quality"),
        speed=report("reports/figures/speed.png", caption="../docs/report/speed.rst", category="Speed"),
    log:
        "logs/report/figures.log",
    conda:
        "../envs/python.yaml"
    script:
        "../scripts/figures.py"


rule summary_report:
    input:
        tables=rules.aggregate.output,
        figures=rules.figures.output,
    output:
        html="reports/summary.html",
    params:
        title=config.get("report", {}).get("title", "ggufbench report"),
        config=config,
    log:
        "logs/report/summary.log",
    conda:
        "../envs/python.yaml"
    script:
        "../scripts/summary_report.py"
