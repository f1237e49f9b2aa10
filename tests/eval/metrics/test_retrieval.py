"""Retrieval conventions on embeddings with repeated captions and exact ties: the default
(``topk``) equals CLIP_benchmark's own ``zeroshot_retrieval.evaluate`` number for number;
``pessimistic`` / ``optimistic`` and identical-caption matching equal brute-force counts."""

from __future__ import annotations

import pytest
import torch
from clip_benchmark.datasets.builder import image_captions_collate_fn
from clip_benchmark.metrics import zeroshot_retrieval
from torch.utils.data import DataLoader

from vlexp.eval.metrics.retrieval import retrieval_recall

KS = (1, 2, 5, 10)
DIM = 12


def _exact_vectors(n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` unit vectors with four entries of +-1/2 (the rest 0): every dot product is a
    multiple of 1/4, exact in float32 whatever the summation order, so ties are exact."""
    out = torch.zeros(n, DIM)
    for i in range(n):
        idx = torch.randperm(DIM, generator=gen)[:4]
        out[i, idx] = (torch.randint(0, 2, (4,), generator=gen).float() * 2 - 1) / 2
    return out


def _tied_set(seed: int, n_images: int = 30, per_image: int = 2, n_texts: int = 14):
    """Images whose captions come from a small pool of texts (so texts repeat across
    images), a text's embedding fixed by its text, and a few duplicated images."""
    gen = torch.Generator().manual_seed(seed)
    pool = [f"caption {t}" for t in range(n_texts)]
    pool_emb = _exact_vectors(n_texts, gen)
    image_emb = _exact_vectors(n_images, gen)
    image_emb[n_images // 2 :: 5] = image_emb[: len(image_emb[n_images // 2 :: 5])]  # twins
    texts = [[pool[int(t)] for t in torch.randint(0, n_texts, (per_image,), generator=gen)]
             for _ in range(n_images)]  # fmt: skip
    captions = [c for caps in texts for c in caps]
    caption_image = torch.tensor([i for i, caps in enumerate(texts) for _ in caps])
    text_emb = torch.stack([pool_emb[pool.index(c)] for c in captions])
    return image_emb, text_emb, captions, caption_image, texts, pool, pool_emb


class _Precomputed(torch.nn.Module):
    """A "model" for CLIP_benchmark whose images are indices and whose texts are pool ids."""

    def __init__(self, image_emb: torch.Tensor, pool_emb: torch.Tensor) -> None:
        super().__init__()
        self.image_emb, self.pool_emb = image_emb, pool_emb

    def encode_image(self, idx: torch.Tensor) -> torch.Tensor:
        return self.image_emb[idx]

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.pool_emb[ids]


def _clip_benchmark(image_emb, pool_emb, texts, pool, batch_size: int) -> dict[str, float]:
    data = [(i, caps) for i, caps in enumerate(texts)]
    loader = DataLoader(data, batch_size=batch_size, collate_fn=image_captions_collate_fn)
    return zeroshot_retrieval.evaluate(
        _Precomputed(image_emb, pool_emb),
        loader,
        lambda caps: torch.tensor([pool.index(c) for c in caps]),
        device="cpu",
        amp=False,
        recall_k_list=list(KS),
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_equals_clip_benchmark_with_repeated_captions(seed):
    image_emb, text_emb, captions, cap_img, texts, pool, pool_emb = _tied_set(seed)
    assert len(set(captions)) < len(captions)  # texts repeat across images
    sim = image_emb @ text_emb.T
    top = sim.max(1, keepdim=True).values
    assert ((sim == top).sum(1) > 1).float().mean() > 0.3  # exact ties at the top are common
    cb = _clip_benchmark(image_emb, pool_emb, texts, pool, batch_size=7)
    for chunk in (4, 1024):
        ours = retrieval_recall(image_emb, text_emb, cap_img, KS, chunk_size=chunk)
        for k in KS:
            assert ours[f"i2t_R@{k}"] == cb[f"text_retrieval_recall@{k}"], (chunk, k)
            assert ours[f"t2i_R@{k}"] == cb[f"image_retrieval_recall@{k}"], (chunk, k)
    for rule in ("pessimistic", "optimistic"):  # the tie rule matters on this set
        other = retrieval_recall(image_emb, text_emb, cap_img, KS, ties=rule)
        assert any(other[m] != ours[m] for m in ours), rule


def _brute_force(sim: list[list[float]], positive: list[list[bool]], k: int, rule: str) -> float:
    """Share of queries with a positive among their top k, by counting in Python: a wrong
    candidate above the best positive (for ``pessimistic`` also one tied with it)."""
    hits = 0
    for row, pos in zip(sim, positive):
        if not any(pos):
            continue
        best = max(s for s, p in zip(row, pos) if p)
        tied = rule == "pessimistic"
        above = sum(1 for s, p in zip(row, pos) if not p and (s > best or (tied and s == best)))
        hits += above < k
    return hits / len(sim)


@pytest.mark.parametrize("identical", [False, True])
@pytest.mark.parametrize("rule", ["pessimistic", "optimistic"])
def test_bounding_rules_and_identical_captions_match_brute_force(rule, identical):
    image_emb, text_emb, captions, cap_img, texts, _, _ = _tied_set(3)
    n_img, n_txt = len(texts), len(captions)
    image_texts = [set(caps) for caps in texts]
    if identical:  # caption j is ground truth of every image that has a caption with its text
        pos = [[captions[j] in image_texts[i] for j in range(n_txt)] for i in range(n_img)]
    else:
        pos = [[int(cap_img[j]) == i for j in range(n_txt)] for i in range(n_img)]
    pos_t2i = [[pos[i][j] for i in range(n_img)] for j in range(n_txt)]
    sim = (image_emb @ text_emb.T).tolist()
    sim_t2i = (text_emb @ image_emb.T).tolist()
    ours = retrieval_recall(
        image_emb, text_emb, cap_img, KS, chunk_size=8, ties=rule,
        captions=captions if identical else None,
    )  # fmt: skip
    for k in KS:
        assert ours[f"i2t_R@{k}"] == pytest.approx(_brute_force(sim, pos, k, rule), abs=1e-7)
        assert ours[f"t2i_R@{k}"] == pytest.approx(
            _brute_force(sim_t2i, pos_t2i, k, rule), abs=1e-7
        )


def test_identical_captions_with_topk_equal_clip_benchmark_recall_on_that_truth():
    """``topk`` + identical captions = CLIP_benchmark's own recall_at_k on the positive
    matrix of "same text" built by hand."""
    image_emb, text_emb, captions, cap_img, texts, _, _ = _tied_set(4)
    positive = torch.tensor(
        [[captions[j] in set(caps) for caps in texts] for j in range(len(captions))]
    )  # (texts, images), as CLIP_benchmark lays it out
    scores = text_emb @ image_emb.T
    ours = retrieval_recall(image_emb, text_emb, cap_img, KS, chunk_size=5, captions=captions)
    for k in KS:
        t2i = zeroshot_retrieval.recall_at_k(scores, positive, k) > 0
        i2t = zeroshot_retrieval.recall_at_k(scores.T, positive.T, k) > 0
        assert ours[f"t2i_R@{k}"] == t2i.float().mean().item()
        assert ours[f"i2t_R@{k}"] == i2t.float().mean().item()


def test_a_shared_caption_never_scores_only_under_the_pessimistic_rule():
    """A perfect model on images that share their caption text in pairs: each image's
    caption ties with its twin's. Pessimistic gives R@1 = 0; identical-caption matching
    counts both, so every rule gives 1."""
    gen = torch.Generator().manual_seed(0)
    unique = _exact_vectors(10, gen)
    while len({tuple(v.tolist()) for v in unique}) < 10:
        unique = _exact_vectors(10, gen)
    image_emb = unique.repeat_interleave(2, 0)  # images 2t and 2t+1 look alike...
    text_emb = image_emb.clone()  # ...and carry the same caption text
    captions = [f"text {i // 2}" for i in range(20)]
    cap_img = torch.arange(20)
    pess = retrieval_recall(image_emb, text_emb, cap_img, (1, 2), ties="pessimistic")
    opt = retrieval_recall(image_emb, text_emb, cap_img, (1, 2), ties="optimistic")
    assert pess["i2t_R@1"] == pess["t2i_R@1"] == 0.0 and pess["i2t_R@2"] == 1.0
    assert opt["i2t_R@1"] == opt["t2i_R@1"] == 1.0
    for rule in ("topk", "pessimistic", "optimistic"):
        same = retrieval_recall(image_emb, text_emb, cap_img, (1,), ties=rule, captions=captions)
        assert same == {"i2t_R@1": 1.0, "t2i_R@1": 1.0}, rule


def test_unknown_tie_rule_is_refused():
    with pytest.raises(ValueError, match="ties='random'.*topk"):
        retrieval_recall(torch.eye(2), torch.eye(2), torch.arange(2), ties="random")


def test_k_beyond_the_candidates_counts_them_all():
    for rule in ("topk", "pessimistic", "optimistic"):
        r = retrieval_recall(
            torch.eye(3), torch.eye(3).flip(0), torch.arange(3), (1, 10), ties=rule
        )
        assert r["i2t_R@1"] == r["t2i_R@1"] == pytest.approx(1 / 3)  # the middle one hits
        assert r["i2t_R@10"] == r["t2i_R@10"] == 1.0


def test_the_module_scores_eval_sets_with_the_configured_convention():
    """``VLModule.evaluate_set`` passes ``eval.retrieval_ties`` and
    ``eval.retrieval_identical_captions`` through (captions tied in pairs, as above)."""
    import numpy as np

    from tests.conftest import tiny_encoder
    from vlexp.data.eval_set import EvalSet
    from vlexp.encoders import ENCODERS
    from vlexp.objectives.base import Objective
    from vlexp.train.module import VLModule, eval_options

    gen = torch.Generator().manual_seed(1)
    unique = _exact_vectors(6, gen)
    while len({tuple(v.tolist()) for v in unique}) < 6:
        unique = _exact_vectors(6, gen)
    image_emb = unique.repeat_interleave(2, 0)
    captions = [f"text {i // 2}" for i in range(12)]
    eval_set = EvalSet("pairs", list(range(12)), captions, np.arange(12))
    model = ENCODERS.build(tiny_encoder(embed_dim=DIM))
    got = {}
    for ties, identical in (("pessimistic", False), ("optimistic", False), ("topk", True)):
        options = {"ks": [1], "chunk_size": 5, "retrieval_ties": ties,
                   "retrieval_identical_captions": identical}  # fmt: skip
        module = VLModule(model, Objective(), **eval_options(options))
        module.encode_captions = lambda caps: image_emb[[int(c.split()[1]) * 2 for c in caps]]
        got[ties] = module.evaluate_set(eval_set, image_emb, torch.full((12,), -1))
    assert got["pessimistic"] == {"i2t_R@1": 0.0, "t2i_R@1": 0.0}
    assert got["optimistic"] == got["topk"] == {"i2t_R@1": 1.0, "t2i_R@1": 1.0}
