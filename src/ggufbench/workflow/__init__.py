"""The seam between Snakemake and the package: what each job depends on (deps) and the Job a rule script makes
(job). The top layer: it may import every other layer, and nothing imports it but the rules and scripts."""
