#!/usr/bin/env python3
"""Lists the functions of src/ (tests excepted) longer than a limit, longest first.

A function may be longer only with its reason written above it, in a comment line that starts
with `// Length:`; with --check, any other is an error (exit 1). Functions are found as rustfmt
lays them out: the body ends at the first `}` at the indentation of `fn`. Test modules
(`#[cfg(test)] mod ... {`) are skipped, and so are the files of test modules declared with
`#[cfg(test)] mod name;`.

    scripts/long-functions.py [--limit 60] [--check] [--top N] [PATH ...]
"""

import argparse
import pathlib
import re
import sys

FN = re.compile(r"^(\s*)(pub(\([^)]*\))?\s+)?((const|async|unsafe|extern \"C\")\s+)*fn\s+(\w+)")
TEST_MODULE = re.compile(r"^(\s*)(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{")
TEST_MODULE_FILE = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?mod\s+(\w+)\s*;")


def test_module_files(paths):
    """The files of modules declared `#[cfg(test)] mod name;` in any of `paths`."""
    files = set()
    for path in paths:
        lines = path.read_text().split("\n")
        for above, line in zip(lines, lines[1:]):
            declared = TEST_MODULE_FILE.match(line)
            if above.strip() == "#[cfg(test)]" and declared:
                name = declared.group(3)
                directory = path.parent if path.name in ("mod.rs", "lib.rs", "main.rs") else path.with_suffix("")
                files.update({directory / f"{name}.rs", directory / name / "mod.rs"})
    return files


def functions(path):
    lines = path.read_text().split("\n")
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.strip() == "#[cfg(test)]" and index + 1 < len(lines):
            module = TEST_MODULE.match(lines[index + 1])
            if module:
                index = closing(lines, index + 1, module.group(1)) + 1
                continue
        found = FN.match(line)
        if found:
            indent, name = found.group(1), found.group(6)
            end = closing(lines, index, indent)
            if end is not None:
                yield name, index + 1, end - index + 1, reason_above(lines, index)
        index += 1


def closing(lines, start, indent):
    """The line of the `}` that closes what opens at `start`; None for a declaration."""
    for index in range(start, len(lines)):
        text = lines[index]
        if index == start or text.startswith(indent + " ") or not text.strip():
            if text.rstrip().endswith(";") and index == start:
                return None
            continue
        if text.rstrip() in (indent + "}", indent + "};"):
            return index
        if text.startswith(indent) and text.strip().startswith(("{", ")", "->", "where")):
            continue
        if text.startswith(indent + "}") or text.strip() == ")":
            return index
    return None


def reason_above(lines, index):
    index -= 1
    while index >= 0 and lines[index].strip().startswith(("//", "#[")):
        if lines[index].strip().startswith("// Length:"):
            return True
        index -= 1
    return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="*", default=["src"])
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--top", type=int, default=0, help="also print the N longest")
    options = parser.parse_args()
    found = []
    for root in options.paths:
        paths = sorted(pathlib.Path(root).rglob("*.rs"))
        tests = test_module_files(paths)
        for path in (path for path in paths if path not in tests):
            for name, line, length, reasoned in functions(path):
                found.append((length, f"{path}:{line}", name, reasoned))
    found.sort(reverse=True)
    for length, place, name, reasoned in found[: options.top]:
        print(f"{length:4} {place} {name}{' (reason given)' if reasoned else ''}")
    unexplained = [f for f in found if f[0] > options.limit and not f[3]]
    for length, place, name, _ in unexplained:
        print(f"{place}: fn {name} has {length} lines (limit {options.limit}) and no `// Length:` reason above it")
    if options.check and unexplained:
        sys.exit(1)


if __name__ == "__main__":
    main()
