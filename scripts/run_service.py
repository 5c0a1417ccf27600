"""Run the whole service locally: tritonserver (CPU) first, then the edge on port 8000.

    python -m scripts.run_service        # Ctrl-C stops both

Edge settings come from EDGE_* environment variables (see docs/OPERATIONS.md); the edge is
pointed at this Triton unless EDGE_TRITON_URL/TRITON_URL says otherwise.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from scripts.cli import MODEL_REPOSITORY, parser, setup_logging
from scripts.launch import running_edge
from scripts.serve_triton import Ports, TritonServer, stop_on_sigterm

logger = logging.getLogger(__name__)

DEFAULT_EDGE_PORT = 8000


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    p = parser(__doc__)
    p.add_argument("--model-repository", type=Path, default=MODEL_REPOSITORY)
    args = p.parse_args(argv)
    ports = Ports()
    triton_url = os.environ.get("EDGE_TRITON_URL") or os.environ.get("TRITON_URL") or f"localhost:{ports.grpc}"
    port = int(os.environ.get("EDGE_PORT", DEFAULT_EDGE_PORT))
    stop_on_sigterm()
    try:
        with TritonServer(args.model_repository, ports), \
                running_edge(port, triton_url, host=os.environ.get("EDGE_HOST", "0.0.0.0")) as edge:
            print(f"Service up: ws://localhost:{port}/ws/audio (Triton gRPC {triton_url}). Ctrl-C stops it.",
                  flush=True)
            return edge.process.wait()
    except KeyboardInterrupt:
        logger.info("stopped edge and tritonserver")
        return 0


if __name__ == "__main__":
    sys.exit(main())
