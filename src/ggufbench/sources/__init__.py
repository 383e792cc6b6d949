"""Where models and texts come from: quant manifests, PyPI wheels, the Hub and its lock, synthetic MoEs, corpora."""
