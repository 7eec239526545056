"""Helpers to run shops on port offsets nobody else uses right now."""

from __future__ import annotations

from boutique.runner import PortInUseError, Shop, free_port_offset


def pick_offset(**shop_kwargs: object) -> int:
    """A random offset >= 200 with all of the shop's ports free (other people's test runs on this
    machine use the catalog ports or other offsets)."""
    return free_port_offset(**shop_kwargs)


def start_shop(**kwargs: object) -> Shop:
    """Start a Shop on a free offset; tries another offset if a port got taken in between."""
    for attempt in range(3):
        shop = Shop(port_offset=pick_offset(), **kwargs)  # type: ignore[arg-type]
        try:
            return shop.start()
        except PortInUseError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")
