#!/usr/bin/env python3
"""Generate each Lambda function's least-privilege IAM policy from the code.

    python3 dev.py policies                          write the files below
    python3 scripts/generate_policies.py --check     exit 1 when a committed file is stale
    python3 scripts/generate_policies.py --explain   print where each action comes from

Chalice's policy autogen reads only ``app.py`` (aws/chalice#810), and sfn-pauser
makes all of its AWS calls in ``chalicelib/``, so ``chalice deploy`` would grant
logs and nothing else. This script finds the calls itself and writes:

- ``.chalice/policy-<stage>-<function>.json``: one policy per stage in
  ``.chalice/config.json`` and per function that ``app.py`` deploys (``pauser``,
  ``resumer``, ``sweep``, and ``api_handler``, the REST API);
- the policy keys of ``.chalice/config.json``: ``"autogen_policy": false`` and
  each function's ``"iam_policy_file"``. No other key is touched;
- ``Mappings.Stages`` of ``.chalice/resources.json`` (each stage's bucket, its
  quarantine and audit prefixes, and the function names) and the allowed values of
  its ``Stage`` parameter, so that the merge template creates the bucket and names
  the functions exactly as the stage's configuration and policies expect;
- the prod policies, in full, in the marked section of ``docs/deploy.md``.

Finding the calls (static analysis: app.py and chalicelib/ are parsed, never run)

1. Entry points. Every function in app.py with an ``@app.…`` Chalice decorator. The
   ``@app.route`` views together are one function, ``api_handler``. The others take
   the decorator's ``name=``, or the function's own name, as Chalice does. Each
   module's top-level code runs at import in every function, so it is walked too.
2. The call graph is walked from each entry point. Calls are resolved by a small
   type inference: parameter and return annotations, ``self.x = …`` in a class,
   dataclass fields, local assignments (all of a function's, in any order), and for
   a constructor parameter typed ``Any`` (``TokenStore(s3: Any)``) the arguments
   given wherever the class is constructed (``TokenStore(clients.s3(), …)``). A
   nested function or a lambda belongs to the function it is written in, and a
   method that is passed on rather than called (``pool.submit(self._resume_one)``)
   counts as called.
3. A literal argument is followed into the callee, and an ``if`` on a parameter
   bound to a literal ``True``/``False`` (or on a field of a frozen dataclass built
   from literals) walks only the branch taken. The sweep lifts maintenance with
   ``SwitchMaintenance.turn(machine, False, …)``: it gets UntagResource and not
   TagResource. Nothing else is pruned: a branch on configuration (for example
   HeartbeatHeldTasks) stays in, so a configuration change never needs a new policy.
4. boto3, as in ``chalice.analyzer``: ``boto3.client(name)`` and
   ``boto3.session.Session().client(name)`` make a client. A function that passes one
   of its parameters on as the service name (``AwsClients._client``) is a client
   factory, and calling it with a literal makes that service's client.
   ``client.get_paginator("op").paginate()`` is the call ``op``.
5. Actions. The calls, in ``chalice.analyzer``'s ``{service: {method}}`` form, go to
   ``chalice.policy.PolicyBuilder``, which maps each method through botocore to its
   IAM action with Chalice's own tables. Those tables lack two of our calls, added
   here: DeleteObjects is authorised as s3:DeleteObject, and Invoke is
   lambda:InvokeFunction. S3 conditional writes and deletes (IfNoneMatch, IfMatch)
   need no action of their own.
6. Conservative by refusal. If a reachable call has the name of an operation of a
   service the app uses but could not be typed as a client call, or the service is
   unknown, or an action has no scoping rule below, the script stops with an error
   instead of writing a policy that may be short. ``--explain`` prints any call that
   was resolved by method name alone (a call on an injected object of unknown type
   goes to every chalicelib method of that name).

Scoping, from each stage's ``environment_variables`` (Chalice's merge of the
top-level, stage and function settings), read with the app's own rules
(``normalise_prefix``, ``Settings``, ``TokenStore.control_key``), which are imported:

- S3 object actions: ``arn:aws:s3:::{Bucket}/{Prefix}*``. ``s3:ListBucket``: the
  bucket, with the condition ``s3:prefix`` like ``{Prefix}*`` (none when Prefix is
  empty).
- Step Functions actions on a state machine: ``arn:aws:states:*:*:stateMachine:*``,
  or the ``AllowedStateMachines`` ARN patterns when that is not ``*`` (IAM's ``*`` and
  ``?`` wildcards are the app's).
  SendTaskSuccess/Failure/Heartbeat act on a task token, which IAM can only name as
  ``"*"``.
- ``states:DescribeExecution``: the executions of those machines
  (``arn:aws:states:*:*:execution:*:*``, or each pattern's ``:execution:{Name}:*``).
- ``lambda:InvokeFunction``: only the resumer (``ResumerFunctionName``), the one
  function sfn-pauser invokes, to continue a drain. Without ResumerFunctionName the
  app never invokes, and the statement is left out.
- CloudWatch Logs: each function's own log group, ``/aws/lambda/<function name>``
  (``sfn-pauser-<stage>-<name>``; the REST API's handler is ``sfn-pauser-<stage>``).

The files are deterministic (sorted, fixed Sids), so a stale one shows as a diff.
"""

import argparse
import ast
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.session
from chalice.config import Config
from chalice.policy import PolicyBuilder, load_api_policy_actions, load_custom_policy_actions

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The app's own layout rules, imported once the project is on the path.
from chalicelib.config import Settings, normalise_prefix  # noqa: E402
from chalicelib.errors import ConfigurationError  # noqa: E402
from chalicelib.store import TokenStore  # noqa: E402

CONFIG = Path(".chalice") / "config.json"
RESOURCES = Path(".chalice") / "resources.json"
DOCS = Path("docs") / "deploy.md"
DOCS_STAGE = "prod"
DOCS_BEGIN = "<!-- BEGIN generated policies: python3 dev.py policies writes this section -->"
DOCS_END = "<!-- END generated policies -->"
POLICY_VERSION = "2012-10-17"
API_HANDLER = "api_handler"
CHALICE_EVENT_DECORATORS = {
    "lambda_function",
    "schedule",
    "on_s3_event",
    "on_sns_message",
    "on_sqs_message",
    "on_cw_event",
    "on_dynamodb_record",
    "on_kinesis_record",
}

