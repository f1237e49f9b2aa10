"""Image decoding: a pixel cap judged from the header (larger images are bad samples,
never decoded) and JPEG draft mode (large JPEGs decoded reduced, same crops per seed)."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageFile

from tests.conftest import compose_cfg
from tests.data.test_bad_samples_workers import _datamodule
from vlexp.config import ConfigError, validate_config
from vlexp.data.pipeline import KeyedPairs, image_transform
from vlexp.data.readers.csv_reader import CsvPairs
from vlexp.data.records import ImageDecoder, ImageTooLarge, decode_image


def _photo(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A smooth RGB image (gradients plus low-frequency waves): JPEG keeps it well."""
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    rng = np.random.default_rng(seed)
    f = rng.uniform(2, 6, size=3)
    chans = [0.5 + 0.4 * np.sin(2 * np.pi * (f[c] * x + (c + 1) * y)) for c in range(3)]
    return (np.stack(chans, -1) * 255).astype(np.uint8)


def _jpeg(arr: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture()
def loaded_sizes(monkeypatch) -> list[tuple[int, int]]:
    """Sizes of every image whose pixels PIL decodes (``ImageFile.load``)."""
    sizes: list[tuple[int, int]] = []
    original = ImageFile.ImageFile.load

    def load(self):  # type: ignore[no-untyped-def]
        sizes.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return sizes


def _png_header(w: int, h: int) -> bytes:
    """A PNG declaring ``w`` x ``h`` RGB pixels whose data is one empty IDAT chunk: what
    a reader sees before decoding (a real 12000x12000 PNG of one colour is ~420 KB)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        return len(body).to_bytes(4, "big") + kind + body + crc

    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    idat = zlib.compress(b"")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_oversized_png_is_refused_from_its_header(tmp_path, loaded_sizes):
    (tmp_path / "big.png").write_bytes(_png_header(12000, 12000))
    with pytest.warns(Image.DecompressionBombWarning):  # PIL alone would only warn
        assert Image.open(tmp_path / "big.png").size == (12000, 12000)
    with pytest.raises(ImageTooLarge, match="144,000,000 pixels"):
        decode_image(tmp_path / "big.png")
    # above PIL's own hard limit (2 x Image.MAX_IMAGE_PIXELS) with no cap: still too large
    side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 10
    with pytest.raises(ImageTooLarge):
        decode_image(_png_header(side, side), max_pixels=None)
    assert loaded_sizes == []  # no pixel was decoded
    Image.fromarray(_photo(64, 48)).save(tmp_path / "ok.png")
    assert decode_image(tmp_path / "ok.png", max_pixels=64 * 48).size == (64, 48)
    with pytest.raises(ImageTooLarge):
        decode_image(tmp_path / "ok.png", max_pixels=64 * 48 - 1)


def test_csv_rows_with_huge_images_are_counted_not_decoded(tmp_path, loaded_sizes):
    (tmp_path / "big.png").write_bytes(_png_header(12000, 12000))
    Image.fromarray(_photo(64, 48)).save(tmp_path / "ok.jpg")
    n, big = 60, {3, 17, 40}
    files = ["big.png" if r in big else "ok.jpg" for r in range(n)]
    path = tmp_path / "pairs.csv"
    pd.DataFrame({"filepath": files, "caption": [f"c{r}" for r in range(n)]}).to_csv(
        path, index=False
    )
    pairs = CsvPairs(path, min_samples=100)
    items = [pairs[i] for i in range(n)]
    assert all(it["image"].size == (64, 48) for it in items)
    assert pairs.bad.as_dict()["by_reason"] == {"too_large": 3}
    assert max(w * h for w, h in loaded_sizes) == 64 * 48


def test_draft_decodes_large_jpegs_reduced():
    data = _jpeg(_photo(640, 480))
    assert ImageDecoder(draft_side=None)(data).size == (640, 480)
    assert ImageDecoder(draft_side=224)(data).size == (320, 240)  # >= 224 on both sides
    assert ImageDecoder(draft_side=241)(data).size == (640, 480)  # 480 < 2 x 241: full
    assert ImageDecoder(draft_side=60)(data).size == (80, 60)  # scale 1/8, PIL's largest
    png = io.BytesIO()
    Image.fromarray(_photo(640, 480)).save(png, "PNG")
    assert ImageDecoder(draft_side=224)(png.getvalue()).size == (640, 480)  # JPEG only


def test_drafted_eval_pixels_match_the_full_decode():
    """Resize + centre crop to 224 from the drafted 320x240 decode against the same from
    the full 640x480 decode (the reference): the same picture, up to resampling."""
    data = _jpeg(_photo(640, 480, seed=1), quality=95)
    t = image_transform(224, (0.5,) * 3, (0.5,) * 3, train=False)
    full = t(ImageDecoder()(data))
    drafted = t(ImageDecoder(draft_side=224)(data))
    other = t(ImageDecoder()(_jpeg(_photo(640, 480, seed=2), quality=95)))
    assert drafted.shape == full.shape == (3, 224, 224)
    err = (drafted - full).abs().mean().item()
    assert err < 0.02  # normalised units (pixel / 127.5)
    assert (other - full).abs().mean().item() > 20 * err  # the check can tell images apart


def test_datamodule_drafts_for_the_smallest_crop_and_keeps_crops_seeded(tmp_path):
    Image.fromarray(_photo(640, 480)).save(tmp_path / "a.jpg", quality=90)
    path = tmp_path / "pairs.csv"
    pd.DataFrame({"filepath": ["a.jpg"] * 4, "caption": list("abcd")}).to_csv(path, index=False)
    base = ["data=csv", f"data.source.path={path}", "data.batch_size=2", "sampler=random"]
    dm = _datamodule([*base, "filter=none", "aug.scale=[0.25,1.0]"])
    dm.setup("fit")
    # 16 px training side, crops down to a quarter of the area: decode to >= 16 / 0.5 = 32
    assert dm.train_set.decoder == ImageDecoder(40_000_000, 32)
    assert dm.train_set[0]["image"].size == (80, 60)  # 1/8 scale: both sides >= 32
    keyed = KeyedPairs(dm.train_set, seed=7)
    a, b = keyed[(3, 1)], keyed[(3, 1)]
    t = dm.train_collate.transform
    first, again = t(a["image"], a["aug_seed"]), t(b["image"], b["aug_seed"])
    assert first.shape == (3, 16, 16) and torch.equal(first, again)
    off = _datamodule([*base, "filter=none", "data.jpeg_draft=false"])
    off.setup("fit")
    assert off.train_set.decoder.draft_side is None
    assert off.train_set[0]["image"].size == (640, 480)


@pytest.mark.parametrize(
    "override,allowed",
    [
        ("data.max_image_pixels=0", "an integer in [1, inf)"),
        ("data.jpeg_draft=maybe", "true/false"),
    ],
)
def test_decoding_options_are_validated(override, allowed, tmp_path):
    cfg = compose_cfg(["data=csv", "data.source.path=p.csv", override], output_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert override.split("=")[0] in str(err.value) and allowed in str(err.value)


def test_cap_applies_to_shard_readers(tmp_path):
    from vlexp.data.readers.memory import InMemoryPairs
    from vlexp.data.readers.webdataset_reader import WebDatasetPairs
    from vlexp.data.shards.export import export_webdataset
    from vlexp.data.shards.index import IndexedShardPairs, index_shards

    images = [Image.fromarray(_photo(40, 30, seed=s)) for s in range(6)]
    export_webdataset(InMemoryPairs(images, [f"c{i}" for i in range(6)]), tmp_path, shard_size=3)
    stream = WebDatasetPairs(str(tmp_path), shuffle_buffer=0, min_samples=100)
    stream.decoder = ImageDecoder(max_pixels=40 * 30 - 1)
    assert list(stream) == [] and stream.bad.as_dict()["by_reason"] == {"too_large": 6}
    indexed = IndexedShardPairs(index_shards(str(tmp_path)), min_samples=100)
    indexed.decoder = ImageDecoder(max_pixels=40 * 30)
    assert indexed[0]["image"].size == (40, 30) and indexed.bad.num_bad == 0
