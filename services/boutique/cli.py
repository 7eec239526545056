"""`boutique` command line: serve one service, run the whole shop, load it.

  boutique serve <name>        one service from the catalog (what containers run)
  boutique run [--mtls]        every service on 127.0.0.1 (the local runner)
  boutique loadgen ...         headless load against a frontend URL
  boutique certs --out DIR     throw-away CA and per-service certificates (mutual TLS)
  boutique catalog             print the service catalog as the runner sees it
  boutique tools build NAME    build (or reuse) a pinned Go tool (tools/go/NAME); a checkout only
  boutique cluster up|down     a real single-node Kubernetes for the tests; a checkout only
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from boutique import service_catalog as catalog_mod
from boutique.runtime.config import ConfigError


def definition_module(name: str):
    """The Python module that implements catalog service `name`."""
    svc = catalog_mod.default().get(name)
    return importlib.import_module(f"boutique.{svc.module}")


def _serve(args: argparse.Namespace) -> int:
    try:
        module = definition_module(args.name)
    except catalog_mod.CatalogError as exc:
        print(f"boutique serve: {exc}", file=sys.stderr)
        return 2
    if hasattr(module, "DEFINITION"):
        from boutique.runtime.server import serve

        return serve(module.DEFINITION)
    return int(module.main() or 0)


def _catalog(_args: argparse.Namespace) -> int:
    cat = catalog_mod.default()
    print(f"{'service':24} {'proto':5} {'port':>6} {'local':>6} {'metrics':>7}  callees")
    for s in cat.services.values():
        print(f"{s.name:24} {s.protocol:5} {s.port:>6} {s.local_port:>6} {s.local_metrics_port:>7}  "
              f"{', '.join(s.callees) or '-'}")
    return 0


def _dev(module: str):
    """A development-only module (boutique.dev.*); the service images leave them out."""
    try:
        return importlib.import_module(f"boutique.dev.{module}")
    except ModuleNotFoundError as exc:
        raise ConfigError(f"this command needs a development checkout of boutique-mesh ({exc})") from exc


def _tools(args: argparse.Namespace) -> int:
    return _dev("gotools").main(args.tool_args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="boutique", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p_serve = sub.add_parser("serve", help="serve one catalog service (config from env)")
    p_serve.add_argument("name", help="catalog name, e.g. cartservice")
    p_serve.set_defaults(func=_serve)

    p_cat = sub.add_parser("catalog", help="print the service catalog")
    p_cat.set_defaults(func=_catalog)

    p_tools = sub.add_parser("tools", help="build or locate the pinned Go tools (development checkout only)")
    p_tools.add_argument("tool_args", nargs="*", metavar="build|path|list [NAME...]")
    p_tools.set_defaults(func=_tools)

    # Imported here, not at module level: `boutique serve` should not pay for them. A service image
    # leaves these development modules out (.dockerignore), so there only serve/catalog/tools remain.
    for module in ("runner", "dev.cluster.node", "loadgen"):  # run+certs, cluster, loadgen
        try:
            importlib.import_module(f"boutique.{module}").add_parser(sub)
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith("boutique."):
                raise  # a missing third-party package is a broken install, not an image

    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, catalog_mod.CatalogError) as exc:
        print(f"boutique {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
