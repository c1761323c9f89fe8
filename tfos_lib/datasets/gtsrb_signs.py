"""Pictograms of the 43 GTSRB sign classes, drawn with Pillow: the shapes, colours and symbols of the real signs.

Used by :mod:`tfos_lib.datasets.gtsrb` to write the offline default dataset. Every
drawing is an RGBA square (transparent outside the sign) that a caller then
warps, scales, lights and pastes onto a background.
"""

from __future__ import annotations

import math

RED, WHITE, BLACK, BLUE, YELLOW, GREY = (200, 20, 30), (245, 245, 240), (15, 15, 15), (20, 70, 170), (250, 200, 0), (150, 150, 150)

#: GTSRB class id -> name (the benchmark's order).
CLASS_NAMES = (
    "speed limit 20", "speed limit 30", "speed limit 50", "speed limit 60", "speed limit 70", "speed limit 80",
    "end of speed limit 80", "speed limit 100", "speed limit 120", "no passing", "no passing for trucks",
    "right-of-way at next intersection", "priority road", "yield", "stop", "no vehicles", "no trucks",
    "no entry", "general caution", "dangerous curve left", "dangerous curve right", "double curve", "bumpy road",
    "slippery road", "road narrows on the right", "road work", "traffic signals", "pedestrians",
    "children crossing", "bicycles crossing", "beware of ice/snow", "wild animals crossing",
    "end of all limits", "turn right ahead", "turn left ahead", "ahead only", "go straight or right",
    "go straight or left", "keep right", "keep left", "roundabout mandatory", "end of no passing",
    "end of no passing for trucks",
)
SPEEDS = {0: "20", 1: "30", 2: "50", 3: "60", 4: "70", 5: "80", 7: "100", 8: "120"}


def draw_sign(class_id: int, size: int = 200, font=None):
    """The pictogram of ``class_id`` as a ``size`` x ``size`` RGBA image (alpha 0 outside the sign)."""
    from PIL import Image, ImageDraw, ImageFont

    if not 0 <= class_id < len(CLASS_NAMES):
        raise ValueError(f"class_id must be in 0..{len(CLASS_NAMES) - 1}; got {class_id}.")
    font = font or ImageFont.load_default(size=size * 0.36)
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(image)
    s = size
    c = s / 2
    if class_id in SPEEDS or class_id in (9, 10, 15, 16):  # red ring prohibitions
        _ring(d, s, RED)
        if class_id in SPEEDS:
            _text(d, c, SPEEDS[class_id], font, BLACK)
        elif class_id in (9, 10):
            if class_id == 9:
                _car(d, c - s * 0.17, c, s * 0.24, RED)
            else:
                _truck(d, c - s * 0.17, c, s * 0.26, RED)
            _car(d, c + s * 0.17, c, s * 0.24, BLACK)
        elif class_id == 16:
            _truck(d, c, c, s * 0.22, BLACK)
    elif class_id in (6, 32, 41, 42):  # end of restriction: white disc, grey symbol, black diagonal bars
        d.ellipse([s * 0.04, s * 0.04, s * 0.96, s * 0.96], fill=WHITE, outline=GREY, width=max(1, int(s * 0.02)))
        if class_id == 6:
            _text(d, c, "80", font, GREY)
        elif class_id == 41:
            _car(d, c - s * 0.17, c, s * 0.24, GREY)
            _car(d, c + s * 0.17, c, s * 0.24, GREY)
        elif class_id == 42:
            _truck(d, c - s * 0.17, c, s * 0.26, GREY)
            _car(d, c + s * 0.17, c, s * 0.24, GREY)
        bars = 5 if class_id == 32 else 1
        for k in range(bars):
            off = (k - (bars - 1) / 2) * s * 0.07
            d.line([(s * 0.22 + off, s * 0.78 + off), (s * 0.78 + off, s * 0.22 + off)], fill=BLACK,
                   width=max(1, int(s * (0.03 if bars > 1 else 0.07))))
    elif class_id == 12:  # priority road: yellow diamond, white border
        d.polygon([(c, s * 0.02), (s * 0.98, c), (c, s * 0.98), (s * 0.02, c)], fill=WHITE, outline=BLACK)
        d.polygon([(c, s * 0.18), (s * 0.82, c), (c, s * 0.82), (s * 0.18, c)], fill=YELLOW)
    elif class_id == 13:  # yield: inverted triangle
        d.polygon([(s * 0.02, s * 0.1), (s * 0.98, s * 0.1), (c, s * 0.95)], fill=RED)
        d.polygon([(s * 0.2, s * 0.2), (s * 0.8, s * 0.2), (c, s * 0.72)], fill=WHITE)
    elif class_id == 14:  # stop: red octagon
        points = [(c + c * 0.96 * math.cos(math.pi / 8 + k * math.pi / 4), c + c * 0.96 * math.sin(math.pi / 8 + k * math.pi / 4))
                  for k in range(8)]
        d.polygon(points, fill=RED, outline=WHITE)
        _text(d, c, "STOP", ImageFont.load_default(size=s * 0.25), WHITE)
    elif class_id == 17:  # no entry: red disc, white bar
        d.ellipse([s * 0.04, s * 0.04, s * 0.96, s * 0.96], fill=RED)
        d.rectangle([s * 0.18, s * 0.42, s * 0.82, s * 0.58], fill=WHITE)
    elif 18 <= class_id <= 31 or class_id == 11:  # warning triangles
        d.polygon([(c, s * 0.04), (s * 0.98, s * 0.92), (s * 0.02, s * 0.92)], fill=RED)
        d.polygon([(c, s * 0.22), (s * 0.83, s * 0.83), (s * 0.17, s * 0.83)], fill=WHITE)
        _warning_symbol(d, class_id, s)
    else:  # 33-40: blue mandatory discs with white arrows
        d.ellipse([s * 0.04, s * 0.04, s * 0.96, s * 0.96], fill=BLUE, outline=WHITE, width=max(1, int(s * 0.02)))
        _mandatory_symbol(d, class_id, s)
    return image


