"""Rendering scenes to RGB images with PIL.ImageDraw (no anti-aliasing on shapes).

Each shape is drawn into a one-channel mask and pasted in its colour, so object pixels
have exactly the colour of :data:`~vlexp.data.synthetic.ontology.COLOURS` (textures
paint a darker shade of it). The action cue is drawn in :data:`CUE_COLOUR` from the
subject towards the target, one style per verb:

    chasing       dashed line with an arrow head
    pushing       solid line ending in a bar across it
    jumping over  arc that passes the target on one side, with an arrow head
    hitting       zig-zag line with an arrow head

Text (the caption or unrelated words) is white on black boxes in PIL's default TrueType
font, sized with the image (Tesseract reads it at 224 px; at 64 px it is a few pixels high).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageChops, ImageDraw, ImageFont

from vlexp.data.synthetic.ontology import COLOUR_NAMES, COLOURS, LEAF_CLASSES
from vlexp.data.synthetic.scene import Action, Scene, SceneObject

BACKGROUND = (28, 28, 36)
CUE_COLOUR = (245, 245, 245)
TEXT_COLOUR = (255, 255, 255)
TEXT_BOX = (0, 0, 0)
TEXTURE_SHADE = 0.55
"""Striped/dotted marks use the object's colour times this factor."""

_RGB = [COLOURS[c] for c in COLOUR_NAMES]
_DARK = [tuple(int(v * TEXTURE_SHADE) for v in rgb) for rgb in _RGB]


def _regular(n: int, start_deg: float) -> list[tuple[float, float]]:
    step = 2 * math.pi / n
    start = math.radians(start_deg)
    return [(math.cos(start + k * step), math.sin(start + k * step)) for k in range(n)]


_UNIT: dict[str, list[tuple[float, float]]] = {
    "triangle": [(x, y + 0.22) for x, y in _regular(3, -90)],
    "pentagon": _regular(5, -90),
    "hexagon": _regular(6, 0),
    "diamond": [(0.0, -1.0), (0.62, 0.0), (0.0, 1.0), (-0.62, 0.0)],
    "star": [
        (rad * math.cos(a), rad * math.sin(a))
        for k in range(10)
        for a, rad in [(math.radians(-90 + 36 * k), 1.0 if k % 2 == 0 else 0.45)]
    ],
}
"""Unit vertex lists (y down) of the polygon-drawn shapes."""


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float) -> None:
    """Draw ``shape`` centred at ``(cx, cy)`` with radius ``r`` pixels as 255 on a mask."""
    if shape in _UNIT:
        draw.polygon([(cx + r * x, cy + r * y) for x, y in _UNIT[shape]], fill=255)
    elif shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif shape == "semicircle":  # flat side down, bounding box centred on (cx, cy)
        draw.pieslice((cx - r, cy - 0.5 * r, cx + r, cy + 1.5 * r), 180, 360, fill=255)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=255, width=max(2, round(0.38 * r)))
    elif shape == "crescent":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        ox, rr = cx + 0.5 * r, 0.85 * r
        draw.ellipse((ox - rr, cy - rr, ox + rr, cy + rr), fill=0)
    elif shape == "square":
        h = 0.8 * r
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=255)
    elif shape == "cross":
        arm, w = 0.95 * r, 0.32 * r
        draw.rectangle((cx - arm, cy - w, cx + arm, cy + w), fill=255)
        draw.rectangle((cx - w, cy - arm, cx + w, cy + arm), fill=255)
    elif shape == "heart":
        lobe = 0.5 * r
        for sx in (-1, 1):
            lx, ly = cx + sx * 0.45 * r, cy - 0.3 * r
            draw.ellipse((lx - lobe, ly - lobe, lx + lobe, ly + lobe), fill=255)
        draw.polygon(
            [(cx - 0.93 * r, cy - 0.1 * r), (cx + 0.93 * r, cy - 0.1 * r), (cx, cy + 0.95 * r)],
            fill=255,
        )
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {LEAF_CLASSES}")


