"""The local shop (`boutique run`, the tests, the benchmarks): `layout` plans it (services, ports,
environment), `processes` runs and supervises it; `boutique.runner` is its command line."""

from boutique.dev.shop.layout import PortInUseError, ShopError, ShopLayout, port_free
from boutique.dev.shop.processes import Shop, free_port_offset, start_on_free_offset

__all__ = ["PortInUseError", "Shop", "ShopError", "ShopLayout", "free_port_offset", "port_free",
           "start_on_free_offset"]
