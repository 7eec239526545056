"""Generate the Python stubs for protos/demo.proto into services/boutique/proto.

The stubs are committed so the service image needs no build tools; the test
tests/unit/test_protos.py regenerates them into a temporary directory and fails
when the committed files differ from what grpcio-tools produces.

Usage: python scripts/gen_protos.py [OUTPUT_DIR]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos"
DEFAULT_OUT = ROOT / "services" / "boutique" / "proto"


def generate(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(PROTO_DIR / "demo.proto"),
        ]
    )
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    grpc_file = out_dir / "demo_pb2_grpc.py"
    text = grpc_file.read_text()
    # protoc writes an absolute import; the stubs live inside a package.
    text = re.sub(r"^import demo_pb2 as demo__pb2$", "from . import demo_pb2 as demo__pb2", text, flags=re.M)
    grpc_file.write_text(text)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
