"""Evaluation metrics: retrieval recall, zero-shot accuracy, fine-grained accuracy."""
