"""Our Locust file: the Online Boutique traffic mix (contract section 4).

Users (pick one as locust's positional argument):
  ShopUser  the contract's mix: index 1, setCurrency 2, browseProduct 10,
            addToCart 2, viewCart 3, checkout 1 (empty_cart and logout are
            defined but not scheduled, as in the original).
  HomeUser  the home page only, priced in EUR (the fan-out benchmark).

Settings from the environment (set by `boutique loadgen`):
  LOADGEN_WAIT  "min,max" seconds between tasks (default "1,10", the original's between(1, 10)).

Redirects are followed and counted under the POST that caused them. Product
pages are grouped under one stats entry, /product/{id}, like the frontend's route.
"""

from __future__ import annotations

import datetime
import json
import os
import random
from importlib import resources
from typing import ClassVar

from faker import Faker
from locust import FastHttpUser, TaskSet, between, task

from boutique.loadgen import cards

PRODUCT_IDS = [p["id"] for p in json.loads(
    resources.files("boutique.data").joinpath("products.json").read_text(encoding="utf-8"))["products"]]
CURRENCIES = ["EUR", "USD", "JPY", "CAD", "GBP", "TRY"]
fake = Faker()


def _wait_range() -> tuple[float, float]:
    raw = os.environ.get("LOADGEN_WAIT", "1,10")
    lo, _, hi = raw.partition(",")
    low = float(lo)
    return low, float(hi or lo)


WAIT_MIN, WAIT_MAX = _wait_range()


class ShopBehavior(TaskSet):
    def on_start(self) -> None:
        self.index()

    @task(1)
    def index(self) -> None:
        self.client.get("/")

    @task(2)
    def set_currency(self) -> None:
        self.client.post("/setCurrency", data={"currency_code": random.choice(CURRENCIES)})

    @task(10)
    def browse_product(self) -> None:
        self.client.get(f"/product/{random.choice(PRODUCT_IDS)}", name="/product/{id}")

    @task(2)
    def add_to_cart(self) -> None:
        product = random.choice(PRODUCT_IDS)
        self.client.get(f"/product/{product}", name="/product/{id}")
        self.client.post("/cart", data={"product_id": product, "quantity": random.randint(1, 10)})

    @task(3)
    def view_cart(self) -> None:
        self.client.get("/cart")

    @task(1)
    def checkout(self) -> None:
        self.add_to_cart()
        year = datetime.date.today().year
        self.client.post("/cart/checkout", data={
            "email": fake.email(),
            "street_address": fake.street_address(),
            "zip_code": str(random.randint(10000, 99999)),
            "city": fake.city(),
            "state": fake.state_abbr(),
            "country": fake.country(),
            "credit_card_number": cards.card(),
            "credit_card_expiration_month": random.randint(1, 12),
            "credit_card_expiration_year": random.randint(year + 1, year + 71),
            "credit_card_cvv": random.randint(100, 999),
        })

    def empty_cart(self) -> None:  # defined, not scheduled (as in the original)
        self.client.post("/cart/empty")

    def logout(self) -> None:  # defined, not scheduled
        self.client.get("/logout")


class HomeBehavior(TaskSet):
    def on_start(self) -> None:
        self.client.post("/setCurrency", data={"currency_code": "EUR"}, name="/setCurrency (warm-up)")

    @task
    def index(self) -> None:
        self.client.get("/")


class ShopUser(FastHttpUser):
    tasks: ClassVar = [ShopBehavior]
    wait_time = between(WAIT_MIN, WAIT_MAX)


class HomeUser(FastHttpUser):
    tasks: ClassVar = [HomeBehavior]
    wait_time = between(WAIT_MIN, WAIT_MAX)
