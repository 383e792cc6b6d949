# Evaluation corpora: made at run time (python_docs), from a Hub dataset (WikiText-2), or a local file.


rule make_corpus:
    output:
        text=paths.CORPUS,
        record=paths.CORPUS_RECORD,
    params:
        spec=corpus_spec,
    log:
        "logs/data/{corpus}.log",
    conda:
        "../envs/python.yaml"
    script:
        "../scripts/make_corpus.py"