# Calls Chalice's tables (chalice/policies.json) do not map.
EXTRA_API_ACTIONS = {
    "s3": {"DeleteObjects": "s3:DeleteObject"},
    "lambda": {"Invoke": "lambda:InvokeFunction"},
}
# Client methods that make no request.
LOCAL_CLIENT_METHODS = {"can_paginate", "close", "get_paginator"}

S3_OBJECT_ACTIONS = {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"}
S3_BUCKET_ACTIONS = {"s3:ListBucket"}
STATE_MACHINE_ACTIONS = {
    "states:DescribeStateMachine",
    "states:ListTagsForResource",
    "states:TagResource",
    "states:UntagResource",
}
TASK_TOKEN_ACTIONS = {"states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"}
EXECUTION_ACTIONS = {"states:DescribeExecution"}
INVOKE_ACTIONS = {"lambda:InvokeFunction"}
LOGS_ACTIONS = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
ALL_STATE_MACHINES = "arn:aws:states:*:*:stateMachine:*"

Atom = tuple[Any, ...]
Types = frozenset[Atom]
NOTHING: Types = frozenset()


class GenerationError(Exception):
    """The code holds a call this script cannot turn into a scoped policy safely."""


# Loading the code ---------------------------------------------------------------------------


@dataclass
class Function:
    qual: str
    node: ast.FunctionDef | ast.AsyncFunctionDef
    module: "Module"
    klass: "Klass | None" = None

    @property
    def decorators(self) -> set[str]:
        names = set()
        for decorator in self.node.decorator_list:
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            if isinstance(target, ast.Name):
                names.add(target.id)
            elif isinstance(target, ast.Attribute):
                names.add(target.attr)
        return names

    @property
    def positional(self) -> list[str]:
        args = self.node.args
        return [arg.arg for arg in (*args.posonlyargs, *args.args)]

    @property
    def self_kind(self) -> str | None:
        """'inst' or 'cls' when the first parameter is the instance or the class."""
        if self.klass is None or "staticmethod" in self.decorators or not self.positional:
            return None
        return "cls" if "classmethod" in self.decorators else "inst"


@dataclass
class Klass:
    qual: str
    node: ast.ClassDef
    module: "Module"
    methods: dict[str, Function] = field(default_factory=dict)

    @property
    def is_dataclass(self) -> bool:
        return any(
            (isinstance(d, ast.Name) and d.id == "dataclass")
            or (isinstance(d, ast.Call) and isinstance(d.func, ast.Name) and d.func.id == "dataclass")
            for d in self.node.decorator_list
        )

    @property
    def is_frozen_dataclass(self) -> bool:
        return any(
            isinstance(d, ast.Call)
            and isinstance(d.func, ast.Name)
            and d.func.id == "dataclass"
            and any(k.arg == "frozen" and isinstance(k.value, ast.Constant) and k.value.value for k in d.keywords)
            for d in self.node.decorator_list
        )

    @property
    def fields(self) -> dict[str, ast.expr]:
        return {
            stmt.target.id: stmt.annotation
            for stmt in self.node.body
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
        }


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    imports: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    functions: dict[str, Function] = field(default_factory=dict)
    classes: dict[str, Klass] = field(default_factory=dict)
    assigned: dict[str, list[ast.expr]] = field(default_factory=dict)


def load_modules(root: Path) -> dict[str, Module]:
    paths = {"app": root / "app.py"}
    for path in sorted((root / "chalicelib").glob("*.py")):
        paths["chalicelib" if path.stem == "__init__" else f"chalicelib.{path.stem}"] = path
    modules = {}
    for name, path in paths.items():
        module = Module(name, path, ast.parse(path.read_text(), str(path)))
        for stmt in module.tree.body:
            if isinstance(stmt, ast.Import):
                for alias in stmt.names:
                    module.imports[alias.asname or alias.name.split(".")[0]] = (
                        alias.name if alias.asname else alias.name.split(".")[0],
                        None,
                    )
            elif isinstance(stmt, ast.ImportFrom):
                source = f"chalicelib.{stmt.module}" if stmt.level and stmt.module else stmt.module or "chalicelib"
                for alias in stmt.names:
                    module.imports[alias.asname or alias.name] = (source, alias.name)
            elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                module.functions[stmt.name] = Function(f"{name}.{stmt.name}", stmt, module)
            elif isinstance(stmt, ast.ClassDef):
                klass = Klass(f"{name}.{stmt.name}", stmt, module)
                for item in stmt.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                        klass.methods[item.name] = Function(f"{klass.qual}.{item.name}", item, module, klass)
                module.classes[stmt.name] = klass
            elif isinstance(stmt, ast.Assign):
                for target in stmt.targets:
                    if isinstance(target, ast.Name):
                        module.assigned.setdefault(target.id, []).append(stmt.value)
            elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value:
                module.assigned.setdefault(stmt.target.id, []).append(stmt.value)
        modules[name] = module
    return modules


# Scopes and type inference ------------------------------------------------------------------


def _own_nodes(body: Iterable[ast.AST]) -> Iterator[ast.AST]:
    """Every node of a body that belongs to its scope (not to nested functions or classes)."""
    stack = list(body)
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef | ast.comprehension
            ):
                stack.append(child)


def _bound_names(target: ast.AST) -> Iterator[str]:
    for node in ast.walk(target):
        if isinstance(node, ast.Name):
            yield node.id


