"""`python -m ggufbench.synth`: the synthetic MoE writer's command line (sources/synthetic_moe.py)."""

from .sources.synthetic_moe import main

if __name__ == "__main__":
    raise SystemExit(main())
