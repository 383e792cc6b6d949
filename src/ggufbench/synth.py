"""`python -m ggufbench.synth`: the synthetic MoE writer's command line (sources/synth.py)."""

from .sources.synth import main

if __name__ == "__main__":
    raise SystemExit(main())