class Scope:
    """A function's (or a lambda's, or a module's) names, and the literals bound to its parameters."""

    def __init__(
        self,
        module: Module,
        node: ast.AST,
        function: Function | None = None,
        parent: "Scope | None" = None,
        env: dict[str, Atom] | None = None,
    ) -> None:
        self.module = module
        self.node = node
        self.function = function
        self.parent = parent
        self.env = env or {}
        self.params: dict[str, ast.expr | None] = {}
        self.locals: dict[str, list[ast.expr]] = {}
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            args = node.args
            for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
                if arg is not None:
                    self.params[arg.arg] = arg.annotation
            body = node.body if isinstance(node.body, list) else [node.body]
        else:
            body = []
        for item in _own_nodes(body):
            if isinstance(item, ast.Assign):
                for target in item.targets:
                    values = [item.value] if isinstance(target, ast.Name) else []
                    for name in _bound_names(target):
                        self.locals.setdefault(name, []).extend(values)
            elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                self.locals.setdefault(item.target.id, []).extend([item.value] if item.value else [])
            elif isinstance(item, ast.NamedExpr):
                self.locals.setdefault(item.target.id, []).append(item.value)
            elif isinstance(item, ast.AugAssign | ast.For | ast.AsyncFor):
                for name in _bound_names(item.target):
                    self.locals.setdefault(name, [])
            elif isinstance(item, ast.withitem) and item.optional_vars is not None:
                for name in _bound_names(item.optional_vars):
                    self.locals.setdefault(name, [])
            elif isinstance(item, ast.ExceptHandler | ast.FunctionDef | ast.AsyncFunctionDef) and item.name:
                self.locals.setdefault(item.name, [])


