#!/usr/bin/env python3
"""Fails, naming the cycle, when the folders of host/ include each other in a
circle.  Each folder is one area of libserpens; an `#include "area/..."` in a
file of another folder is an edge from that folder to `area`.  Dependencies
must run one way, so the edges form a DAG.  With --readme FILE it also fails
when the graph FILE draws (`area ──► other ...` lines) or its folder table
(`host/area` rows) is not the code's."""

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


ARROW = '──►'


def drawn_graph(readme: str) -> dict[str, set[str]]:
    """The graph the README draws: every `area ──► a b c` (several per line),
    and areas named on a line without an arrow, which include nothing."""
    drawn: dict[str, set[str]] = {}
    for line in readme.splitlines():
        tokens = line.split()
        if ARROW not in tokens:
            continue
        i = 0
        while i < len(tokens):
            if i + 1 < len(tokens) and tokens[i + 1] == ARROW:
                source = tokens[i]
                drawn.setdefault(source, set())
                i += 2
                while i < len(tokens) and not (i + 1 < len(tokens) and tokens[i + 1] == ARROW):
                    drawn[source].add(tokens[i])
                    i += 1
            else:
                i += 1
    for line in readme.splitlines():
        if '(include no other folder)' in line:
            for name in line.split('(')[0].replace(',', ' ').split():
                drawn.setdefault(name, set())
    return drawn


def readme_mismatches(graph: dict[str, dict[str, list[str]]], readme: str) -> list[str]:
    drawn = drawn_graph(readme)
    problems = []
    for area in sorted(set(graph) | set(drawn)):
        actual = set(graph.get(area, {}))
        claimed = drawn.get(area)
        if area not in graph:
            problems.append(f'the README draws {area}, which is no folder of host/')
        elif claimed is None:
            problems.append(f'the README does not draw {area} (it includes {", ".join(sorted(actual)) or "nothing"})')
        else:
            for missing in sorted(actual - claimed):
                problems.append(f'{area} includes {missing} ({graph[area][missing][0]}), the README does not say so')
            for extra in sorted(claimed - actual):
                problems.append(f'the README says {area} includes {extra}; it does not')
        if area in graph and f'`host/{area}`' not in readme:
            problems.append(f'the README\'s folder table has no row for host/{area}')
    return problems


def main() -> int:
    args = sys.argv[1:]
    readme = None
    if len(args) >= 2 and args[0] == '--readme':
        readme = pathlib.Path(args[1]).read_text(encoding='utf-8')
        args = args[2:]
    host = pathlib.Path(args[0]) if args else pathlib.Path(__file__).resolve().parents[2] / 'host'
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
    if readme is not None:
        problems = readme_mismatches(graph, readme)
        for problem in problems:
            print(f'include-cycles: {problem}', file=sys.stderr)
        if problems:
            return 1
    edges = sum(len(targets) for targets in graph.values())
    print(f'include-cycles: {len(graph)} areas, {edges} edges, no cycle')
    for area in sorted(graph):
        print(f'  {area} -> {", ".join(sorted(graph[area])) or "(nothing)"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
