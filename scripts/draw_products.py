#!/usr/bin/env python3
"""Draw the shop's product pictures and favicon (our own stylised illustrations).

Writes services/boutique/frontend/static/img/products/<name>.jpg (the catalog's
picture paths, contract section 2.1) and static/favicon.ico. The output is
committed; run this again only to change the drawings:

    .venv/bin/python scripts/draw_products.py [--out DIR] [--size 480]

Needs Pillow (pinned in requirements.txt).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "services" / "boutique" / "frontend" / "static"
S = 1000  # drawing canvas; scaled down for antialiasing

Painter = Callable[[ImageDraw.ImageDraw], None]


def backdrop(color: str, floor: str) -> Image.Image:
    img = Image.new("RGB", (S, S), color)
    d = ImageDraw.Draw(img)
    d.rectangle([0, int(S * 0.74), S, S], fill=floor)
    return img


def shadow(img: Image.Image, box: tuple[int, int, int, int]) -> None:
    layer = Image.new("L", img.size, 0)
    ImageDraw.Draw(layer).ellipse(box, fill=110)
    layer = layer.filter(ImageFilter.GaussianBlur(18))
    img.paste((0, 0, 0), mask=layer.point(lambda v: v // 2))


def sunglasses(d: ImageDraw.ImageDraw) -> None:
    frame = "#1f1b18"
    d.line([(140, 430), (90, 380)], fill=frame, width=26)
    d.line([(860, 430), (910, 380)], fill=frame, width=26)
    for x0 in (150, 540):
        d.rounded_rectangle([x0, 400, x0 + 310, 640], radius=110, fill=frame)
        d.rounded_rectangle([x0 + 22, 420, x0 + 288, 620], radius=95, fill="#3d5a73")
        d.polygon([(x0 + 60, 440), (x0 + 140, 440), (x0 + 70, 600), (x0 + 40, 560)], fill="#6f8fab")
    d.arc([440, 400, 560, 520], start=200, end=340, fill=frame, width=26)


def tank_top(d: ImageDraw.ImageDraw) -> None:
    body = "#e4572e"
    d.polygon([(330, 170), (400, 170), (420, 300), (580, 300), (600, 170), (670, 170), (690, 360),
               (760, 430), (760, 800), (240, 800), (240, 430), (310, 360)], fill=body)
    d.pieslice([400, 180, 600, 380], start=0, end=180, fill="#fbe7c6")
    for y in (520, 600, 680):
        d.rectangle([240, y, 760, y + 34], fill="#fbe7c6")
    d.line([(240, 430), (310, 360)], fill="#b63e1b", width=10)
    d.line([(760, 430), (690, 360)], fill="#b63e1b", width=10)


def watch(d: ImageDraw.ImageDraw) -> None:
    strap = "#6b4226"
    d.rounded_rectangle([400, 90, 600, 910], radius=50, fill=strap)
    for y in (150, 210, 790, 850):
        d.ellipse([488, y, 512, y + 24], fill="#3e2615")
    d.ellipse([270, 270, 730, 730], fill="#c9a227")
    d.ellipse([300, 300, 700, 700], fill="#fdfbf5")
    for i in range(12):
        a = math.radians(i * 30)
        r0, r1 = (150, 185) if i % 3 else (130, 185)
        d.line([(500 + r0 * math.sin(a), 500 - r0 * math.cos(a)), (500 + r1 * math.sin(a), 500 - r1 * math.cos(a))],
               fill="#2b2b2b", width=14 if i % 3 == 0 else 8)
    d.line([(500, 500), (500 + 95 * math.sin(math.radians(300)), 500 - 95 * math.cos(math.radians(300)))],
           fill="#2b2b2b", width=18)
    d.line([(500, 500), (500 + 150 * math.sin(math.radians(60)), 500 - 150 * math.cos(math.radians(60)))],
           fill="#2b2b2b", width=10)
    d.ellipse([485, 485, 515, 515], fill="#b4471f")
    d.rounded_rectangle([720, 470, 770, 530], radius=10, fill="#c9a227")


def loafers(d: ImageDraw.ImageDraw) -> None:
    leather, sole = "#7a3b1d", "#2a1a12"
    for dx, dy, scale in ((40, 40, 0.9), (0, 0, 1.0)):
        def p(x: float, y: float, dx: float = dx, dy: float = dy, scale: float = scale) -> tuple[float, float]:
            return (150 + dx + x * scale, 380 + dy + y * scale)
        d.rounded_rectangle([p(0, 300), p(720, 345)], radius=20, fill=sole)
        d.polygon([p(10, 300), p(30, 140), p(160, 100), p(330, 150), p(520, 170), p(680, 220), p(720, 300)],
                  fill=leather)
        d.chord([*p(330, 110), *p(620, 250)], start=180, end=360, fill="#5e2c14")
        d.rectangle([p(380, 160), p(560, 185)], fill="#d9b25f")
        d.line([p(30, 140), p(160, 100)], fill="#5e2c14", width=12)


def hairdryer(d: ImageDraw.ImageDraw) -> None:
    body = "#2f6fb3"
    d.rounded_rectangle([420, 470, 540, 860], radius=40, fill="#24578d")
    d.rectangle([455, 600, 505, 640], fill="#f2b705")
    d.ellipse([170, 250, 470, 550], fill=body)
    d.rectangle([320, 300, 760, 500], fill=body)
    d.polygon([(760, 300), (860, 330), (860, 470), (760, 500)], fill="#1f4f80")
    d.ellipse([210, 290, 430, 510], fill="#dbe8f6")
    for r in (40, 75):
        d.ellipse([320 - r, 400 - r, 320 + r, 400 + r], outline="#2f6fb3", width=10)
    d.line([(480, 860), (430, 940)], fill="#333", width=10)


def candle_holder(d: ImageDraw.ImageDraw) -> None:
    d.rectangle([430, 320, 570, 620], fill="#f7f1e3")
    d.line([(500, 320), (500, 280)], fill="#333", width=8)
    d.ellipse([465, 160, 535, 300], fill="#f2b705")
    d.ellipse([482, 210, 518, 290], fill="#fff3c4")
    d.polygon([(300, 600), (700, 600), (640, 700), (360, 700)], fill="#c0873f")
    d.rectangle([470, 700, 530, 800], fill="#a26f2e")
    d.ellipse([330, 780, 670, 850], fill="#c0873f")
    d.line([(320, 600), (680, 600)], fill="#e0b071", width=14)


def salt_and_pepper(d: ImageDraw.ImageDraw) -> None:
    for x0, fill, cap in ((230, "#fbfbf8", "#9aa4ab"), (530, "#2e2e30", "#9aa4ab")):
        d.rounded_rectangle([x0, 380, x0 + 240, 820], radius=70, fill=fill, outline="#55575a", width=6)
        d.chord([x0, 260, x0 + 240, 500], start=180, end=360, fill=cap)
        d.rectangle([x0, 378, x0 + 240, 400], fill=cap)
        for i, (hx, hy) in enumerate(((x0 + 90, 320), (x0 + 150, 320), (x0 + 120, 290))):
            d.ellipse([hx - 10, hy - 10, hx + 10, hy + 10], fill="#3a3c3e" if i < 3 else cap)
    d.text((338, 580), "S", fill="#55575a", font_size=90)
    d.text((638, 580), "P", fill="#e9e9e9", font_size=90)


def bamboo_glass_jar(d: ImageDraw.ImageDraw) -> None:
    d.rounded_rectangle([290, 330, 710, 860], radius=60, fill="#d8eef0", outline="#8fb9bf", width=10)
    d.rounded_rectangle([320, 520, 680, 830], radius=40, fill="#e9c46a")
    for x in (380, 470, 560, 640):
        d.ellipse([x - 18, 600, x + 18, 636], fill="#d4a943")
    d.rounded_rectangle([270, 230, 730, 340], radius=20, fill="#c8a165")
    for x in range(300, 720, 60):
        d.line([(x, 240), (x, 330)], fill="#a8834b", width=6)
    d.line([(360, 380), (360, 780)], fill="#ffffff", width=16)


def mug(d: ImageDraw.ImageDraw) -> None:
    d.arc([600, 420, 800, 680], start=270, end=90, fill="#2a7f62", width=48)
    d.rounded_rectangle([260, 360, 660, 820], radius=50, fill="#2a7f62")
    d.ellipse([260, 320, 660, 400], fill="#1e5e48")
    d.ellipse([285, 332, 635, 392], fill="#5b3a22")
    d.ellipse([380, 530, 540, 690], fill="#fbf8f3")
    d.polygon([(460, 560), (520, 610), (460, 660), (400, 610)], fill="#2a7f62")
    for x in (370, 460, 550):
        d.arc([x - 30, 150, x + 30, 300], start=100, end=260, fill="#ffffff", width=12)


PRODUCTS: dict[str, tuple[str, str, Painter]] = {
    "sunglasses": ("#f6d365", "#e8bd46", sunglasses),
    "tank-top": ("#cfe4f4", "#a9cbe5", tank_top),
    "watch": ("#efe2cd", "#dcc8a6", watch),
    "loafers": ("#cfdcc4", "#aebf9f", loafers),
    "hairdryer": ("#f6d5da", "#e9b3bc", hairdryer),
    "candle-holder": ("#2d3a5a", "#222c45", candle_holder),
    "salt-and-pepper-shakers": ("#e8b49c", "#d39275", salt_and_pepper),
    "bamboo-glass-jar": ("#d7ead2", "#b8d6b0", bamboo_glass_jar),
    "mug": ("#dcd3ef", "#c2b4e2", mug),
}


def draw(name: str, size: int) -> Image.Image:
    color, floor, painter = PRODUCTS[name]
    img = backdrop(color, floor)
    shadow(img, (220, 800, 780, 900))
    painter(ImageDraw.Draw(img))
    return img.resize((size, size), Image.Resampling.LANCZOS)


def favicon() -> Image.Image:
    img = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle([8, 8, 248, 248], radius=60, fill="#0b5f5a")
    d.polygon([(72, 100), (184, 100), (172, 206), (84, 206)], fill="#fbf8f3")
    d.arc([100, 52, 156, 140], start=180, end=360, fill="#fbf8f3", width=16)
    d.ellipse([114, 136, 142, 164], fill="#b4471f")
    return img


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=STATIC / "img" / "products")
    parser.add_argument("--size", type=int, default=480)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in PRODUCTS:
        path = args.out / f"{name}.jpg"
        draw(name, args.size).save(path, "JPEG", quality=86, optimize=True, progressive=True)
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    icon = STATIC / "favicon.ico"
    favicon().save(icon, sizes=[(16, 16), (32, 32), (48, 48)])
    print(f"wrote {icon}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