class Analysis:
    """The call graph of app.py and chalicelib/, and the AWS calls reachable from each entry point."""

    def __init__(self, root: Path) -> None:
        self.modules = load_modules(root)
        self.functions: dict[str, Function] = {}
        self.classes: dict[str, Klass] = {}
        for module in self.modules.values():
            for function in module.functions.values():
                self.functions[function.qual] = function
            for klass in module.classes.values():
                self.classes[klass.qual] = klass
                for method in klass.methods.values():
                    self.functions[method.qual] = method
        self.method_names: dict[str, list[str]] = {}
        for klass in self.classes.values():
            for name, method in klass.methods.items():
                self.method_names.setdefault(name, []).append(method.qual)
        self._scopes: dict[tuple[str, frozenset[tuple[str, Atom]]], Scope] = {}
        self._nested: dict[tuple[int, int], Scope] = {}
        self._memo: dict[Any, Types] = {}
        self._previous: dict[Any, Types] = {}
        self._in_progress: set[Any] = set()
        self._all_calls: list[tuple[ast.Call, Scope]] | None = None
        self.services: set[str] = set()

    # Scopes

    def scope(self, qual: str, env: dict[str, Atom] | None = None) -> Scope:
        key = (qual, frozenset((env or {}).items()))
        if key not in self._scopes:
            function = self.functions[qual]
            self._scopes[key] = Scope(function.module, function.node, function, env=env)
        return self._scopes[key]

    def nested_scope(self, parent: Scope, node: ast.AST) -> Scope:
        """A nested function's or a lambda's scope; kept, so that memoised lookups stay valid."""
        key = (id(parent), id(node))
        if key not in self._nested:
            self._nested[key] = Scope(parent.module, node, parent=parent)
        return self._nested[key]

    def module_scope(self, module: Module) -> Scope:
        key = (module.name, frozenset())
        if key not in self._scopes:
            self._scopes[key] = Scope(module, module.tree)
        return self._scopes[key]

    # Memoised evaluation with a guard against cycles (a cycle contributes nothing)

    def _cached(self, key: Any, compute: Callable[[], Types]) -> Types:
        if key in self._memo:
            return self._memo[key]
        if key in self._in_progress:
            # A cycle: use what the previous round found (see ``rounds``).
            return self._previous.get(key, NOTHING)
        self._in_progress.add(key)
        try:
            self._memo[key] = compute()
        finally:
            self._in_progress.discard(key)
        return self._memo[key]

    def rounds(self, work: Callable[[], Any]) -> Any:
        """Run ``work`` until the types it needed stop growing (a fixpoint).

        A value needed while it is being computed (a cycle) is taken from the
        previous round, so each round knows at least as much as the last; types
        only grow and are finite, so this ends.
        """
        while True:
            self._memo = {}
            result = work()
            if self._memo == self._previous:
                return result
            self._previous = self._memo

    # Names

    def lookup(self, name: str, scope: Scope) -> Types:
        return self._cached(("name", id(scope), name), lambda: self._lookup(name, scope))

    def _lookup(self, name: str, scope: Scope) -> Types:
        if name in scope.env and name not in scope.locals:
            return frozenset({scope.env[name]})
        if name in scope.params:
            return self._param(name, scope) | self._locals(name, scope)
        if name in scope.locals:
            return self._locals(name, scope)
        if scope.parent is not None:
            return self.lookup(name, scope.parent)
        return self.module_lookup(scope.module, name)

    def _locals(self, name: str, scope: Scope) -> Types:
        return frozenset().union(*(self.evaluate(value, scope) for value in scope.locals.get(name, [])))

    def _param(self, name: str, scope: Scope) -> Types:
        function = scope.function
        if function is not None and function.node is scope.node:
            if function.positional and name == function.positional[0] and function.self_kind:
                assert function.klass is not None
                return frozenset({(function.self_kind, function.klass.qual)})
            annotated = self.annotation(scope.params[name], function.module)
            if annotated:
                return annotated
            if function.klass is not None and function.node.name == "__init__":
                return self._constructor_arguments(function.klass, name, function)
            return NOTHING
        return self.annotation(scope.params.get(name), scope.module)

    def module_lookup(self, module: Module, name: str) -> Types:
        if name in module.functions:
            return frozenset({("func", module.functions[name].qual, False)})
        if name in module.classes:
            return frozenset({("cls", module.classes[name].qual)})
        if name in module.imports:
            source, symbol = module.imports[name]
            if symbol is None:
                if source == "boto3":
                    return frozenset({("boto3",)})
                return frozenset({("module", source)}) if source in self.modules else NOTHING
            if source == "boto3" and symbol == "client":
                return frozenset({("make_client",)})
            if source in ("boto3", "boto3.session") and symbol == "Session":
                return frozenset({("Session",)})
            if source in self.modules:
                return self._cached(
                    ("import", source, symbol), lambda: self.module_lookup(self.modules[source], symbol)
                )
            return NOTHING
        if name in module.assigned:
            scope = self.module_scope(module)
            return frozenset().union(*(self.evaluate(value, scope) for value in module.assigned[name]))
        return NOTHING

    # Annotations

    def annotation(self, node: ast.expr | None, module: Module) -> Types:
        if node is None:
            return NOTHING
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:
                return self.annotation(ast.parse(node.value, mode="eval").body, module)
            except SyntaxError:
                return NOTHING
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return self.annotation(node.left, module) | self.annotation(node.right, module)
        if isinstance(node, ast.Subscript):
            outer = node.value.id if isinstance(node.value, ast.Name) else getattr(node.value, "attr", "")
            if outer in ("Optional", "Union"):
                parts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
                return frozenset().union(*(self.annotation(part, module) for part in parts))
            return NOTHING
        if isinstance(node, ast.Name | ast.Attribute):
            found = self.evaluate(node, self.module_scope(module))
            return frozenset(("inst", atom[1]) for atom in found if atom[0] == "cls")
        return NOTHING

    # Expressions

    def evaluate(self, node: ast.expr | None, scope: Scope) -> Types:
        if node is None:
            return NOTHING
        if isinstance(node, ast.Constant):
            return frozenset({("const", node.value)}) if isinstance(node.value, str | bool | int) else NOTHING
        if isinstance(node, ast.Name):
            return self.lookup(node.id, scope)
        if isinstance(node, ast.Attribute):
            return frozenset().union(*(self.attribute(atom, node.attr) for atom in self.evaluate(node.value, scope)))
        if isinstance(node, ast.Call):
            return frozenset().union(*(self.call_result(atom, node, scope) for atom in self.evaluate(node.func, scope)))
        if isinstance(node, ast.BoolOp):
            return frozenset().union(*(self.evaluate(value, scope) for value in node.values))
        if isinstance(node, ast.IfExp):
            return self.evaluate(node.body, scope) | self.evaluate(node.orelse, scope)
        if isinstance(node, ast.NamedExpr):
            return self.evaluate(node.value, scope)
        return NOTHING

    def member(self, klass: Klass, name: str) -> Function | None:
        for candidate in self.mro(klass):
            if name in candidate.methods:
                return candidate.methods[name]
        return None

    def mro(self, klass: Klass) -> Iterator[Klass]:
        yield klass
        for base in klass.node.bases:
            for atom in self.evaluate(base, self.module_scope(klass.module)):
                if atom[0] == "cls":
                    yield from self.mro(self.classes[atom[1]])

    def attribute(self, atom: Atom, name: str) -> Types:
        kind = atom[0]
        if kind == "inst" and len(atom) == 3 and name in dict(atom[2]):
            return frozenset({("const", dict(atom[2])[name])})
        if kind in ("inst", "cls"):
            klass = self.classes[atom[1]]
            method = self.member(klass, name)
            if method is not None:
                if kind == "inst" and "property" in method.decorators:
                    return self.returns(method.qual)
                bound = method.self_kind is not None and (kind == "inst" or method.self_kind == "cls")
                return frozenset({("func", method.qual, bound)})
            return self.instance_attribute(klass, name) if kind == "inst" else NOTHING
        if kind == "module":
            return self.module_lookup(self.modules[atom[1]], name)
        if kind == "boto3":
            return {
                "client": frozenset({("make_client",)}),
                "session": frozenset({("boto3.session",)}),
                "Session": frozenset({("Session",)}),
            }.get(name, NOTHING)
        if kind == "boto3.session" and name == "Session":
            return frozenset({("Session",)})
        if kind == "session" and name == "client":
            return frozenset({("make_client",)})
        if kind == "client":
            if name == "get_paginator":
                return frozenset({("get_paginator", atom[1])})
            return frozenset({("method", atom[1], name)})
        if kind == "paginator" and name == "paginate":
            return frozenset({("paginate", atom[1], atom[2])})
        return NOTHING

    def call_result(self, atom: Atom, call: ast.Call, scope: Scope) -> Types:
        kind = atom[0]
        if kind == "func":
            return self.return_type(atom[1], atom[2], call, scope)
        if kind == "cls":
            return frozenset({self._constructed(self.classes[atom[1]], call, scope)})
        if kind == "Session":
            return frozenset({("session",)})
        if kind == "make_client":
            argument = call.args[0] if call.args else _keyword(call, "service_name")
            names = _strings(self.evaluate(argument, scope))
            self.services.update(names)
            return frozenset(("client", name) for name in names) or frozenset({("client", "?")})
        if kind == "get_paginator":
            argument = call.args[0] if call.args else _keyword(call, "operation_name")
            names = _strings(self.evaluate(argument, scope))
            return frozenset(("paginator", atom[1], name) for name in names) or frozenset({("paginator", atom[1], "?")})
        return NOTHING

    def _constructed(self, klass: Klass, call: ast.Call, scope: Scope) -> Atom:
        """An instance; for a frozen dataclass, with the fields the call sets to literals."""
        if not klass.is_frozen_dataclass:
            return ("inst", klass.qual)
        names = list(klass.fields)
        plain = [arg for arg in call.args if not isinstance(arg, ast.Starred)]
        given = {**dict(zip(names, plain, strict=False)), **{k.arg: k.value for k in call.keywords if k.arg}}
        literals = {}
        for name, argument in given.items():
            found = self.evaluate(argument, scope)
            if len(found) == 1 and next(iter(found))[0] == "const":
                literals[name] = next(iter(found))[1]
        return ("inst", klass.qual, frozenset(literals.items())) if literals else ("inst", klass.qual)

    def literals(self, function: Function, bound: bool, call: ast.Call, scope: Scope) -> dict[str, Atom]:
        """The callee's parameters this call binds to a literal (or a frozen dataclass built of some)."""
        env = {}
        names = function.positional[1:] if bound else function.positional
        names += [arg.arg for arg in function.node.args.kwonlyargs]
        for name in names:
            argument = _argument(function, bound, call, name)
            if argument is None:
                continue
            found = self.evaluate(argument, scope)
            if len(found) == 1:
                (atom,) = found
                if atom[0] == "const" or (atom[0] == "inst" and len(atom) == 3):
                    env[name] = atom
        return env

    def return_type(self, qual: str, bound: bool, call: ast.Call, scope: Scope) -> Types:
        function = self.functions[qual]
        factory = self.factory_parameter(qual)
        if factory is not None:
            argument = _argument(function, bound, call, factory)
            names = _strings(self.evaluate(argument, scope)) if argument is not None else set()
            if names:
                self.services.update(names)
                return frozenset(("client", name) for name in names)
        general = self.returns(qual)
        env = self.literals(function, bound, call, scope)
        if not env:
            return general
        # With literal arguments, what the body returns may be known more precisely
        # (``SwitchMaintenance.turn(machine, False)`` is a command with enabled False).
        specific = self._cached(("returns", qual, frozenset(env.items())), lambda: self._returned(qual, env))
        if specific and all(any(atom[:2] == kind[:2] for atom in specific) for kind in general):
            return specific
        return general | specific

    def returns(self, qual: str) -> Types:
        function = self.functions[qual]

        def compute() -> Types:
            annotated = self.annotation(function.node.returns, function.module)
            return annotated or self._returned(qual, {})

        return self._cached(("returns", qual), compute)

    def _returned(self, qual: str, env: dict[str, Atom]) -> Types:
        function = self.functions[qual]
        scope = self.scope(qual, env)
        values = [node.value for node in _own_nodes(function.node.body) if isinstance(node, ast.Return)]
        return frozenset().union(*(self.evaluate(value, scope) for value in values))

    def factory_parameter(self, qual: str) -> str | None:
        """The parameter a client factory passes on as the service name, if it is one."""
        key = ("factory", qual)
        if key not in self._memo:
            self._memo[key] = frozenset()
            function = self.functions[qual]
            scope = self.scope(qual)
            for node in _own_nodes(function.node.body):
                if not isinstance(node, ast.Call) or ("make_client",) not in self.evaluate(node.func, scope):
                    continue
                argument = node.args[0] if node.args else _keyword(node, "service_name")
                if isinstance(argument, ast.Name) and argument.id in function.positional:
                    self._memo[key] = frozenset({(argument.id,)})
        found = self._memo[key]
        return next(iter(found))[0] if found else None

    def instance_attribute(self, klass: Klass, name: str) -> Types:
        def compute() -> Types:
            found: set[Atom] = set()
            for candidate in self.mro(klass):
                if name in candidate.fields:
                    found |= self.annotation(candidate.fields[name], candidate.module)
                    if not found and candidate.is_dataclass:
                        found |= self._constructor_arguments(candidate, name, None)
                for method in candidate.methods.values():
                    if method.self_kind != "inst":
                        continue
                    this = method.positional[0]
                    scope = self.scope(method.qual)
                    for node in _own_nodes(method.node.body):
                        targets = (
                            node.targets
                            if isinstance(node, ast.Assign)
                            else [node.target]
                            if isinstance(node, ast.AnnAssign)
                            else []
                        )
                        for target in targets:
                            if (
                                isinstance(target, ast.Attribute)
                                and target.attr == name
                                and isinstance(target.value, ast.Name)
                                and target.value.id == this
                            ):
                                if isinstance(node, ast.AnnAssign):
                                    found |= self.annotation(node.annotation, method.module)
                                found |= self.evaluate(node.value, scope)
            return frozenset(found)

        return self._cached(("attribute", klass.qual, name), compute)

    def _constructor_arguments(self, klass: Klass, name: str, init: Function | None) -> Types:
        """What the places that construct ``klass`` pass as its parameter (or dataclass field) ``name``."""

        def compute() -> Types:
            if init is not None:
                positional = init.positional[1:]
            else:
                positional = list(klass.fields)
            found: set[Atom] = set()
            names = {klass.node.name, "cls"} | {
                local
                for module in self.modules.values()
                for local, (_, symbol) in module.imports.items()
                if symbol == klass.node.name
            }
            for call, scope in self.all_calls():
                terminal = getattr(call.func, "id", None) or getattr(call.func, "attr", None)
                if terminal not in names:
                    continue
                if not any(atom == ("cls", klass.qual) for atom in self.evaluate(call.func, scope)):
                    continue
                argument = _keyword(call, name)
                if argument is None and name in positional:
                    index = positional.index(name)
                    plain = [arg for arg in call.args if not isinstance(arg, ast.Starred)]
                    argument = plain[index] if index < len(plain) else None
                found |= self.evaluate(argument, scope)
            return frozenset(found)

        return self._cached(("constructed", klass.qual, name), compute)

    def all_calls(self) -> list[tuple[ast.Call, Scope]]:
        if self._all_calls is None:
            calls: list[tuple[ast.Call, Scope]] = []
            for function in self.functions.values():
                self._collect_calls(function.node.body, self.scope(function.qual), calls)
            for module in self.modules.values():
                top = [stmt for stmt in module.tree.body if not isinstance(stmt, ast.FunctionDef | ast.ClassDef)]
                self._collect_calls(top, self.module_scope(module), calls)
            self._all_calls = calls
        return self._all_calls

    def _collect_calls(self, body: list[ast.stmt], scope: Scope, calls: list[tuple[ast.Call, Scope]]) -> None:
        for node in _own_nodes(body):
            if isinstance(node, ast.Call):
                calls.append((node, scope))
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                    self._collect_calls(child.body, self.nested_scope(scope, child), calls)
                elif isinstance(child, ast.Lambda):
                    self._collect_calls([ast.Expr(child.body)], self.nested_scope(scope, child), calls)


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((keyword.value for keyword in call.keywords if keyword.arg == name), None)


