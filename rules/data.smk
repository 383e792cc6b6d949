# Evaluation corpora: made at run time (python_docs), from a Hub dataset (WikiText-2), or a local file.


rule make_corpus:
    output:
        text="results/data/{corpus}/corpus.txt",
        record="results/data/{corpus}/corpus.json",
    params:
        spec=corpus_spec,
    log:
        "logs/data/{corpus}.log",
    conda:
        "../envs/python.yaml"
    script:
        "../scripts/make_corpus.py"
