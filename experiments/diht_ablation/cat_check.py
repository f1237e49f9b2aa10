"""What the CAT filter keeps on the ablation's synthetic training data, per threshold choice.

    python experiments/diht_ablation/cat_check.py [--num-train 2000] [--md FILE]

Builds the ablation's training split (the ``noisy`` condition, ``ablation.NOISY``, seed 0),
measures each CAT criterion once for every pair (caption complexity and action with
spaCy, caption/OCR overlap with Tesseract on every image), then applies several
threshold settings and reports, for each, the share of pairs kept overall and within
the generator's own groups: bare-noun captions (``low_complexity``), images showing
their caption as text (``text_in_image``, bare-noun ones excluded) and the rest
(``clean``). A good setting drops the first two groups and keeps the clean pairs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from experiments.diht_ablation.ablation import CAT_CRITERIA, NOISY  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CAT = CAT_CRITERIA["cat"]

# (complexity on, min_complexity, action on, max_text_overlap); text-spotting always on
SETTINGS: tuple[tuple[bool, int, bool, float], ...] = (
    (True, 2, True, 0.5),  # the vlexp defaults (conf/filter/cat.yaml)
    (True, 2, False, 0.5),
    (True, 1, True, 0.5),
    (True, 1, False, 0.5),
    (True, 1, False, 0.3),
    (True, 1, False, 0.2),
)


def ablation_setting() -> tuple[bool, int, bool, float]:
    """The setting of the ``+CAT`` row (unset options take conf/filter/cat.yaml's values)."""
    opts = yaml.safe_load((REPO / "conf" / "filter" / "cat.yaml").read_text())
    for item in CAT:
        key, _, value = item.partition("=")
        if key.startswith("filter."):
            opts[key[len("filter.") :]] = yaml.safe_load(value)
    return (
        bool(opts["complexity"]),
        int(opts["min_complexity"]),
        bool(opts["action"]),
        float(opts["max_text_overlap"]),
    )


def describe(setting: tuple[bool, int, bool, float]) -> str:
    """A setting in words, marked where it is the vlexp default or the ablation's."""
    comp, min_c, act, max_ov = setting
    text = (
        (f"complexity>={min_c}" if comp else "no complexity")
        + (", action" if act else ", no action")
        + f", overlap<{max_ov:g}"
    )
    tags = [
        t
        for t, s in (("vlexp default", SETTINGS[0]), ("**ablation**", ablation_setting()))
        if s == setting
    ]
    return text + (f" ({', '.join(tags)})" if tags else "")


def knobs() -> dict[str, float]:
    """The generator knobs of the ablation, as keyword arguments."""
    out = {}
    for item in NOISY:
        key, value = item.split("=", 1)
        out[key.rsplit(".", 1)[1]] = float(value)
    return out


def measure(num_train: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-pair complexity, action, OCR overlap and generator flags of the train split."""
    from vlexp.data.synthetic.dataset import SyntheticPairs
    from vlexp.filters.cat.filter import CATFilter

    src = SyntheticPairs("train", num_train, seed=seed, **knobs())
    captions = src.captions
    t0 = time.time()
    text = CATFilter(complexity=True, action=True, text_spotting=False).assess(captions)
    t1 = time.time()
    images = [src.render(i) for i in range(len(src))]
    ocr = CATFilter(complexity=False, action=False, text_spotting=True).assess(captions, images)
    t2 = time.time()
    print(
        f"parsed {len(captions)} captions in {t1 - t0:.1f}s, OCR'd {len(images)} images in "
        f"{t2 - t1:.1f}s ({len(images) / (t2 - t1):.1f} images/s)",
        file=sys.stderr,
    )
    low = np.asarray(src.low_complexity)
    tii = np.asarray(src.text_in_image) & ~low
    return {
        "complexity": text.complexity,
        "action": text.action,
        "overlap": ocr.overlap,
        "low_complexity": low,
        "text_in_image": tii,
        "clean": ~low & ~tii,
        "kind": np.asarray(src.caption_kinds),
    }


def table(m: dict[str, np.ndarray]) -> str:
    """Markdown table: kept share overall and per group for each setting."""
    n = len(m["complexity"])
    groups = ("low_complexity", "text_in_image", "clean")
    head = (
        "| setting | kept (of "
        + str(n)
        + ") | "
        + " | ".join(f"kept of {g} ({int(m[g].sum())})" for g in groups)
        + " |"
    )
    lines = [head, "|---|---:|" + "---:|" * len(groups)]
    settings = list(SETTINGS)
    if ablation_setting() not in settings:
        settings.append(ablation_setting())
    for setting in settings:
        comp_on, min_c, act_on, max_ov = setting
        keep = np.ones(n, dtype=bool)
        if comp_on:
            keep &= m["complexity"] >= min_c
        if act_on:
            keep &= m["action"]
        keep &= ~(m["overlap"] >= max_ov)
        cells = [f"{keep.sum()} ({100 * keep.mean():.0f}%)"]
        cells += [f"{100 * keep[m[g]].mean():.0f}%" for g in groups]
        lines.append(f"| {describe(setting)} | " + " | ".join(cells) + " |")
    kinds = sorted(set(m["kind"].tolist()))
    lines += ["", "Caption kinds of the clean pairs and the share with an action verb (spaCy):", ""]
    lines += ["| caption kind | clean pairs | with action | complexity >= 1 | complexity >= 2 |"]
    lines += ["|---|---:|---:|---:|---:|"]
    for k in kinds:
        sel = m["clean"] & (m["kind"] == k)
        if sel.any():
            lines.append(
                f"| {k} | {int(sel.sum())} | {100 * m['action'][sel].mean():.0f}% | "
                f"{100 * (m['complexity'][sel] >= 1).mean():.0f}% | "
                f"{100 * (m['complexity'][sel] >= 2).mean():.0f}% |"
            )
    tii = m["text_in_image"]
    lines += [
        "",
        f"OCR overlap on `text_in_image` pairs: median {np.median(m['overlap'][tii]):.2f}, "
        f"share with overlap 0 (text not read) {100 * (m['overlap'][tii] == 0).mean():.0f}%; "
        f"on images without text: max {np.nanmax(m['overlap'][~tii & ~m['low_complexity']]):.2f}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--md", default=None, help="write the tables to this Markdown file")
    args = parser.parse_args(argv)
    text = (
        f"CAT on the ablation's training split ({args.num_train} pairs, seed 0, knobs "
        f"{', '.join(NOISY)}); command: `python experiments/diht_ablation/cat_check.py "
        f"--num-train {args.num_train}`\n\n" + table(measure(args.num_train))
    )
    print(text)
    if args.md:
        Path(args.md).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
