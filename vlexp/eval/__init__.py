"""Evaluation: retrieval, zero-shot classification, few-shot probes."""
