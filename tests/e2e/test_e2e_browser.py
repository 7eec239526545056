"""A person in headless Chromium clicks through the shop: product, cart, currency, checkout.

Screenshots of every page go to <artifacts>/screenshots/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from boutique.dev.shop import Shop

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.browser]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_click_through_product_cart_and_checkout(e2e_shop: Shop, artifacts: Path, tmp_path: Path,
                                                 chromium: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    shots = artifacts / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    external: list[str] = []
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900})
        try:
            page = context.new_page()
            page.on("request", lambda req: None if req.url.startswith(e2e_shop.base_url) else external.append(req.url))

            page.goto(f"{e2e_shop.base_url}/")
            expect(page.get_by_role("heading", name="Hot products")).to_be_visible()
            page.keyboard.press("Tab")  # the first stop is the skip link
            expect(page.locator(".skip-link")).to_be_focused()
            page.screenshot(path=str(shots / "01-home.png"), full_page=True)
            # every product picture loaded (real JPEGs, no broken images)
            widths = page.eval_on_selector_all(".grid img", "imgs => imgs.map(i => i.naturalWidth)")
            assert len(widths) >= 9 and all(w > 0 for w in widths)

            page.get_by_role("link", name="Watch").first.click()
            expect(page.get_by_role("heading", name="Watch", level=1)).to_be_visible()
            page.screenshot(path=str(shots / "02-product.png"), full_page=True)

            page.get_by_label("Quantity").select_option("2")
            page.get_by_role("button", name="Add to cart").click()
            expect(page).to_have_url(re.compile(r"/cart$"))
            expect(page.locator(".total-amount")).to_have_text("$228.97")  # 2 x 109.99 + 8.99
            page.screenshot(path=str(shots / "03-cart.png"), full_page=True)

            page.get_by_label("Currency").select_option("EUR")
            page.get_by_role("button", name="Change").click()
            expect(page).to_have_url(re.compile(r"/cart$"))  # back where we were
            expect(page.locator(".total-amount")).to_have_text(re.compile(r"^€\d+\.\d\d$"))
            page.screenshot(path=str(shots / "04-cart-eur.png"), full_page=True)

            page.get_by_label("E-mail").fill("shopper@example.org")
            page.get_by_role("button", name="Place order").click()
            expect(page.get_by_role("heading", name=re.compile("order is complete"))).to_be_visible()
            assert re.fullmatch(r"[0-9a-f-]{36}", page.locator(".order-id").inner_text())
            expect(page.locator(".total-paid")).to_have_text(re.compile(r"^€\d+\.\d\d$"))
            page.screenshot(path=str(shots / "05-order.png"), full_page=True)

            page.set_viewport_size({"width": 390, "height": 844})
            page.goto(f"{e2e_shop.base_url}/product/OLJCESPC7Z")
            expect(page.get_by_role("button", name="Add to cart")).to_be_visible()
            page.screenshot(path=str(shots / "06-product-mobile.png"), full_page=True)
        finally:
            context.close()
    assert external == [], f"the page fetched something from outside the shop: {external}"
    for name in ("01-home", "02-product", "03-cart", "04-cart-eur", "05-order", "06-product-mobile"):
        assert (shots / f"{name}.png").stat().st_size > 10_000
