"""pyproject.toml: the console script, the extras, and dependencies that cover the imports."""

import ast
import importlib
import importlib.metadata
import importlib.util
import os
import re
import sys
import tomllib

import pytest
from packaging.requirements import Requirement

from stem_tfrs import extras
from stem_tfrs.errors import MissingExtraError
from tests.cli_cases import run_here
from tests.support import REPO

PACKAGES = ("stem_tfrs", "data_prep")

#: Modules that ARE an optional part, and so import its package at module level;
#: nothing imports them at module level (their command calls `need` first).
OPTIONAL_MODULES = {
    "stem_tfrs/training/tuning.py": "tune",
    "data_prep/beam.py": "beam",
}


def normalize(name: str) -> str:
  return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def project() -> dict:
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)["project"]


def requirement_names(requirements) -> set:
  """Distributions the requirements name, self-references' extras expanded later."""
  return {normalize(Requirement(r).name) for r in requirements}


def imports(path: str):
  """(top-level name, dotted name, at module level) of every absolute import in the file.

  `from a.b import c` yields a.b and a.b.c (c may be a module, or a name in a.b).
  """
  tree = ast.parse(open(path, encoding="utf-8").read(), path)
  inside_functions = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      inside_functions.update(id(n) for n in ast.walk(node) if n is not node)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      # `from a.b import c`: a.b, and a.b.c where c is a module
      names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    else:
      continue
    for name in names:
      yield name.split(".")[0], name, id(node) not in inside_functions


def source_files():
  for package in PACKAGES:
    for directory, subdirectories, names in os.walk(os.path.join(REPO, package)):
      subdirectories[:] = [d for d in subdirectories if d != "__pycache__"]
      for name in sorted(names):
        if name.endswith(".py"):
          path = os.path.join(directory, name)
          yield os.path.relpath(path, REPO).replace(os.sep, "/"), path


def extra_closure(project: dict) -> dict:
  """Extra -> every distribution it installs: what it names, and what those require."""
  declared = project["optional-dependencies"]
  closure = {}
  for extra, requirements in declared.items():
    names = set()
    for requirement in map(Requirement, requirements):
      if normalize(requirement.name) == normalize(project["name"]):
        names |= {n for e in requirement.extras for n in requirement_names(declared[e])}
      else:
        names.add(normalize(requirement.name))
    for name in list(names):
      try:
        requires = importlib.metadata.requires(name) or []
      except importlib.metadata.PackageNotFoundError:
        continue
      names |= {normalize(Requirement(r).name) for r in requires if "extra ==" not in r}
    closure[extra] = names
  return closure


def test_the_console_script_is_the_function_main_py_calls(project):
  module, _, attribute = project["scripts"]["stem-tfrs"].partition(":")
  script = getattr(importlib.import_module(module), attribute)
  spec = importlib.util.spec_from_file_location("stem_tfrs_main_py", os.path.join(REPO, "main.py"))
  main_py = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(main_py)  # not as __main__: defines, runs nothing
  tree = ast.parse(open(os.path.join(REPO, "main.py")).read())
  [guard] = [n for n in tree.body if isinstance(n, ast.If)]
  [call] = [n.value for n in guard.body if isinstance(n, ast.Expr)]
  assert isinstance(call, ast.Call) and not call.args and not call.keywords
  assert getattr(main_py, call.func.id) is script
  installed = importlib.metadata.entry_points(group="console_scripts").select(name="stem-tfrs")
  assert [entry.value for entry in installed] == [project["scripts"]["stem-tfrs"]], (
      "the installed metadata is stale: pip install -e . again")


def test_a_missing_extra_is_one_line_and_status_1(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "keras_tuner", None)  # imports of it fail, as if absent
  result = run_here("tune", "--max_trials=1", cwd=tmp_path)
  assert result.returncode == 1
  assert result.stderr == ("error: python main.py tune needs keras_tuner, which is not "
                           "installed: pip install \"stem_tfrs[tune]\"\n")
  assert os.listdir(tmp_path) == []


def forget(monkeypatch, package: str) -> None:
  """Drops `package` and its submodules from sys.modules until the test ends, so that
  importing them imports again."""
  for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
    monkeypatch.delitem(sys.modules, name)


