"""kvplan: where each KV cache lives and which GPUs to rent, at least monthly cost under TTFT/TPOT SLOs."""

__version__ = "0.1.0"
