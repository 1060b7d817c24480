#!/usr/bin/env python3
"""Fails, naming the cycle, when the folders of host/ include each other in a
circle.  Each folder is one area of libserpens; an `#include "area/..."` in a
file of another folder is an edge from that folder to `area`.  Dependencies
must run one way (README.md draws the graph), so the edges form a DAG."""

import pathlib
import re
import sys

INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([A-Za-z0-9_]+)/[^"]+"', re.MULTILINE)


def area_graph(host: pathlib.Path) -> dict[str, dict[str, list[str]]]:
    """area -> {included area -> ["file:line", ...] that include it}"""
    areas = sorted(p.name for p in host.iterdir() if p.is_dir())
    graph: dict[str, dict[str, list[str]]] = {a: {} for a in areas}
    for area in areas:
        for path in sorted((host / area).rglob('*')):
            if path.suffix not in ('.h', '.hpp', '.cpp', '.cc', '.c', '.def', '.inc'):
                continue
            text = path.read_text(encoding='utf-8', errors='replace')
            for match in INCLUDE.finditer(text):
                target = match.group(1)
                if target == area or target not in graph:
                    continue
                line = text.count('\n', 0, match.start()) + 1
                where = f'{path.relative_to(host.parent)}:{line}'
                graph[area].setdefault(target, []).append(where)
    return graph


def find_cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Every elementary cycle found by depth-first search from each area,
    reported once, starting at its alphabetically first area."""
    cycles: set[tuple[str, ...]] = set()

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in graph[node]:
            if nxt == start:
                cycles.add(tuple(path))
            elif nxt not in path and nxt > start:
                walk(start, nxt, path + [nxt])

    for start in sorted(graph):
        walk(start, start, [start])
    return sorted(list(c) for c in cycles)


def main() -> int:
    host = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parents[2] / 'host'
    graph = area_graph(host)
    if not graph:
        print(f'include-cycles: no folders under {host}', file=sys.stderr)
        return 1
    cycles = find_cycles(graph)
    for cycle in cycles:
        print('include-cycles: cycle ' + ' -> '.join(cycle + [cycle[0]]), file=sys.stderr)
        for a, b in zip(cycle, cycle[1:] + [cycle[0]]):
            print(f'  {a} -> {b}: {", ".join(graph[a][b])}', file=sys.stderr)
    if cycles:
        return 1
    edges = sum(len(targets) for targets in graph.values())
    print(f'include-cycles: {len(graph)} areas, {edges} edges, no cycle')
    for area in sorted(graph):
        print(f'  {area} -> {", ".join(sorted(graph[area])) or "(nothing)"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
