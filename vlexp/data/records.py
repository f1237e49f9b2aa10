"""Turning raw record fields (image bytes, caption text, tag names) into item fields.

Shared by the CSV, WebDataset and indexed-shard readers: image decoding, caption
cleaning, the class vocabulary (``classes.json``) that maps tag names to class ids, and
:class:`PackedStrings`, a compact string column (one bytes buffer plus offsets) that
keeps millions of captions cheap to hold and to share with DataLoader workers.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
from PIL import Image

from vlexp.data import bad_samples as R
from vlexp.data.bad_samples import BadSampleCounter
from vlexp.data.types import TagTable

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
TAG_SEP = ";"


# --------------------------------------------------------------------- strings
_ENC = "surrogateescape"  # bytes that are not UTF-8 (read that way) survive a round trip


class PackedStrings(Sequence[str]):
    """An immutable sequence of strings stored as one UTF-8 buffer plus int64 offsets."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray) -> None:
        self.data = np.asarray(data, dtype=np.uint8)
        self.offsets = np.asarray(offsets, dtype=np.int64)

    @classmethod
    def from_strings(cls, strings: Iterable[str]) -> PackedStrings:
        encoded = [s.encode("utf-8", _ENC) for s in strings]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {n} strings")
        return self.data[self.offsets[i] : self.offsets[i + 1]].tobytes().decode("utf-8", _ENC)

    def __iter__(self) -> Iterator[str]:
        buf = self.data.tobytes()
        offs = self.offsets.tolist()
        for a, b in zip(offs[:-1], offs[1:]):
            yield buf[a:b].decode("utf-8", _ENC)

    def take(self, indices: np.ndarray) -> PackedStrings:
        """The strings at ``indices`` (a new packed column)."""
        return PackedStrings.from_strings(self[int(i)] for i in indices)


# --------------------------------------------------------------------- images
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
"""Images with more pixels are refused from their header: 40 MP is above any common
camera (8000x5000) and far above web caption data (mostly under 2 MP), and bounds one
decoded image at 120 MB of RGB per loader worker. ``data.max_image_pixels`` sets it."""


class ImageTooLarge(ValueError):
    """An image whose header declares more pixels than the cap; it is never decoded."""


def decode_image(
    data: bytes | str | os.PathLike,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    draft_side: int | None = None,
) -> Image.Image:
    """Decode image bytes (or a file) fully into an RGB PIL image.

    The size is read from the header first: more than ``max_pixels`` raises
    :class:`ImageTooLarge` before any pixel is decoded (as does PIL's own hard limit,
    ``2 * Image.MAX_IMAGE_PIXELS``). A JPEG at least twice ``draft_side`` on both sides
    is decoded reduced by a power of two (PIL's draft mode, done in the DCT), to no less
    than ``draft_side`` per side. Raises ``OSError``/``ValueError``/``SyntaxError`` (PIL's
    errors) for broken data; the pixels are loaded here so that truncated files fail
    now, not later in a transform.
    """
    src = io.BytesIO(data) if isinstance(data, bytes | bytearray | memoryview) else data
    with warnings.catch_warnings():  # the cap below replaces PIL's bomb warning
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(src)
        except Image.DecompressionBombError as e:
            raise ImageTooLarge(str(e)) from None
    with img:
        w, h = img.size
        if max_pixels is not None and w * h > max_pixels:
            raise ImageTooLarge(f"{w}x{h} = {w * h:,} pixels, above the cap of {max_pixels:,}")
        if draft_side and img.format == "JPEG" and min(w, h) >= 2 * draft_side:
            img.draft("RGB", (draft_side, draft_side))
        img.load()
        return img.convert("RGB") if img.mode != "RGB" else img.copy()


@dataclass(frozen=True)
class ImageDecoder:
    """How a reader decodes its images: the pixel cap and the JPEG draft side (see
    :func:`decode_image`); picklable, so loader workers get it with the reader."""

    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
    draft_side: int | None = None

    def __call__(self, data: bytes | str | os.PathLike) -> Image.Image:
        return decode_image(data, self.max_pixels, self.draft_side)


def image_error_reason(error: BaseException) -> str:
    """The bad-sample reason of an image that failed to decode."""
    if isinstance(error, ImageTooLarge):
        return R.TOO_LARGE
    if isinstance(error, FileNotFoundError):
        return R.MISSING_IMAGE
    return R.BROKEN_IMAGE


IMAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
)


def is_valid_utf8(text: str) -> bool:
    """False for text holding undecodable bytes (read with ``errors="surrogateescape"``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def clean_caption(text: Any) -> str | None:
    """A caption with surrounding whitespace removed, or None when empty/missing."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return None
    text = str(text).strip()
    return text or None


