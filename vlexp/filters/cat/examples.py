"""Example captions with their complexity graph and CAT caption decisions.

``python -m vlexp.filters.cat.examples [--min-complexity N] [CAPTION ...]`` prints a
Markdown table (the one in docs/FILTER_PASS.md) of the given captions, or of
:data:`EXAMPLE_CAPTIONS`: each caption's object/attribute/relation graph
(:mod:`vlexp.filters.cat.complexity`), its complexity, and what the CAT filter's caption
criteria decide (complexity, then action). Text-spotting needs the images and is not
shown. Needs spaCy and its English model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from vlexp.filters.cat.boilerplate import is_boilerplate
from vlexp.filters.cat.complexity import CaptionGraph, caption_graph

EXAMPLE_CAPTIONS: tuple[str, ...] = (
    "cat",
    "a dog",
    "a photo of a cat",
    "a close-up of a hamburger",
    "a black and white photo of a dog",
    "a brown dog",
    "a group of people",
    "a dog running",
    "a dog on a beach",
    "a cup of coffee",
    "a photo of a cat on a sofa",
    "a man riding a horse",
    "a herd of cattle grazing in a field",
    "a dog chasing a ball on the beach",
    "a small brown dog on a red couch",
    "two people sitting at a table with food",
    "stock photo: a young businessman talking on the phone",
    "a red car parked on the street",
    "Sale! 50% off all summer dresses",
    "Free shipping on orders over $50",
    "a garage sale on a sunny street",
)
"""Captions of the table in the docs (``python -m vlexp.filters.cat.examples``)."""


def describe_graph(g: CaptionGraph) -> str:
    """The graph as text: each relation with its objects, each attribute with its object."""
    names = [text for _, text in g.nodes]
    links: dict[int, list[int]] = {}
    for i, j in g.edges:
        links.setdefault(i, []).append(j)
        links.setdefault(j, []).append(i)
    parts = []
    for i, (kind, text) in enumerate(g.nodes):
        ends = [names[j] for j in links.get(i, [])]
        if kind == "relation":
            parts.append(f"{text}({', '.join(ends)})")
        elif kind == "attribute":
            parts.append(f"{ends[0] if ends else '?'}:{text}")
        elif not links.get(i):
            parts.append(text)  # an object with no attribute or relation
    return "; ".join(parts) or "(no object)"


def markdown_table(captions: Iterable[str], min_complexity: int = 2) -> str:
    """Markdown table of ``captions``: graph, complexity, and the CAT caption criteria's
    decisions (complexity >= ``min_complexity``, then action); needs spaCy."""
    from vlexp.filters.cat.filter import CATFilter

    captions = list(captions)
    flt = CATFilter(min_complexity=min_complexity, text_spotting=False)
    docs = flt.parse(captions)
    assessed = flt.assess(captions)
    rows = [
        f"| caption | graph | complexity | complexity >= {min_complexity} | action | CAT (captions) |",
        "|---|---|---:|---|---|---|",
    ]
    for i, (caption, doc) in enumerate(zip(captions, docs)):
        c = int(assessed.complexity[i])
        reason = assessed.reasons[i]
        graph = describe_graph(caption_graph(doc))
        if flt.shop_boilerplate and is_boilerplate(caption):
            graph = f"shop boilerplate (parsed: {graph})"
        rows.append(
            f"| {caption} | {graph} | {c} | "
            f"{'keep' if c >= min_complexity else 'drop'} | "
            f"{'yes' if assessed.action[i] else 'no'} | "
            f"{'keep' if reason is None else 'drop (' + reason + ')'} |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m vlexp.filters.cat.examples [--min-complexity N] [CAPTION ...]``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m vlexp.filters.cat.examples",
        description="Print the complexity graph and CAT caption decisions of captions.",
    )
    parser.add_argument("captions", nargs="*", help="default: the documented examples")
    parser.add_argument("--min-complexity", type=int, default=2, help="CAT threshold (2)")
    args = parser.parse_args(argv)
    print(markdown_table(args.captions or EXAMPLE_CAPTIONS, args.min_complexity))


if __name__ == "__main__":
    main()