def _argument(function: Function, bound: bool, call: ast.Call, name: str) -> ast.expr | None:
    found = _keyword(call, name)
    if found is not None:
        return found
    positional = function.positional[1:] if bound else function.positional
    plain = [arg for arg in call.args if not isinstance(arg, ast.Starred)]
    if name in positional and positional.index(name) < len(plain):
        return plain[positional.index(name)]
    return None


def _strings(types: Types) -> set[str]:
    return {atom[1] for atom in types if atom[0] == "const" and isinstance(atom[1], str)}


# Walking the call graph ---------------------------------------------------------------------


@dataclass
class Reach:
    """What one deployed function can call."""

    calls: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (service, method) -> sites
    visited: set[tuple[str, frozenset[tuple[str, Atom]]]] = field(default_factory=set)
    reached: set[str] = field(default_factory=set)
    by_name: dict[str, set[str]] = field(default_factory=dict)  # site -> methods resolved by name
    untyped: dict[str, str] = field(default_factory=dict)  # site -> method name


class Walker:
    def __init__(self, analysis: Analysis) -> None:
        self.analysis = analysis

    def reach(self, roots: list[str]) -> Reach:
        reach = Reach()
        for module in self.analysis.modules.values():
            top = [stmt for stmt in module.tree.body if not isinstance(stmt, ast.FunctionDef | ast.ClassDef)]
            self._block(top, self.analysis.module_scope(module), reach)
        for root in roots:
            self._function(root, {}, reach)
        return reach

    def _function(self, qual: str, env: dict[str, Atom], reach: Reach) -> None:
        key = (qual, frozenset(env.items()))
        if key in reach.visited:
            return
        reach.visited.add(key)
        reach.reached.add(qual)
        self._block(self.analysis.functions[qual].node.body, self.analysis.scope(qual, env), reach)

    def _block(self, body: list[ast.stmt], scope: Scope, reach: Reach) -> None:
        for stmt in body:
            self._statement(stmt, scope, reach)

    def _statement(self, stmt: ast.stmt, scope: Scope, reach: Reach) -> None:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            self._block(stmt.body, self.analysis.nested_scope(scope, stmt), reach)
            return
        if isinstance(stmt, ast.ClassDef):
            return
        if isinstance(stmt, ast.If):
            taken = self._decide(stmt.test, scope)
            if taken is not None:
                self._block(stmt.body if taken else stmt.orelse, scope, reach)
                return
        self._children(stmt, scope, reach)

    def _children(self, node: ast.AST, scope: Scope, reach: Reach) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                self._statement(child, scope, reach)
            elif isinstance(child, ast.expr):
                self._expression(child, scope, reach)
            else:
                self._children(child, scope, reach)

    def _decide(self, test: ast.expr, scope: Scope) -> bool | None:
        """The branch an ``if`` takes when its test is a literal bool the call bound, else None.

        The test is a parameter bound to a literal (``if enabled:``) or a field of a
        frozen dataclass parameter built from literals (``if command.enabled:``).
        """
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            taken = self._decide(test.operand, scope)
            return None if taken is None else not taken
        root = test.value if isinstance(test, ast.Attribute) else test
        if not isinstance(root, ast.Name) or root.id not in scope.env or root.id in scope.locals:
            return None
        found = self.analysis.evaluate(test, scope)
        if found in (frozenset({("const", True)}), frozenset({("const", False)})):
            return next(iter(found))[1]
        return None

    def _expression(self, node: ast.expr, scope: Scope, reach: Reach) -> None:
        analysis = self.analysis
        if isinstance(node, ast.Lambda):
            self._expression(node.body, self.analysis.nested_scope(scope, node), reach)
            return
        if isinstance(node, ast.Call):
            self._call(node, scope, reach)
            if isinstance(node.func, ast.Attribute):
                self._expression(node.func.value, scope, reach)
            elif not isinstance(node.func, ast.Name):
                self._expression(node.func, scope, reach)
            for argument in (*node.args, *(keyword.value for keyword in node.keywords)):
                self._expression(argument, scope, reach)
            return
        if isinstance(node, ast.Attribute | ast.Name):
            # A function passed on (``pool.submit(self._resume_one)``) or a property read.
            for atom in analysis.evaluate(node, scope):
                if atom[0] == "func":
                    self._function(atom[1], {}, reach)
            if isinstance(node, ast.Attribute):
                for atom in analysis.evaluate(node.value, scope):
                    if atom[0] == "inst":
                        method = analysis.member(analysis.classes[atom[1]], node.attr)
                        if method is not None and "property" in method.decorators:
                            self._function(method.qual, {}, reach)
                self._expression(node.value, scope, reach)
            return
        self._children(node, scope, reach)

    def _call(self, call: ast.Call, scope: Scope, reach: Reach) -> None:
        analysis = self.analysis
        site = f"{scope.module.path.name}:{call.lineno}"
        resolved = False
        for atom in analysis.evaluate(call.func, scope):
            kind = atom[0]
            if kind == "func":
                function = analysis.functions[atom[1]]
                self._function(atom[1], analysis.literals(function, atom[2], call, scope), reach)
            elif kind == "cls":
                init = analysis.member(analysis.classes[atom[1]], "__init__")
                if init is not None:
                    self._function(init.qual, analysis.literals(init, True, call, scope), reach)
            elif kind == "method":
                if atom[2] not in LOCAL_CLIENT_METHODS:
                    reach.calls.setdefault((atom[1], atom[2]), set()).add(site)
            elif kind == "paginate":
                reach.calls.setdefault((atom[1], atom[2]), set()).add(site)
            elif kind not in ("make_client", "Session", "get_paginator"):
                continue
            resolved = True
        if resolved or not isinstance(call.func, ast.Attribute):
            return
        name = call.func.attr
        receiver = call.func.value
        injected = (isinstance(receiver, ast.Attribute) and isinstance(receiver.value, ast.Name)) or (
            isinstance(receiver, ast.Name) and receiver.id in scope.params
        )
        if injected and name in analysis.method_names and not analysis.evaluate(receiver, scope):
            reach.by_name.setdefault(site, set()).update(analysis.method_names[name])
            for qual in analysis.method_names[name]:
                self._function(qual, {}, reach)
        reach.untyped[site] = name