# --------------------------------------------------------------------- classes
class ClassVocab:
    """Class names with their ontology parents and a name -> id lookup.

    ``classes.json`` holds ``{"class_names": [...], "parents": [...]}`` (parents are class
    ids, -1 for roots; optional).
    """

    def __init__(self, class_names: Sequence[str], parents: Sequence[int] | None = None) -> None:
        self.class_names = [str(c) for c in class_names]
        par = [-1] * len(self.class_names) if parents is None else [int(p) for p in parents]
        if len(par) != len(self.class_names):
            raise ValueError(
                f"classes: {len(par)} parents for {len(self.class_names)} class names; "
                "give one parent id (or -1) per class"
            )
        self.parents = np.asarray(par, dtype=np.int32)
        self.ids = {name: i for i, name in enumerate(self.class_names)}
        if len(self.ids) != len(self.class_names):
            dup = sorted({c for c in self.class_names if self.class_names.count(c) > 1})
            raise ValueError(f"classes: duplicate class names {dup[:5]}")

    def __len__(self) -> int:
        return len(self.class_names)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ClassVocab:
        """Read ``classes.json`` (a dict as above, or a plain list of names)."""
        blob = json.loads(Path(path).read_text())
        if isinstance(blob, list):
            return cls(blob)
        if "class_names" not in blob:
            raise ValueError(f"{path}: expected a 'class_names' list, found keys {sorted(blob)}")
        return cls(blob["class_names"], blob.get("parents"))

    def save(self, path: str | os.PathLike) -> None:
        """Write ``classes.json``."""
        blob = {"class_names": self.class_names, "parents": self.parents.tolist()}
        Path(path).write_text(json.dumps(blob, indent=1))

    @classmethod
    def resolve(
        cls,
        class_names: Sequence[str] | str | os.PathLike | ClassVocab | None,
        search_dir: Path | None,
    ) -> ClassVocab | None:
        """A vocabulary from a list, a ``classes.json`` path, or ``search_dir/classes.json``."""
        if isinstance(class_names, ClassVocab):
            return class_names
        if isinstance(class_names, str | os.PathLike):
            return cls.load(class_names)
        if class_names is not None:
            return cls(list(class_names))
        if search_dir is not None and (search_dir / "classes.json").is_file():
            return cls.load(search_dir / "classes.json")
        return None

    def tag_ids(
        self,
        tags: Iterable[Any],
        counter: BadSampleCounter | None,
        where: str,
        row: int | None = None,
    ) -> list[int]:
        """Class ids of tag names (ints are taken as ids); unknown ones dropped as notes
        (of ``row`` when given)."""
        out: list[int] = []
        for t in tags:
            if isinstance(t, int | np.integer) and not isinstance(t, bool) and 0 <= t < len(self):
                out.append(int(t))
            elif isinstance(t, str) and t in self.ids:
                out.append(self.ids[t])
            elif counter is not None:
                counter.note(R.UNKNOWN_TAG, f"{where}: tag {t!r} is not a known class", row=row)
        return out

    def label_id(
        self, label: Any, counter: BadSampleCounter | None, where: str, row: int | None = None
    ) -> int:
        """Class id of a label (int id, int-like string or class name); -1 when missing;
        an unknown name is a note (of ``row`` when given)."""
        if label is None or label == "" or (isinstance(label, float) and np.isnan(label)):
            return -1
        if isinstance(label, int | np.integer):
            return int(label)
        if isinstance(label, float) and label.is_integer():
            return int(label)
        text = str(label).strip()
        if text in self.ids:
            return self.ids[text]
        try:
            return int(text)
        except ValueError:
            if counter is not None:
                detail = f"{where}: label {label!r} is not a known class"
                counter.note(R.UNKNOWN_LABEL, detail, row=row)
            return -1

    def table(self, tags: Sequence[Sequence[int]]) -> TagTable:
        """A :class:`TagTable` of per-pair class-id lists under this vocabulary."""
        return TagTable.from_lists(tags, self.class_names, self.parents)


def class_name_of(value: Any) -> str | None:
    """``value`` as a class name: a non-empty string that is not an integer id, else None."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        int(text)
    except ValueError:
        return text
    return None


def names_found(tag_lists: Iterable[Iterable[Any]], labels: Iterable[Any]) -> list[str]:
    """Sorted class names used by tags and labels (integer ids are not names)."""
    names = {n for ts in tag_lists for t in ts if (n := class_name_of(t)) is not None}
    names.update(n for v in labels if (n := class_name_of(v)) is not None)
    return sorted(names)


def label_without_vocab(label: Any) -> int:
    """A label given as an integer (or int-like string); -1 when missing or not an integer."""
    if label is None or label == "":
        return -1
    try:
        value = float(label)
    except (TypeError, ValueError):
        return -1
    return int(value) if np.isfinite(value) and value.is_integer() else -1