@lru_cache(maxsize=32)
def _texture_pattern(size: int, texture: int) -> Image.Image:
    """Mask (255 = texture mark) of diagonal stripes (1) or a dot grid (2) over the image."""
    pattern = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(pattern)
    if texture == 1:
        period = max(4, round(size / 14))
        width = max(1, period // 2)
        for offset in range(-size, size, period):
            draw.line([(offset, size), (offset + size, 0)], fill=255, width=width)
    elif texture == 2:
        period = max(4, round(size / 13))
        dot = max(1, period // 3)
        for y in range(period // 2, size, period):
            shift = period // 2 if (y // period) % 2 else 0
            for x in range(shift + period // 4, size, period):
                draw.rectangle((x, y, x + dot, y + dot), fill=255)
    return pattern


def draw_object(image: Image.Image, o: SceneObject) -> None:
    """Paint scene object ``o`` (shape, colour, texture) onto ``image`` in place."""
    size = image.width
    mask = Image.new("L", image.size, 0)
    _draw_shape(
        ImageDraw.Draw(mask), LEAF_CLASSES[o.shape], o.x * size, o.y * size, o.radius * size
    )
    image.paste(_RGB[o.colour], mask=mask)
    if o.texture:
        image.paste(
            _DARK[o.colour], mask=ImageChops.multiply(mask, _texture_pattern(size, o.texture))
        )


Point = tuple[float, float]


@dataclass(frozen=True)
class _CueGeometry:
    """Image size, unit direction subject -> target, cue length, sizes (pixels)."""

    size: int
    ux: float
    uy: float
    length: float
    target_radius: float
    width: int
    head: float

    def along(self, p: Point, t: float) -> Point:
        """The point ``t`` pixels from ``p`` in the cue's direction."""
        return (p[0] + self.ux * t, p[1] + self.uy * t)


def _arrow_head(draw: ImageDraw.ImageDraw, tip: Point, ux: float, uy: float, h: float) -> None:
    bx, by = tip[0] - ux * h, tip[1] - uy * h
    draw.polygon(
        [tip, (bx - uy * 0.6 * h, by + ux * 0.6 * h), (bx + uy * 0.6 * h, by - ux * 0.6 * h)],
        fill=CUE_COLOUR,
    )


def _cue_chasing(draw: ImageDraw.ImageDraw, p0: Point, p1: Point, g: _CueGeometry) -> None:
    dash, t = max(2.0, g.size / 20), 0.0
    while t < g.length - g.head:
        t1 = min(t + dash, g.length - g.head)
        draw.line([g.along(p0, t), g.along(p0, t1)], fill=CUE_COLOUR, width=g.width)
        t += 2 * dash
    _arrow_head(draw, p1, g.ux, g.uy, g.head)


def _cue_pushing(draw: ImageDraw.ImageDraw, p0: Point, p1: Point, g: _CueGeometry) -> None:
    draw.line([p0, p1], fill=CUE_COLOUR, width=g.width + 1)
    bar = 0.5 * g.head + 0.3 * g.target_radius
    ends = [(p1[0] - g.uy * bar, p1[1] + g.ux * bar), (p1[0] + g.uy * bar, p1[1] - g.ux * bar)]
    draw.line(ends, fill=CUE_COLOUR, width=g.width + 1)


def _cue_jumping_over(draw: ImageDraw.ImageDraw, p0: Point, p1: Point, g: _CueGeometry) -> None:
    """A quadratic Bezier arc bulging to the upper side, landing beyond the target."""
    end = g.along(p1, 0.5 * g.target_radius + 1.1 * g.target_radius)
    nx, ny = g.uy, -g.ux  # the normal on the upper side (the left one for vertical moves)
    if ny > 0 or (ny == 0 and nx > 0):
        nx, ny = -nx, -ny
    lift = 2 * (1.3 * g.target_radius + 0.15 * g.length)  # control offset = 2 x arc height
    ctrl = ((p0[0] + end[0]) / 2 + nx * lift, (p0[1] + end[1]) / 2 + ny * lift)
    pts = [
        (
            (1 - t) ** 2 * p0[0] + 2 * t * (1 - t) * ctrl[0] + t * t * end[0],
            (1 - t) ** 2 * p0[1] + 2 * t * (1 - t) * ctrl[1] + t * t * end[1],
        )
        for t in (k / 16 for k in range(17))
    ]
    draw.line(pts, fill=CUE_COLOUR, width=g.width)
    tx, ty = end[0] - pts[-2][0], end[1] - pts[-2][1]
    tn = math.hypot(tx, ty) or 1.0
    _arrow_head(draw, end, tx / tn, ty / tn, g.head)


def _cue_hitting(draw: ImageDraw.ImageDraw, p0: Point, p1: Point, g: _CueGeometry) -> None:
    steps = max(3, int(g.length / max(3.0, g.size / 16)))
    amp = max(1.5, g.size / 28)
    pts = [p0]
    for k in range(1, steps):
        x, y = g.along(p0, k / steps * (g.length - g.head))
        side = amp if k % 2 else -amp
        pts.append((x - g.uy * side, y + g.ux * side))
    pts.append(g.along(p1, -g.head))
    draw.line(pts, fill=CUE_COLOUR, width=g.width)
    _arrow_head(draw, p1, g.ux, g.uy, g.head)


_CUES = {
    "chasing": _cue_chasing,
    "pushing": _cue_pushing,
    "jumping over": _cue_jumping_over,
    "hitting": _cue_hitting,
}


def draw_action(image: Image.Image, scene: Scene, action: Action) -> None:
    """Draw the cue of ``action`` from its subject towards its target (see module doc).

    The cue runs from half the subject's radius out of its centre to half the target's
    radius before its centre, over both shapes.
    """
    size = image.width
    a, b = scene.objects[action.subject], scene.objects[action.target]
    ax, ay, bx, by = a.x * size, a.y * size, b.x * size, b.y * size
    dist = math.hypot(bx - ax, by - ay) or 1.0
    ux, uy = (bx - ax) / dist, (by - ay) / dist
    p0 = (ax + ux * 0.5 * a.radius * size, ay + uy * 0.5 * a.radius * size)
    p1 = (bx - ux * 0.5 * b.radius * size, by - uy * 0.5 * b.radius * size)
    geometry = _CueGeometry(
        size,
        ux,
        uy,
        math.hypot(p1[0] - p0[0], p1[1] - p0[1]),
        b.radius * size,
        max(1, round(size / 32)),
        max(3.0, size / 14),
    )
    _CUES[action.verb_name](ImageDraw.Draw(image), p0, p1, geometry)


def font_size(image_size: int) -> int:
    """Font size (pixels) of text drawn in an image of side ``image_size``."""
    return max(7, round(image_size * 0.1))


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def wrap_text(
    text: str, width: float, font: ImageFont.FreeTypeFont | ImageFont.ImageFont
) -> list[str]:
    """Greedy word wrap of ``text`` into lines at most ``width`` pixels wide (long words kept)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(lines[-1] + " " + word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def draw_text(image: Image.Image, text: str, x: float, y: float, max_width: float = 0.96) -> None:
    """Write ``text`` wrapped to ``max_width`` (image fraction), top-left at fractions ``(x, y)``.

    Each line is white on a black box just covering it, so it stays legible over shapes.
    """
    size = image.width
    fsize = font_size(size)
    font = _font(fsize)
    draw = ImageDraw.Draw(image)
    left, top = x * size, y * size
    for line in wrap_text(text, max_width * size, font):
        x0, y0, x1, y1 = draw.textbbox((left, top), line, font=font)
        draw.rectangle((x0 - 1, y0 - 1, x1 + 1, y1 + 1), fill=TEXT_BOX)
        draw.text((left, top), line, fill=TEXT_COLOUR, font=font)
        top += fsize + 2


def render_scene(
    scene: Scene,
    image_size: int = 64,
    caption_text: str | None = None,
    words: Sequence[tuple[str, float, float]] = (),
) -> Image.Image:
    """Render ``scene`` as an RGB image of side ``image_size``.

    Objects are painted in order, then the action cue, then ``caption_text`` (wrapped,
    from the top-left corner) and each ``(word, x, y)`` of ``words`` at fractions ``(x, y)``.
    """
    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    for o in scene.objects:
        draw_object(image, o)
    if scene.action is not None:
        draw_action(image, scene, scene.action)
    if caption_text:
        draw_text(image, caption_text, 0.02, 0.02)
    for word, x, y in words:
        draw_text(image, word, x, y, max_width=1.0 - x)
    return image