def test_the_grpc_client_names_the_serving_extra(monkeypatch):
  from stem_tfrs.serving.clients import GrpcClient, RestClient
  forget(monkeypatch, "tensorflow_serving")
  monkeypatch.setitem(sys.modules, "tensorflow_serving", None)
  with pytest.raises(MissingExtraError, match=r"^python main.py predict --protocol=grpc needs "
                     r"tensorflow_serving, which is not installed: pip install "
                     r"\"stem_tfrs\[serving\]\"$"):
    GrpcClient("localhost:8500", "stem")
  RestClient("localhost:8501", "stem")  # the REST client needs no extra


def test_need_lets_a_broken_install_say_its_own_error(monkeypatch):
  # A package that is there but fails to import on a dependency of its own.
  forget(monkeypatch, "tensorflow_serving.apis.prediction_service_pb2_grpc")
  monkeypatch.setitem(sys.modules, "grpc", None)
  with pytest.raises(ImportError, match="grpc") as raised:
    extras.need("tensorflow_serving.apis.prediction_service_pb2_grpc", "serving", "this")
  assert not isinstance(raised.value, MissingExtraError)


def test_the_extras_are_those_extras_py_names(project):
  assert set(project["optional-dependencies"]) == set(extras.EXTRAS)
  test_extra = extra_closure(project)["test"]
  for extra in set(extras.EXTRAS) - {"test"}:
    assert requirement_names(project["optional-dependencies"][extra]) <= test_extra, extra


def test_the_dependencies_cover_every_third_party_import(project):
  core = requirement_names(project["dependencies"])
  optional = extra_closure(project)
  owners = importlib.metadata.packages_distributions()
  local = set(PACKAGES) | set(sys.stdlib_module_names) | {"__future__"}
  problems = []
  module_level = {}  # source file -> the first-party modules it imports at module level
  for relative, path in source_files():
    for top, dotted, at_module_level in imports(path):
      if top in PACKAGES:
        if at_module_level:
          module_level.setdefault(relative, set()).add(dotted)
        continue
      if top in local:
        continue
      # Not installed here (an extra left out): its distribution by its own name.
      distributions = {normalize(d) for d in owners.get(top, [top])}
      if distributions & core:
        continue
      elif relative in OPTIONAL_MODULES:
        if not distributions & optional[OPTIONAL_MODULES[relative]]:
          problems.append(f"{relative}: imports {dotted} ({sorted(distributions)}), not in "
                          f"the {OPTIONAL_MODULES[relative]} extra")
      elif at_module_level:
        problems.append(f"{relative}: imports {dotted} ({sorted(distributions)}) at module "
                        "level, but it is no required dependency: import it with "
                        "stem_tfrs.extras.need inside the function that needs it")
      elif not any(distributions & names for names in optional.values()):
        problems.append(f"{relative}: imports {dotted} ({sorted(distributions)}), which no "
                        "dependency or extra installs")
  for optional_module in OPTIONAL_MODULES:
    name = optional_module[:-len(".py")].replace("/", ".")
    for importer, modules in module_level.items():
      if name in modules and importer != optional_module:
        problems.append(f"{importer}: imports {name} (the optional part) at module level")
  assert not problems, "\n".join(problems)


def test_tensorboard_is_required_where_tf_summary_is_written(project):
  # TensorFlow implements tf.summary (the TensorBoard callback's writer) only with
  # tensorboard installed, which it does not require: no import of ours shows it.
  writers = [relative for relative, path in source_files()
             if re.search(r"callbacks\.TensorBoard\b|tf\.summary\.",
                          open(path, encoding="utf-8").read())]
  assert writers, "nothing writes TensorBoard logs: drop tensorboard, and this test"
  assert "tensorboard" in requirement_names(project["dependencies"]), writers


def test_every_need_names_an_extra_that_installs_the_module(project):
  optional = extra_closure(project)
  owners = importlib.metadata.packages_distributions()
  calls = 0
  for relative, path in source_files():
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
      if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "need"
          and len(node.args) == 3 and all(isinstance(a, ast.Constant) for a in node.args[:2])):
        module, extra = (a.value for a in node.args[:2])
        calls += 1
        top = module.split(".")[0]
        distributions = {normalize(d) for d in owners.get(top, [top])}
        assert extra in optional, f"{relative}: need(..., {extra!r}, ...): no such extra"
        assert distributions & optional[extra], (
            f"{relative}: need({module!r}, {extra!r}): the {extra} extra does not install it")
  assert calls >= 4  # cli/tune.py, serving/clients.py (3)
