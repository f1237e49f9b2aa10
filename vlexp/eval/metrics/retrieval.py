"""Zero-shot image-text retrieval recall@K, computed in chunks.

``caption_image[j]`` is the image of caption j (several captions per image allowed).
Image->text: an image is a hit at K if *any* of its ground-truth captions ranks in the
top K; text->image: a caption is a hit at K if its image does. With ``captions`` given
(``eval.retrieval_identical_captions``), a caption whose text equals one of an image's
captions counts as that image's too, in both directions. ``ties`` decides tied scores
(:data:`TIE_RULES`; docs/CLIP_BENCHMARK.md). Only one chunk of the similarity matrix
(``chunk_size`` rows) is in memory at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vlexp.run_options import RETRIEVAL_TIES

TIE_RULES = RETRIEVAL_TIES
"""``topk``: the top K are ``torch.topk``'s K, as CLIP_benchmark takes them;
``pessimistic``: a wrong candidate tied with the best right one ranks above it;
``optimistic``: below it."""


@torch.no_grad()
def retrieval_recall(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    caption_image: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
    ties: str = "topk",
    captions: Sequence[str] | None = None,
) -> dict[str, float]:
    """Recall@K in both directions (``{"i2t_R@K": ..., "t2i_R@K": ...}``, fractions).

    ``ties`` is one of :data:`TIE_RULES`; ``captions`` (the caption texts), when given,
    makes identical texts interchangeable ground truth. A query with no ground truth is
    a miss; K above the number of candidates counts as all of them.
    """
    if ties not in TIE_RULES:
        raise ValueError(f"ties={ties!r}: expected one of {list(TIE_RULES)}")
    n_img, n_txt = image_emb.shape[0], text_emb.shape[0]
    caption_image = caption_image.long().to(image_emb.device)
    if caption_image.shape != (n_txt,):
        raise ValueError("caption_image must hold one image index per caption")
    truth = _GroundTruth(caption_image, n_img, captions)
    out: dict[str, float] = {}
    hits = {
        d: {k: torch.zeros(n, dtype=torch.bool) for k in ks}
        for d, n in (("t2i", n_txt), ("i2t", n_img))
    }
    for s in range(0, n_txt, chunk_size):
        rows = torch.arange(s, min(s + chunk_size, n_txt), device=image_emb.device)
        sim = text_emb[rows] @ image_emb.T  # (c, n_img)
        for k, hit in _hits(sim, truth.images_of_captions(rows), ks, ties).items():
            hits["t2i"][k][s : s + len(rows)] = hit.cpu()
    for s in range(0, n_img, chunk_size):
        rows = torch.arange(s, min(s + chunk_size, n_img), device=image_emb.device)
        sim = (text_emb @ image_emb[rows].T).T  # (c, n_txt), text-first as CLIP_benchmark
        for k, hit in _hits(sim, truth.captions_of_images(rows), ks, ties).items():
            hits["i2t"][k][s : s + len(rows)] = hit.cpu()
    for k in ks:
        out[f"i2t_R@{k}"] = hits["i2t"][k].float().mean().item()
        out[f"t2i_R@{k}"] = hits["t2i"][k].float().mean().item()
    return out


def _hits(
    sim: torch.Tensor, positive: torch.Tensor, ks: Sequence[int], ties: str
) -> dict[int, torch.Tensor]:
    """Per query row of ``sim``, whether a ``positive`` candidate is in its top K."""
    n = sim.shape[1]
    if n == 0:
        return {k: torch.zeros(sim.shape[0], dtype=torch.bool, device=sim.device) for k in ks}
    if ties == "topk":  # one topk per K: which tied candidates it keeps can depend on K
        return {k: positive.gather(1, sim.topk(min(k, n), dim=1).indices).any(1) for k in ks}
    best = sim.masked_fill(~positive, float("-inf")).max(1, keepdim=True).values
    above = sim >= best if ties == "pessimistic" else sim > best
    wrong_above = (above & ~positive).sum(1)
    has_truth = positive.any(1)
    return {k: has_truth & (wrong_above < k) for k in ks}


class _GroundTruth:
    """Which (image, caption) pairs are ground truth, one chunk of queries at a time.

    By index: caption j belongs to image ``caption_image[j]``. By text (``captions``
    given): caption j belongs to every image that has a caption with j's text.
    """

    def __init__(
        self, caption_image: torch.Tensor, n_img: int, captions: Sequence[str] | None
    ) -> None:
        self.caption_image, self.n_img = caption_image, n_img
        self.text_id: torch.Tensor | None = None
        if captions is not None:
            if len(captions) != len(caption_image):
                raise ValueError("captions must hold one text per caption")
            _, inverse = np.unique(np.asarray(list(captions), dtype=object), return_inverse=True)
            self.text_id = torch.as_tensor(inverse.reshape(-1), device=caption_image.device)

    def captions_of_images(self, rows: torch.Tensor) -> torch.Tensor:
        """``(len(rows), n_captions)``: caption j is ground truth of image ``rows[r]``."""
        own = self.caption_image[None, :] == rows[:, None]
        if self.text_id is None:
            return own
        r, j = own.nonzero(as_tuple=True)
        n_texts = int(self.text_id.max()) + 1 if len(self.text_id) else 0
        texts = torch.zeros(len(rows), n_texts, dtype=torch.bool, device=own.device)
        texts[r, self.text_id[j]] = True  # the texts each image's own captions carry
        return texts[:, self.text_id]

    def images_of_captions(self, rows: torch.Tensor) -> torch.Tensor:
        """``(len(rows), n_images)``: image i is ground truth of caption ``rows[r]``."""
        out = torch.zeros(len(rows), self.n_img, dtype=torch.bool, device=rows.device)
        if self.text_id is None:
            out[torch.arange(len(rows), device=rows.device), self.caption_image[rows]] = True
            return out
        same = self.text_id[rows][:, None] == self.text_id[None, :]  # (c, n_captions)
        r, j = same.nonzero(as_tuple=True)
        out[r, self.caption_image[j]] = True
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
