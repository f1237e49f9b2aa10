"""Fine-grained caption discrimination: the true caption against same-object distractors.

Each image comes with its true caption and ``k`` distractor captions that name the same
objects with one thing changed (an attribute value, two colours swapped, the relation
reversed, subject and object swapped, another verb; see
:func:`vlexp.data.synthetic.captions.counterfactual_captions`). An image counts as
correct when its true caption scores strictly above every one of its distractors
(``finegrained_acc``, chance ``1 / (k + 1)``); ``finegrained_rank`` is the mean rank of
the true caption among the ``k + 1`` candidates (1 = best, chance ``1 + k / 2``). Ties
are broken pessimistically (retrieval's ``pessimistic`` rule): a distractor that scores
exactly as high as the true caption ranks above it.

Distractors are stored flat: ``distractor_emb[m]`` is a distractor of image
``distractor_image[m]``, so images may have different numbers of distractors; images
with none are left out of the averages.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

METRICS: tuple[str, ...] = ("finegrained_acc", "finegrained_rank")


def flatten_distractors(distractors: Sequence[Sequence[str]]) -> tuple[list[str], np.ndarray]:
    """Per-image distractor lists -> (flat captions, image index of each caption)."""
    flat = [c for caps in distractors for c in caps]
    owner = np.repeat(np.arange(len(distractors)), [len(caps) for caps in distractors])
    return flat, owner.astype(np.int64)


@torch.no_grad()
def finegrained_scores(
    image_emb: torch.Tensor,
    true_emb: torch.Tensor,
    distractor_emb: torch.Tensor,
    distractor_image: torch.Tensor | np.ndarray,
) -> dict[str, float]:
    """Accuracy and mean rank of the true caption against its distractors.

    Args:
        image_emb: ``(N, D)`` image embeddings (L2-normalised for cosine scores).
        true_emb: ``(N, D)`` embedding of each image's true caption (row ``i`` for image ``i``).
        distractor_emb: ``(M, D)`` distractor caption embeddings.
        distractor_image: ``(M,)`` image index in ``[0, N)`` of each distractor.

    Returns:
        ``{"finegrained_acc", "finegrained_rank"}`` averaged over the images that have at
        least one distractor (accuracy a fraction in [0, 1]; rank in ``[1, k + 1]``).
    """
    n = image_emb.shape[0]
    if true_emb.shape != image_emb.shape:
        raise ValueError(
            f"true_emb must hold one caption embedding per image: got {tuple(true_emb.shape)} "
            f"for image_emb {tuple(image_emb.shape)}"
        )
    owner = torch.as_tensor(distractor_image, device=image_emb.device).long()
    if owner.ndim != 1 or owner.shape[0] != distractor_emb.shape[0]:
        raise ValueError(
            f"distractor_image must hold one image index per distractor: got shape "
            f"{tuple(owner.shape)} for {distractor_emb.shape[0]} distractors"
        )
    if owner.numel() and (int(owner.min()) < 0 or int(owner.max()) >= n):
        raise ValueError(f"distractor_image indices must lie in [0, {n}), got {owner.tolist()}")
    counts = torch.bincount(owner, minlength=n)
    has = counts > 0
    if not bool(has.any()):
        raise ValueError("no image has a distractor caption: fine-grained accuracy is undefined")
    true_score = (image_emb * true_emb).sum(1)  # (N,)
    dist_score = (image_emb[owner] * distractor_emb.to(image_emb.device)).sum(1)  # (M,)
    beaten = (dist_score >= true_score[owner]).to(image_emb.dtype)
    above = torch.zeros(n, dtype=image_emb.dtype, device=image_emb.device).index_add_(
        0, owner, beaten
    )
    above = above[has]
    return {
        "finegrained_acc": (above == 0).float().mean().item(),
        "finegrained_rank": (1.0 + above).float().mean().item(),
    }


def finegrained_chance(num_distractors: Sequence[int] | np.ndarray) -> dict[str, float]:
    """Expected metrics under random scores, given each image's number of distractors.

    With ``k`` distractors the true caption is first with probability ``1 / (k + 1)`` and
    its expected rank is ``1 + k / 2``; images without distractors are left out.
    """
    k = np.asarray(num_distractors, dtype=np.float64)
    k = k[k > 0]
    if k.size == 0:
        raise ValueError("no image has a distractor caption: fine-grained chance is undefined")
    return {
        "finegrained_acc": float(np.mean(1.0 / (k + 1.0))),
        "finegrained_rank": float(np.mean(1.0 + k / 2.0)),
    }