def _ring(d, s, colour):
    d.ellipse([s * 0.04, s * 0.04, s * 0.96, s * 0.96], fill=colour)
    d.ellipse([s * 0.16, s * 0.16, s * 0.84, s * 0.84], fill=WHITE)


def _text(d, c, text, font, colour):
    d.text((c, c), text, fill=colour, font=font, anchor="mm")


def _car(d, x, y, w, colour):
    d.rectangle([x - w * 0.5, y - w * 0.1, x + w * 0.5, y + w * 0.35], fill=colour)
    d.polygon([(x - w * 0.3, y - w * 0.1), (x - w * 0.2, y - w * 0.45), (x + w * 0.2, y - w * 0.45), (x + w * 0.3, y - w * 0.1)],
              fill=colour)


def _truck(d, x, y, w, colour):
    d.rectangle([x - w * 0.5, y - w * 0.5, x + w * 0.2, y + w * 0.3], fill=colour)
    d.rectangle([x + w * 0.25, y - w * 0.15, x + w * 0.5, y + w * 0.3], fill=colour)


def _arrow(d, points, s, colour=WHITE, head=True):
    """A thick polyline with an arrow head at its last point."""
    width = max(1, int(s * 0.09))
    d.line(points, fill=colour, width=width, joint="curve")
    if head:
        (x0, y0), (x1, y1) = points[-2], points[-1]
        angle = math.atan2(y1 - y0, x1 - x0)
        h = s * 0.16
        tip = (x1 + math.cos(angle) * h * 0.6, y1 + math.sin(angle) * h * 0.6)
        left = (x1 + math.cos(angle + 2.3) * h, y1 + math.sin(angle + 2.3) * h)
        right = (x1 + math.cos(angle - 2.3) * h, y1 + math.sin(angle - 2.3) * h)
        d.polygon([tip, left, right], fill=colour)


def _mandatory_symbol(d, class_id, s):
    c = s / 2
    if class_id == 33:  # turn right ahead
        _arrow(d, [(s * 0.38, s * 0.78), (s * 0.38, s * 0.45), (s * 0.62, s * 0.45)], s)
    elif class_id == 34:  # turn left ahead
        _arrow(d, [(s * 0.62, s * 0.78), (s * 0.62, s * 0.45), (s * 0.38, s * 0.45)], s)
    elif class_id == 35:  # ahead only
        _arrow(d, [(c, s * 0.82), (c, s * 0.3)], s)
    elif class_id in (36, 37):  # straight or right / left
        side = 1 if class_id == 36 else -1
        _arrow(d, [(c, s * 0.82), (c, s * 0.3)], s)
        _arrow(d, [(c, s * 0.62), (c + side * s * 0.22, s * 0.45)], s)
    elif class_id in (38, 39):  # keep right / left: diagonal down
        side = 1 if class_id == 38 else -1
        _arrow(d, [(c - side * s * 0.2, s * 0.3), (c + side * s * 0.12, s * 0.62)], s)
    else:  # 40 roundabout: three arrows on a circle
        r = s * 0.23
        for k in range(3):
            a0 = k * 2 * math.pi / 3
            pts = [(c + r * math.cos(a0 + t * 0.35), c + r * math.sin(a0 + t * 0.35)) for t in range(5)]
            _arrow(d, pts, s * 0.7)


