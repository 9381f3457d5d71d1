"""Draw the Teams app icons (`color.png` 192x192, `outline.png` 32x32) for this project.

A speech bubble with a four-pointed spark: a chat assistant whose answers are AI generated.
The colour icon is a white bubble on the accent colour; the outline icon is white on transparent,
as Teams requires. Shapes are drawn at 8x and scaled down for smooth edges.

    .venv/bin/python -m infra.teams.draw_icons    # rewrites both PNGs next to this file
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
ACCENT = (31, 78, 154)  # #1F4E9A, the manifest's accentColor
WHITE = (255, 255, 255)
SCALE = 8


def _spark(
    draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: int | tuple[int, ...]
) -> None:
    """A four-pointed star: the common sign for AI-generated content."""
    w = r * 0.28
    points = [
        (cx, cy - r), (cx + w, cy - w), (cx + r, cy), (cx + w, cy + w),
        (cx, cy + r), (cx - w, cy + w), (cx - r, cy), (cx - w, cy - w),
    ]  # fmt: skip
    draw.polygon(points, fill=fill)


def _bubble(
    draw: ImageDraw.ImageDraw, size: float, fill: int | None, outline: int | None, width: int
) -> None:
    """A rounded speech bubble with a tail at the lower left, in a square of `size`."""
    left, top, right, bottom = size * 0.16, size * 0.2, size * 0.84, size * 0.7
    radius = size * 0.14
    tail = [(size * 0.28, bottom - 1), (size * 0.22, size * 0.86), (size * 0.46, bottom - 1)]
    if fill is not None:
        draw.rounded_rectangle((left, top, right, bottom), radius, fill=fill)
        draw.polygon(tail, fill=fill)
        return
    draw.rounded_rectangle((left, top, right, bottom), radius, outline=outline, width=width)
    # The tail: two strokes from the bubble's bottom edge, the edge between them erased.
    draw.line([tail[0], tail[1], tail[2]], fill=outline, width=width, joint="curve")
    draw.line(
        [(tail[0][0] + width, bottom - width / 2), (tail[2][0] - width, bottom - width / 2)],
        fill=0,
        width=width + 2,
    )


def color_icon() -> Image.Image:
    size = 192 * SCALE
    image = Image.new("RGB", (size, size), ACCENT)
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    _bubble(draw, size, fill=255, outline=None, width=0)
    image.paste(WHITE, (0, 0), mask)
    spark = Image.new("L", (size, size), 0)
    _spark(ImageDraw.Draw(spark), size * 0.5, size * 0.45, size * 0.17, 255)
    image.paste(ACCENT, (0, 0), spark)
    return image.resize((192, 192), Image.Resampling.LANCZOS)


def outline_icon() -> Image.Image:
    size = 32 * SCALE
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    _bubble(draw, size, fill=None, outline=255, width=int(size * 0.07))
    _spark(draw, size * 0.5, size * 0.45, size * 0.15, 255)
    alpha = mask.resize((32, 32), Image.Resampling.LANCZOS)
    image = Image.new("RGBA", (32, 32), (*WHITE, 0))
    image.putalpha(alpha)  # white everywhere; the shape lives in the alpha channel only
    return image


def main() -> None:
    color_icon().save(HERE / "color.png", optimize=True)
    outline_icon().save(HERE / "outline.png", optimize=True)


if __name__ == "__main__":
    main()
