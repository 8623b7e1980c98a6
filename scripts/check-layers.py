#!/usr/bin/env python3
"""Checks that imports between the crate's modules point one way (no circles).

Each module may use only the modules listed before it: at the top, `cloud` knows no Kubernetes and
nothing of the rest; inside `controller`, each module uses only the modules above it. Every
`crate::module::...` path in a module's files is an edge (test code included); an edge that points
the wrong way is printed and the exit status is 1. With --graph, the edges are printed.

    scripts/check-layers.py [--graph]
"""

import pathlib
import re
import sys

# Lower modules first; a module may import from modules earlier in its list only.
CRATE = ["cloud", "emulator", "ops", "controller", "preview", "preflight", "cli"]
CONTROLLER = ["resources", "decision", "cache", "credentials", "reconcile", "runtime"]

PATH = re.compile(r"\bcrate::(\w+)(?:::(\w+))?")


def room_of(path):
    parts = path.relative_to("src").parts
    if parts[0] == "controller" and len(parts) > 2:
        return ("controller", parts[1])
    if parts[0] == "controller":
        return ("controller", None)
    return (parts[0].removesuffix(".rs"), None)


def main():
    edges = set()
    wrong_groups = []
    for path in sorted(pathlib.Path("src").rglob("*.rs")):
        if path.parts[1] in ("main.rs", "lib.rs", "bin"):
            continue
        source = room_of(path)
        for number, line in enumerate(path.read_text().split("\n"), 1):
            if line.lstrip().startswith("//"):
                continue
            if "crate::controller::{" in line:
                wrong_groups.append(f"{path}:{number}: import from one controller module per line")
            for top, sub in PATH.findall(line):
                target = (top, sub if top == "controller" else None)
                if target[0] != source[0] or target[1] != source[1]:
                    edges.add((source, target, str(path)))
    wrong = wrong_groups
    for (top, module), (to_top, to_module), path in sorted(edges):
        if top != to_top:
            ok = CRATE.index(to_top) < CRATE.index(top)
        else:
            ok = module is None or to_module is None or CONTROLLER.index(to_module) < CONTROLLER.index(module)
        if not ok:
            wrong.append(f"{path}: {top}/{module or ''} uses {to_top}/{to_module or ''}")
    if "--graph" in sys.argv:
        pairs = sorted({(f"{a[0]}/{a[1] or ''}", f"{b[0]}/{b[1] or ''}") for a, b, _ in edges})
        for source, target in pairs:
            print(f"{source} -> {target}")
    for line in wrong:
        print(line)
    sys.exit(1 if wrong else 0)


if __name__ == "__main__":
    main()