def entry_points(analysis: Analysis) -> dict[str, list[str]]:
    """Deployed function name -> the app.py functions it runs (Chalice's naming)."""
    entries: dict[str, list[str]] = {}
    for function in analysis.modules["app"].functions.values():
        for decorator in function.node.decorator_list:
            if not (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute)):
                continue
            kind = decorator.func.attr
            if kind == "route":
                entries.setdefault(API_HANDLER, []).append(function.qual)
            elif kind in CHALICE_EVENT_DECORATORS:
                name = _keyword(decorator, "name")
                deployed = name.value if isinstance(name, ast.Constant) else function.node.name
                entries.setdefault(deployed, []).append(function.qual)
    return dict(sorted(entries.items()))


# From calls to actions ----------------------------------------------------------------------


class Actions:
    """Chalice's PolicyBuilder, with its tables completed and every call checked to map."""

    def __init__(self) -> None:
        self._session = botocore.session.get_session()
        tables = load_api_policy_actions()
        for service, extra in EXTRA_API_ACTIONS.items():
            tables.setdefault(service, {}).update({k: v for k, v in extra.items() if k not in tables[service]})
        self._tables = tables
        self._custom = load_custom_policy_actions()
        self._builder = PolicyBuilder(session=self._session, api_policy_actions=tables)
        self._mappings: dict[str, dict[str, str]] = {}

    def operations(self, service: str) -> dict[str, str]:
        if service not in self._mappings:
            client = self._session.create_client(service, region_name="us-east-1")
            self._mappings[service] = client.meta.method_to_api_mapping
        return self._mappings[service]

    def of(self, calls: dict[str, set[str]]) -> list[str]:
        for service, methods in calls.items():
            if service == "?":
                raise GenerationError(f"a boto3 client whose service is not a literal calls {sorted(methods)}")
            for method in methods:
                operation = self.operations(service).get(method)
                if method in self._custom.get(service, {}):
                    continue
                if operation is None:
                    raise GenerationError(f"{service}.{method} is not a {service} operation this script knows")
                if operation not in self._tables.get(service, {}):
                    raise GenerationError(f"{service}.{method} ({operation}) has no IAM action in the tables")
        policy = self._builder.build_policy_from_api_calls(calls)
        return sorted({action for statement in policy["Statement"] for action in statement["Action"]})


