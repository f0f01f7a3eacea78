"""The modules of stem_tfrs and data_prep import each other without a cycle.

The graph is read from the source (`ast`): an edge for every import of a package module made
when a module loads (imports inside functions run later and are left out), with
`from package import name` counted as an import of `package.name` when that is a module,
and of `package` itself unless it is one of the importing module's own packages (those are
loading already). A package's `__init__` is a node of its own.
"""

import ast
import os
from typing import Dict, List, Set

from tests.support import REPO

PACKAGES = ("stem_tfrs", "data_prep")


def _modules() -> Dict[str, str]:
  """Module name -> file, for every module of PACKAGES."""
  found = {}
  for package in PACKAGES:
    for directory, _, names in os.walk(os.path.join(REPO, package)):
      for name in names:
        if name.endswith(".py"):
          path = os.path.join(directory, name)
          parts = os.path.relpath(path, REPO)[:-3].split(os.sep)
          if parts[-1] == "__init__":
            parts = parts[:-1]
          found[".".join(parts)] = path
  return found


def _load_time_imports(tree: ast.Module) -> List[ast.stmt]:
  """The import statements that run when the module loads (not those inside functions)."""
  statements, pending = [], list(tree.body)
  while pending:
    node = pending.pop()
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      statements.append(node)
    elif isinstance(node, (ast.If, ast.Try, ast.With, ast.ClassDef)):
      for field in ("body", "orelse", "finalbody", "handlers"):
        for child in getattr(node, field, []):
          pending.extend(child.body if isinstance(child, ast.ExceptHandler) else [child])
  return statements


def import_graph() -> Dict[str, Set[str]]:
  modules = _modules()
  graph = {name: set() for name in modules}
  for name, path in modules.items():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), path)
    for node in _load_time_imports(tree):
      targets = []
      if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
      elif node.module and node.level == 0:
        targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
      for target in targets:
        # A module's own packages are already loading when it runs: `from package import
        # sibling` (as stem_tfrs/cli/*.py do) needs only the sibling.
        if target in modules and target != name and not name.startswith(target + "."):
          graph[name].add(target)
  return graph


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
  """A cycle of `graph` as the list of its nodes, or [] when there is none."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph[node]):
      if state.get(nxt) == "open":
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        cycle = visit(nxt)
        if cycle:
          return cycle
    state[node] = "done"
    stack.pop()
    return []

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node)
      if cycle:
        return cycle
  return []


def test_no_import_cycle_among_the_modules():
  graph = import_graph()
  assert len(graph) > 40 and graph["stem_tfrs.training.trainer"], "the graph was not read"
  assert find_cycle(graph) == []


def test_find_cycle_finds_one():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": set()}) == []
