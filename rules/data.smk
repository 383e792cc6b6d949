# Evaluation corpora: made at run time (python_docs), from a Hub dataset (WikiText-2), or a local file.


rule make_corpus:
    output:
        text=paths.CORPUS,
        record=paths.CORPUS_RECORD,
    log:
        "logs/data/{corpus}.log",
    conda:
        "../envs/python.yaml"
    params:
        spec=corpus_spec,
    script:
        "../scripts/make_corpus.py"