# Scoping ------------------------------------------------------------------------------------


def deployed_name(app_name: str, stage: str, function: str) -> str:
    return f"{app_name}-{stage}" if function == API_HANDLER else f"{app_name}-{stage}-{function}"


def state_machine_resources(env: dict[str, str]) -> list[str]:
    """The AllowedStateMachines ARN patterns, parsed as the app parses them; ``*`` is every machine."""
    try:
        patterns = Settings.from_env(env).allowed_state_machines
    except ConfigurationError as error:
        raise GenerationError(str(error)) from None
    if "*" in patterns or not all(pattern.startswith("arn:") for pattern in patterns):
        return [ALL_STATE_MACHINES]
    return sorted(set(patterns))


def function_arn(name: str) -> str:
    return name if name.startswith("arn:") else f"arn:aws:lambda:*:*:function:{name}"


def scoped_policy(actions: list[str], env: dict[str, str], log_group_function: str) -> dict[str, Any]:
    bucket = env.get("Bucket", "").strip()
    prefix = normalise_prefix(env.get("Prefix", ""))
    log_group = f"arn:aws:logs:*:*:log-group:/aws/lambda/{log_group_function}"
    statements: list[dict[str, Any]] = [
        {"Sid": "OwnLogs", "Effect": "Allow", "Action": LOGS_ACTIONS, "Resource": [log_group, f"{log_group}:*"]}
    ]
    unknown = set(actions) - S3_OBJECT_ACTIONS - S3_BUCKET_ACTIONS - STATE_MACHINE_ACTIONS
    unknown -= TASK_TOKEN_ACTIONS | INVOKE_ACTIONS | EXECUTION_ACTIONS
    if unknown:
        raise GenerationError(f"no scoping rule for {sorted(unknown)}: add one to scripts/generate_policies.py")
    if (S3_OBJECT_ACTIONS | S3_BUCKET_ACTIONS) & set(actions) and not bucket:
        raise GenerationError("the stage's environment_variables have no Bucket to scope S3 actions to")

    def add(sid: str, chosen: set[str], resources: list[str], condition: dict[str, Any] | None = None) -> None:
        granted = sorted(chosen & set(actions))
        if granted:
            statement: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Action": granted, "Resource": resources}
            if condition:
                statement["Condition"] = condition
            statements.append(statement)

    add("HeldTasksAndBookkeeping", S3_OBJECT_ACTIONS, [f"arn:aws:s3:::{bucket}/{prefix}*"])
    add(
        "ListOwnPrefix",
        S3_BUCKET_ACTIONS,
        [f"arn:aws:s3:::{bucket}"],
        # ...IfExists: S3 decides whether a GetObject of a missing key answers 404 or
        # 403 by asking whether the caller may ListBucket, and that check carries no
        # s3:prefix. A plain StringLike would make every "is it there?" read (the flag
        # mirror on first sight, a token another resumer took) an AccessDenied. Real
        # listings always send a prefix, so they stay confined to it.
        {"StringLikeIfExists": {"s3:prefix": [f"{prefix}*"]}} if prefix else None,
    )
    if STATE_MACHINE_ACTIONS & set(actions):
        add("StateMachines", STATE_MACHINE_ACTIONS, state_machine_resources(env))
    if EXECUTION_ACTIONS & set(actions):
        # The executions of the machines it may act on (the sweep asks whether one inside
        # a protected section has ended): arn:...:execution:{Name}:{execution name}.
        executions = [arn.replace(":stateMachine:", ":execution:") + ":*" for arn in state_machine_resources(env)]
        add("Executions", EXECUTION_ACTIONS, executions)
    # A task token has no ARN: IAM can name it only as "*".
    add("TaskTokens", TASK_TOKEN_ACTIONS, ["*"])
    resumer = env.get("ResumerFunctionName", "").strip()
    if resumer:
        add("ContinueInResumer", INVOKE_ACTIONS, [function_arn(resumer)])
    return {"Version": POLICY_VERSION, "Statement": statements}


# Files --------------------------------------------------------------------------------------


@dataclass
class Generated:
    files: dict[Path, str]  # relative path -> content
    reaches: dict[str, Reach]
    actions: dict[str, list[str]]


