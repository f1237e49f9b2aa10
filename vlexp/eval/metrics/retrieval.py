"""Zero-shot image-text retrieval recall@K, computed in chunks.

Supports several captions per image: ``caption_image[j]`` is the image of caption j.
Image->text: an image is a hit at K if *any* of its captions ranks in the top K.
Text->image: a caption is a hit at K if its image ranks in the top K. Only one chunk
of the similarity matrix (``chunk_size`` rows) is in memory at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


@torch.no_grad()
def retrieval_recall(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    caption_image: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Recall@K in both directions for L2-normalised embeddings.

    Returns ``{"i2t_R@K": ..., "t2i_R@K": ...}`` as fractions in [0, 1]. Ties are broken
    pessimistically (a tied wrong item ranks above the right one).
    """
    n_img, n_txt = image_emb.shape[0], text_emb.shape[0]
    caption_image = caption_image.long().to(image_emb.device)
    if caption_image.shape != (n_txt,):
        raise ValueError("caption_image must hold one image index per caption")
    out: dict[str, float] = {}
    # text -> image: rank of the true image among all images
    t2i_rank = torch.empty(n_txt, dtype=torch.long)
    for s in range(0, n_txt, chunk_size):
        sim = text_emb[s : s + chunk_size] @ image_emb.T  # (c, n_img)
        true = sim.gather(1, caption_image[s : s + chunk_size, None])
        t2i_rank[s : s + chunk_size] = (sim >= true).sum(1).cpu() - 1
    # image -> text: best rank among the image's captions
    i2t_rank = torch.full((n_img,), n_txt, dtype=torch.long)
    for s in range(0, n_img, chunk_size):
        sim = image_emb[s : s + chunk_size] @ text_emb.T  # (c, n_txt)
        rows = torch.arange(s, min(s + chunk_size, n_img), device=sim.device)
        own = caption_image[None, :] == rows[:, None]  # (c, n_txt)
        best_true = sim.masked_fill(~own, float("-inf")).max(1).values
        wrong_above = ((sim >= best_true[:, None]) & ~own).sum(1)
        i2t_rank[s : s + chunk_size] = wrong_above.cpu()
    for k in ks:
        out[f"i2t_R@{k}"] = (i2t_rank < k).float().mean().item()
        out[f"t2i_R@{k}"] = (t2i_rank < k).float().mean().item()
    return out


def retrieval_chance(
    n_images: int, n_captions: int, captions_per_image: float, k: int
) -> dict[str, float]:
    """Expected recall@K of random rankings (the chance level shown next to results)."""
    i2t = 1.0 - _prob_none_in_top_k(n_captions, captions_per_image, k)
    t2i = min(1.0, k / n_images)
    return {f"i2t_R@{k}": i2t, f"t2i_R@{k}": t2i}


def _prob_none_in_top_k(n: int, m: float, k: int) -> float:
    """P(no relevant item in the top k of a random order of n items, m relevant)."""
    m = int(round(m))
    p = 1.0
    for i in range(min(k, n)):
        p *= max(0.0, (n - m - i) / (n - i))
    return p
