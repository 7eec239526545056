"""frontend: the shop in the browser (contract section 3), Starlette + Jinja2 on uvicorn.

`boutique serve frontend` calls `main()`.
"""

from __future__ import annotations


def main() -> int:
    from boutique.frontend.server import main as _main

    return _main()