def _warning_symbol(d, class_id, s):
    c = s / 2
    w = max(1, int(s * 0.05))
    y0, y1 = s * 0.42, s * 0.76  # the symbol's vertical extent inside the triangle
    if class_id == 11:  # right-of-way: a cross with a thicker vertical
        d.line([(c, y0), (c, y1)], fill=BLACK, width=int(w * 1.6))
        d.line([(c - s * 0.13, (y0 + y1) / 2), (c + s * 0.13, (y0 + y1) / 2)], fill=BLACK, width=w)
    elif class_id == 18:  # general caution: "!"
        d.rectangle([c - w * 0.7, y0, c + w * 0.7, y1 - s * 0.1], fill=BLACK)
        d.ellipse([c - w, y1 - s * 0.06, c + w, y1 - s * 0.06 + 2 * w], fill=BLACK)
    elif class_id in (19, 20):  # single curve
        side = -1 if class_id == 19 else 1
        d.line([(c - side * s * 0.05, y1), (c - side * s * 0.05, (y0 + y1) / 2), (c + side * s * 0.12, y0)], fill=BLACK,
               width=w, joint="curve")
    elif class_id == 21:  # double curve
        d.line([(c - s * 0.06, y1), (c + s * 0.08, (y0 * 2 + y1) / 3 + s * 0.06), (c - s * 0.08, y0 + s * 0.06),
                (c + s * 0.02, y0)], fill=BLACK, width=w, joint="curve")
    elif class_id == 22:  # bumpy road: two bumps
        d.chord([c - s * 0.2, y1 - s * 0.16, c, y1 + s * 0.06], 180, 360, fill=BLACK)
        d.chord([c, y1 - s * 0.16, c + s * 0.2, y1 + s * 0.06], 180, 360, fill=BLACK)
    elif class_id == 23:  # slippery road: car and wavy tracks
        _car(d, c, y0 + s * 0.07, s * 0.2, BLACK)
        for k in (-1, 1):
            d.line([(c + k * s * 0.05, y0 + s * 0.15), (c + k * s * 0.12, y0 + s * 0.23), (c + k * s * 0.02, y1)],
                   fill=BLACK, width=max(1, w // 2))
    elif class_id == 24:  # road narrows on the right
        d.line([(c - s * 0.1, y0), (c - s * 0.1, y1)], fill=BLACK, width=w)
        d.line([(c + s * 0.05, y0), (c + s * 0.05, (y0 + y1) / 2), (c + s * 0.14, y1)], fill=BLACK, width=w)
    elif class_id == 25:  # road work: digging figure
        d.ellipse([c - s * 0.04, y0, c + s * 0.04, y0 + s * 0.08], fill=BLACK)
        d.line([(c, y0 + s * 0.08), (c - s * 0.05, y1)], fill=BLACK, width=w)
        d.line([(c - s * 0.02, y0 + s * 0.14), (c + s * 0.14, y0 + s * 0.2)], fill=BLACK, width=max(1, w // 2))
        d.polygon([(c + s * 0.08, y1), (c + s * 0.2, y1), (c + s * 0.14, y1 - s * 0.08)], fill=BLACK)
    elif class_id == 26:  # traffic signals: red, yellow, green
        for k, colour in enumerate((RED, YELLOW, (20, 150, 50))):
            y = y0 + k * s * 0.11
            d.ellipse([c - s * 0.05, y, c + s * 0.05, y + s * 0.1], fill=colour, outline=BLACK)
    elif class_id == 27:  # pedestrian
        d.ellipse([c - s * 0.035, y0 - s * 0.02, c + s * 0.035, y0 + s * 0.05], fill=BLACK)
        d.line([(c, y0 + s * 0.05), (c, y0 + s * 0.2)], fill=BLACK, width=w)
        d.line([(c, y0 + s * 0.2), (c - s * 0.06, y1), (c, y0 + s * 0.2), (c + s * 0.06, y1)], fill=BLACK, width=w)
    elif class_id == 28:  # children: two figures
        for x, h in ((c - s * 0.08, 0.0), (c + s * 0.07, 0.05)):
            d.ellipse([x - s * 0.03, y0 + s * h, x + s * 0.03, y0 + s * (h + 0.06)], fill=BLACK)
            d.polygon([(x, y0 + s * (h + 0.06)), (x - s * 0.06, y1), (x + s * 0.06, y1)], fill=BLACK)
    elif class_id == 29:  # bicycle
        for x in (c - s * 0.1, c + s * 0.1):
            d.ellipse([x - s * 0.07, y1 - s * 0.14, x + s * 0.07, y1], outline=BLACK, width=max(1, w // 2))
        d.line([(c - s * 0.1, y1 - s * 0.07), (c, y1 - s * 0.18), (c + s * 0.1, y1 - s * 0.07)], fill=BLACK, width=max(1, w // 2))
    elif class_id == 30:  # snowflake
        for k in range(3):
            a = k * math.pi / 3
            dx, dy = math.cos(a) * s * 0.15, math.sin(a) * s * 0.15
            d.line([(c - dx, (y0 + y1) / 2 - dy), (c + dx, (y0 + y1) / 2 + dy)], fill=BLACK, width=max(1, w // 2))
    else:  # 31 wild animals: a leaping deer
        d.polygon([(c - s * 0.18, y1 - s * 0.05), (c - s * 0.05, y0 + s * 0.12), (c + s * 0.12, y0 + s * 0.1),
                   (c + s * 0.16, y0), (c + s * 0.2, y0 + s * 0.05), (c + s * 0.12, y0 + s * 0.2), (c + s * 0.1, y1),
                   (c, y0 + s * 0.22)], fill=BLACK)
