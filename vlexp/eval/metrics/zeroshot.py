"""Zero-shot classification: class embeddings from prompt templates, top-1/top-5 accuracy."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vlexp.encoders.base import TwoTower


@torch.no_grad()
def class_embeddings(
    model: TwoTower, class_names: Sequence[str], templates: Sequence[str], device: torch.device
) -> torch.Tensor:
    """One L2-normalised embedding per class: the mean of its prompt embeddings (C, D)."""
    if not templates:
        raise ValueError("zero-shot evaluation needs at least one prompt template, e.g. 'a {}'")
    rows = []
    for name in class_names:
        tok = model.tokenize([t.format(name) for t in templates])
        emb = model.encode_text(tok["input_ids"].to(device), tok["attention_mask"].to(device))
        rows.append(F.normalize(emb.mean(0), dim=-1))
    return torch.stack(rows)


@torch.no_grad()
def zeroshot_accuracy(
    image_emb: torch.Tensor,
    labels: torch.Tensor,
    class_emb: torch.Tensor,
    ks: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Top-K accuracy of argmax similarity between images and class embeddings."""
    valid = labels >= 0
    logits = image_emb[valid] @ class_emb.T
    labels = labels[valid].to(logits.device)
    out = {}
    for k in ks:
        if k > class_emb.shape[0]:
            continue
        topk = logits.topk(k, dim=1).indices
        out[f"top{k}"] = (topk == labels[:, None]).any(1).float().mean().item()
    return out
