#!/usr/bin/env python3
"""Import circles between the source files of src/ (a file's own `#[cfg(test)]` module is ignored;
a mod.rs and the files of its own folder may refer to each other)."""
import os, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else 'src'
files = {}
for d, _, fs in os.walk(root):
    for f in fs:
        if f.endswith('.rs'):
            p = os.path.join(d, f); rel = os.path.relpath(p, root)[:-3].split(os.sep)
            if rel[-1] == 'mod': rel = rel[:-1]
            if rel in (['lib'], ['main']): rel = []
            files[tuple(rel)] = p
def resolve(path):
    # longest prefix that is a file module
    for n in range(len(path), -1, -1):
        if tuple(path[:n]) in files: return tuple(path[:n])
    return None
edges = {m: set() for m in files}
for mod, p in files.items():
    text = open(p).read()
    text = re.split(r'#\[cfg\(test\)\]\s*mod tests', text)[0]
    is_dir = p.endswith('mod.rs') or p.endswith('lib.rs')
    parent = mod if is_dir else mod[:-1]
    for m in re.finditer(r'\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)', text):
        segs = m.group(2).split('::')[1:]
        base = [] if m.group(1) == 'crate' else list(parent[:-1] if is_dir else parent)
        # braces: use super::{a, b}
        tail = text[m.end():m.end()+200]
        targets = [base + segs]
        if tail.startswith('::{'):
            inner = tail[3:tail.find('}')]
            targets = [base + segs + [x.strip().split('::')[0]] for x in inner.split(',') if x.strip() and x.strip() != 'self']
        for t in targets:
            r = resolve(t)
            if r is None or r == mod: continue
            # parent/child within one folder: allowed
            if r == mod[:len(r)] or mod == r[:len(mod)]: continue
            edges[mod].add(r)
# Tarjan SCC
index = {}; low = {}; stack = []; on = set(); sccs = []; c = [0]
def strong(v):
    index[v] = low[v] = c[0]; c[0] += 1; stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index: strong(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(comp)
sys.setrecursionlimit(10000)
for v in edges:
    if v not in index: strong(v)
for comp in sccs:
    print('circle:', ' <-> '.join('::'.join(m) or 'crate' for m in sorted(comp)))
bad = [(a, b) for a in edges for b in edges[a] if a[:1] == ('controller',) and b[:1] == ('tls',)]
for a, b in bad: print('controller imports tls:', '::'.join(a), '->', '::'.join(b))
# mcp stands alone: the caller passes TLS in and maps its own transport setting.
alone = [(a, b) for a in edges for b in edges[a] if a[:1] == ('mcp',) and b[:1] != ('mcp',)]
for a, b in alone: print('mcp imports outside itself:', '::'.join(a), '->', '::'.join(b))
sys.exit(1 if sccs or bad or alone else 0)
