#!/usr/bin/env python3
"""Lists Synapse's option names from its generated configuration manual.

Usage: synapse-options-extract.py SYNAPSE_SOURCE_DIR VERSION > crates/presenced-server/src/config/synapse_options.txt

SYNAPSE_SOURCE_DIR is an unpacked matrix-synapse sdist (it holds
docs/usage/configuration/config_documentation.md, which Synapse generates
from its config schema). Only names are taken: a `### `name`` heading is a
top-level option, and a `* `name` (type)` bullet under it is a sub-option,
nested by its indentation (two spaces a level). Array entries get no index:
`listeners.resources.names`.
"""
import re
import sys

# Keys Synapse reads that its manual does not list as headings or
# sub-options: legacy names its code still honours, and the `database.args`
# of SQLite, which Synapse hands on as they are: the keywords of Python's
# sqlite3.connect, and the cp_* ones of Twisted's ConnectionPool.
SQLITE_ARGS = [
    "database", "timeout", "detect_types", "isolation_level",
    "check_same_thread", "factory", "cached_statements", "uri", "autocommit",
    "cp_min", "cp_max", "cp_name", "cp_noisy", "cp_openfun", "cp_reconnect",
    "cp_good_sql",
]
READ_BUT_UNDOCUMENTED = [f"database.args.{a}" for a in SQLITE_ARGS] + [
    "experimental_features",
    "password_providers",
    "presence.presence_router",
    "spam_checker",
    "third_party_event_rules",
    "use_presence",
]

HEADING = re.compile(r"^### `([A-Za-z0-9_]+)`\s*$")
BULLET = re.compile(r"^( *)\* `([A-Za-z0-9_]+)` \(")


def main() -> None:
    source, version = sys.argv[1], sys.argv[2]
    doc = f"{source}/docs/usage/configuration/config_documentation.md"
    names = set()
    top = None
    stack = []  # (indent, name) of the enclosing bullets
    with open(doc, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                m = HEADING.match(line)
                top = m.group(1) if m else None
                stack = []
                if top:
                    names.add(top)
                continue
            m = BULLET.match(line)
            if not (m and top):
                continue
            indent = len(m.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, m.group(2)))
            names.add(".".join([top] + [n for _, n in stack]))
    names.update(READ_BUT_UNDOCUMENTED)
    print(f"# Synapse {version} option names (one per line, nested keys dotted,")
    print("# array entries without an index), extracted with")
    print("# scripts/synapse-options-extract.py from the sdist's")
    print("# docs/usage/configuration/config_documentation.md (plus the few keys")
    print("# Synapse reads without documenting them). Names only.")
    for name in sorted(names):
        print(name)


if __name__ == "__main__":
    main()
