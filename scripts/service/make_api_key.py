"""Make a new edge API key: print the key (give it to the client, once) and the line that
accepts it (add it to EDGE_API_KEYS_FILE or EDGE_API_KEY_HASHES; docs/SECURITY.md).

    python -m scripts.service.make_api_key NAME [--append keys.txt]

NAME identifies the client in logs and in the per-key session limit; the edge never stores the
key itself, only its SHA-256 hash.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from edge.auth import key_line, new_api_key
from scripts.cli import parser

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
"""Key names: one word, as the keys file separates fields with spaces."""


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("name", help="who the key is for (letters, digits, _ . @ -)")
    p.add_argument("--append", type=Path, metavar="FILE", help="append the hash line to this keys file")
    args = p.parse_args(argv)
    if not NAME_PATTERN.match(args.name):
        p.error(f"{args.name!r}: use 1 to 64 letters, digits, '_', '.', '@' or '-'")
    key = new_api_key()
    line = key_line(args.name, key)
    if args.append:
        with args.append.open("a") as keys:
            keys.write(line + "\n")
        print(f"appended to {args.append}: {line}", file=sys.stderr)
    else:
        print(f"hash line (for the keys file): {line}", file=sys.stderr)
    print(key)  # stdout carries the key alone, for scripts: key=$(python -m scripts.service.make_api_key NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