def _dump(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def generate(root: Path = ROOT) -> Generated:
    analysis = Analysis(root)
    walker = Walker(analysis)
    entries = entry_points(analysis)
    reaches = analysis.rounds(lambda: {name: walker.reach(roots) for name, roots in entries.items()})
    operations = Actions()
    _refuse_untyped_aws_calls(reaches, operations, analysis)
    actions = {}
    for name, reach in reaches.items():
        calls: dict[str, set[str]] = {}
        for service, method in reach.calls:
            calls.setdefault(service, set()).add(method)
        actions[name] = operations.of(calls)

    config = json.loads((root / CONFIG).read_text())
    files: dict[Path, str] = {}
    config["autogen_policy"] = False
    for stage, stage_config in config.get("stages", {}).items():
        functions = stage_config.setdefault("lambda_functions", {})
        for name in entries:
            policy_file = f"policy-{stage}-{name}.json"
            functions.setdefault(name, {})["iam_policy_file"] = policy_file
            chalice = Config(chalice_stage=stage, function_name=name, config_from_disk=config)
            log_group = deployed_name(chalice.app_name, stage, name)
            files[Path(".chalice") / policy_file] = _dump(
                scoped_policy(actions[name], chalice.environment_variables, log_group)
            )
    files[CONFIG] = _dump(config)
    files[RESOURCES] = _dump(_with_stage_mappings(root, config, list(entries)))
    if (root / DOCS).exists() and DOCS_STAGE in config.get("stages", {}):
        files[DOCS] = _with_policies_shown(
            (root / DOCS).read_text(),
            {name: files[Path(".chalice") / f"policy-{DOCS_STAGE}-{name}.json"] for name in entries},
        )
    return Generated(files, reaches, actions)


def _with_policies_shown(text: str, policies: dict[str, str]) -> str:
    """docs/deploy.md with its generated section holding each function's policy, in full."""
    if DOCS_BEGIN not in text or DOCS_END not in text:
        raise GenerationError(f"{DOCS} lacks the markers of its generated section ({DOCS_BEGIN} ... {DOCS_END})")
    before, rest = text.split(DOCS_BEGIN, 1)
    after = rest.split(DOCS_END, 1)[1]
    shown = [
        f"#### `{name}`: `.chalice/policy-{DOCS_STAGE}-{name}.json`\n\n```json\n{policy}```\n"
        for name, policy in policies.items()
    ]
    return before + DOCS_BEGIN + "\n\n" + "\n".join(shown) + "\n" + DOCS_END + after


def _with_stage_mappings(root: Path, config: dict[str, Any], functions: list[str]) -> dict[str, Any]:
    """The merge template, its ``Mappings.Stages`` set from config.json (the rest is kept as written)."""
    template = json.loads((root / RESOURCES).read_text()) if (root / RESOURCES).exists() else {}
    stages = {}
    for stage in config.get("stages", {}):
        chalice = Config(chalice_stage=stage, config_from_disk=config)
        env = chalice.environment_variables
        store = TokenStore(None, env.get("Bucket", ""), normalise_prefix(env.get("Prefix", "")))
        stages[stage] = {
            "Bucket": store.bucket,
            "QuarantinePrefix": store.control_key("quarantine", ""),
            "AuditPrefix": store.control_key("audit", ""),
            **{_mapping_key(name): deployed_name(chalice.app_name, stage, name) for name in functions},
        }
    template.setdefault("Mappings", {})["Stages"] = stages
    template.setdefault("Parameters", {}).setdefault("Stage", {"Type": "String"})["AllowedValues"] = list(stages)
    return template


def _mapping_key(function: str) -> str:
    """``api_handler`` -> ``ApiHandlerFunctionName`` (a CloudFormation mapping key)."""
    return "".join(part.capitalize() for part in function.split("_")) + "FunctionName"


def _refuse_untyped_aws_calls(reaches: dict[str, Reach], operations: Actions, analysis: Analysis) -> None:
    """Stop if a call named like an operation of a service the app uses was not typed, or not reached.

    Either could be an AWS call the walk missed (a client behind an untyped
    receiver, or a function reached only through one); a policy written then
    might be short.
    """
    services = {service for reach in reaches.values() for service, _ in reach.calls} | analysis.services
    names = {"paginate"} | {method for service in services - {"?"} for method in operations.operations(service)}
    recorded = {site for reach in reaches.values() for sites in reach.calls.values() for site in sites}
    problems = sorted(
        f"{site}: .{method}(...) is called on a receiver the analysis cannot type"
        for reach in reaches.values()
        for site, method in reach.untyped.items()
        if method in names and site not in reach.by_name
    )
    for module in analysis.modules.values():
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in names:
                site = f"{module.path.name}:{node.lineno}"
                if site not in recorded and not any(site in reach.untyped for reach in reaches.values()):
                    problems.append(f"{site}: .{node.func.attr}(...) is reached from no handler the analysis can see")
    if problems:
        raise GenerationError("possible AWS calls the policies would not cover: " + "; ".join(problems))


def stale(generated: Generated, root: Path = ROOT) -> list[Path]:
    """The generated files whose committed content differs from what the code gives now."""
    return [
        path
        for path, text in generated.files.items()
        if not (root / path).exists() or (root / path).read_text() != text
    ]


def explain(generated: Generated) -> str:
    lines = []
    for name, reach in generated.reaches.items():
        lines.append(f"{name}: {', '.join(generated.actions[name])}")
        for (service, method), sites in sorted(reach.calls.items()):
            lines.append(f"  {service}.{method}  <- {', '.join(sorted(sites))}")
        for site, methods in sorted(reach.by_name.items()):
            lines.append(f"  resolved by method name at {site}: {', '.join(sorted(methods))}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is stale")
    parser.add_argument("--explain", action="store_true", help="print each function's calls and their sites")
    args = parser.parse_args(argv)
    try:
        generated = generate(ROOT)
    except GenerationError as error:
        print(f"generate_policies: {error}", file=sys.stderr)
        return 2
    if args.explain:
        print(explain(generated))
    changed = stale(generated, ROOT)
    if args.check:
        for path in changed:
            print(f"stale: {path} (run: python3 dev.py policies)", file=sys.stderr)
        return 1 if changed else 0
    for path in changed:
        (ROOT / path).write_text(generated.files[path])
        print(f"wrote {path}")
    if not changed:
        print("policies are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
