"""A small mutation check over the modules that guard the grid (run by `scripts/mutate`).

Each mutant is one small change to one function of a security module, made on the AST:
a comparison flipped or moved by one (`==`/`!=`, `<`/`>=`, `<`/`<=`, `in`/`not in`), an
`and`/`or` swapped, a `not` dropped, an `if` guard that is never taken, a `raise`
replaced by `pass`, a statement dropped, an integer constant off by one, a boolean
flipped, a `+`/`-` swapped, one operand of an `a | b | c` flag set dropped. Each runs only
the tests that cover its module (`TARGETS`), against a private copy of `src/` put first
on PYTHONPATH (so subprocesses the tests start, such as node agents, run the mutant too).
A mutant the tests pass is a *survivor*: a change to a guard no test notices.

Text inside f-strings, docstrings and logging calls is never mutated (a message is not
a rule). Survivors known to be equivalent (no behaviour a caller can see changes) are
listed in `EQUIVALENT` with the reason, and reported apart from the others.

Not part of CI: it runs minutes, not seconds, and says where tests are thin.
"""

from __future__ import annotations

import argparse
import ast
import compileall
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Target:
    """A module, the functions in it that hold its rules (all when empty), and the fast
    tests that cover them (paths that do not exist are left out)."""

    module: str
    functions: tuple[str, ...]
    tests: tuple[str, ...]
    constants: bool = False  # mutate module-level constants too


TARGETS = {
    "signatures": Target(
        "src/zos/gridtypes/signatures.py",
        ("signing_message", "sign_deployment", "_check_signature", "verify_signatures"),
        (
            "tests/gridtypes/test_signatures.py",
            "tests/gridtypes/test_ts_vectors.py",
            "tests/gridtypes/test_reference_vectors.py",
        ),
    ),
    "envelope": Target(
        "src/zos/bus/envelope.py",
        (
            "Envelope.signing_bytes",
            "Envelope.create",
            "Envelope.from_bytes",
            "Envelope.verify",
            "Envelope.check_time",
            "Envelope.open",
            "Envelope.decode_payload",
            "ReplayCache._prune",
            "ReplayCache.check_and_add",
        ),
        (
            "tests/bus/test_envelope.py",
            "tests/bus/test_bus_client.py",
            "tests/bus/test_bus_client_rules.py",
        ),
    ),
    "bus-client": Target(
        "src/zos/bus/client.py",
        (
            "BusClient._key_of",
            "BusClient.request",
            "BusClient._read_response",
            "BusClient._on_message",
            "BusClient._handle",
            "BusClient._reply",
        ),
        ("tests/bus/test_bus_client.py", "tests/bus/test_bus_client_rules.py"),
    ),
    "engine": Target(
        "src/zos/node/engine.py",
        (
            "Engine._parse",
            "Engine._check_signed_and_contracted",
            "Engine._check_capacity",
            "Engine._owned",
            "Engine.deploy",
            "Engine.update",
            "Engine.delete",
            "Engine.get",
            "Engine.changes",
        ),
        ("tests/node/test_engine_unit.py", "tests/node/test_node_refusals.py"),
    ),
    "flist-unpack": Target(
        "src/zos/flist/unpack.py",
        (),
        (
            "tests/flist/test_flist_unpack_defences.py",
            "tests/flist/test_flist_hostile.py",
            "tests/flist/test_flist_roundtrip.py",
        ),
        constants=True,
    ),
    "hub-auth": Target("src/zos/hub/auth.py", (), ("tests/hub",), constants=True),
    "hub-server": Target(
        "src/zos/hub/server.py",
        (
            "Hub._authorize",
            "Hub._block_path",
            "Hub._flist_path",
            "Hub._put_block",
            "Hub._put_flist",
            "Hub._receive",
            "Hub._delete_flist",
            "_read_limited",
        ),
        ("tests/hub",),
    ),
    "zdb-access": Target(
        "src/zos/zdb/commands.py",
        (
            "admin",
            "check_secure",
            "auth",
            "nsnew",
            "nsdel",
            "nslist",
            "nsinfo",
            "nsset",
            "select",
            "flush",
            "_writable",
            "set_",
            "delete",
        ),
        (
            "tests/zdb/test_zdb_access.py",
            "tests/zdb/test_zdb_rules.py",
            "tests/zdb/test_zdb_commands.py",
        ),
    ),
    # What a hub request's signature covers (method, path, time, nonce, body): client
    # and hub share it, so only a test that replays a request elsewhere sees a change.
    "hub-sign": Target("src/zos/flist/hubsign.py", (), ("tests/hub",), constants=True),
    "supervisor": Target(
        "src/zos/primitives/supervisor.py",
        ("Backoff.delay", "Backoff.wait", "Supervisor._exited", "Supervisor._restart"),
        ("tests/primitives/test_supervisor.py",),
    ),
}

# The flist-unpack lines EQUIVALENT names more than once.
_CREATE = "flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC"
_OPEN_FILE = "return os.open(entry.name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)"
_DECRYPT = "plain = decrypt_block(entry.blocks[index], cipher, id_checked=True)"
_METADATA = "flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC"
_DIR_FLAGS = "_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC"
_POOL = (
    'with ThreadPoolExecutor(min(8, os.cpu_count() or 2), thread_name_prefix="flist-unpack")'
    " as pool:"
)

_DELAY = "return min(self.base * (2 ** max(failures - 1, 0)), self.cap)"
_ONCE = "if w is None or (w.task and not w.task.done()):"
_STABLE = "w.failures = 1 if ran >= self.backoff.stable else w.failures + 1"

# Survivors that change nothing a caller can observe, by target: (function, line text
# the mutant is on, stripped, the mutation) -> why (see `Mutant.key`). Matched on text,
# not line numbers, so the list survives edits elsewhere in the file.
EQUIVALENT: dict[str, dict[tuple[str, str, str], str]] = {
    "flist-unpack": {
        **{
            ("unpack", "concurrency: int = 16,", what): "a throughput knob (blocks fetched at once)"
            for what in ("16 -> 17", "16 -> 15")
        },
        **{
            ("_write_contents", _POOL, what): "a throughput knob (threads that decrypt and write)"
            for what in ("8 -> 9", "8 -> 7", "'or' -> 'and'", "2 -> 3", "2 -> 1")
        },
        **{
            ("_write_contents", "file_limit = asyncio.Semaphore(max(1, concurrency))", what): (
                "differs only for a concurrency below 1 or 2, which no caller passes"
            )
            for what in ("1 -> 2", "1 -> 0")
        },
        ("_write_contents", "t.cancel()", "statement dropped"): (
            "after a failed block the other files finish instead of being cancelled: unpack "
            "still raises the first error and returns only once nothing runs"
        ),
        ("_decrypt_write", _DECRYPT, "True -> False"): (
            "the block's hash is checked a second time (fetch checked it already)"
        ),
        ("_create_entries", _CREATE, "'| os.O_WRONLY' dropped"): (
            "the empty file is created and closed at once: its access mode is never used"
        ),
        ("_create_entries", _CREATE, "'| os.O_NOFOLLOW' dropped"): (
            "with O_CREAT | O_EXCL the kernel never follows a symlink (EEXIST) anyway"
        ),
        **{
            (function, text, "'| os.O_CLOEXEC' dropped"): (
                "os.open makes every descriptor non-inheritable anyway (PEP 446)"
            )
            for function, text in (
                ("_create_entries", _CREATE),
                ("_open_file", _OPEN_FILE),
                ("_set_metadata", _METADATA),
                ("<module>", _DIR_FLAGS),
            )
        },
        ("<module>", _DIR_FLAGS, "'| os.O_DIRECTORY' dropped"): (
            "a descriptor of a non-directory fails with ENOTDIR at its first use as dir_fd "
            "(or listdir), before anything is written under it"
        ),
        **{
            (function, text, "'| os.O_RDONLY' dropped"): "O_RDONLY is 0: no bit changes"
            for function, text in (("_set_metadata", _METADATA), ("<module>", _DIR_FLAGS))
        },
    },
    "bus-client": {
        ("BusClient._handle", "key: bytes | None = None", "statement dropped"): (
            "key is read only after the try block that assigns it ran to its end"
        ),
        ("BusClient._reply", "if not msg.reply:", "if-guard never taken"): (
            "without a reply subject msg.respond raises, and the suppress around it drops it"
        ),
        **{
            ("BusClient._reply", "request.source if request else 0, [2]", what): (
                "the too-large branch never has request None: answers without a request "
                "(busy, no envelope) carry one error whose message BusError caps at 1000 chars"
            )
            for what in ("0 -> 1", "0 -> -1")
        },
    },
    "envelope": {
        (
            "Envelope.signing_bytes",
            'return json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode()',
            "True -> False",
        ): "every string signed is ASCII already (the model's patterns: hex ids, command)",
    },
    "hub-sign": {
        ("sign_headers", "nonce = os.urandom(16).hex()", what): (
            "15 or 17 random bytes are as unique, and their hex within the hub's 16-64 chars"
        )
        for what in ("16 -> 17", "16 -> 15")
    },
    "supervisor": {
        ("Backoff.delay", _DELAY, "0 -> -1"): (
            "no wait asks for 0 failures: an exit counts at least one before the wait"
        ),
        **{
            ("Supervisor._exited", _ONCE, what): (
                "an exit is told once (its pidfd's reader goes at the first call), and a "
                "container forgotten before the call is not restarted either way"
            )
            for what in ("if-guard never taken", "'or' -> 'and'")
        },
        ("Supervisor._exited", _STABLE, "'>=' -> '>'"): (
            "differs only when a run lasts exactly `stable` seconds of the monotonic clock"
        ),
        ("Supervisor._restart", "if self._watches.get(cid) is not w:", "if-guard never taken"): (
            "forget() cancels the task in its wait, so the check after the wait never sees it"
        ),
        **{
            ("Supervisor._restart", "w.pid = 0", what): (
                "_start watches the new pid at once; the old pid's pidfd closed at the exit, "
                "so _watch cannot take it for the new one (and no caller reads pid() meanwhile)"
            )
            for what in ("statement dropped", "0 -> 1", "0 -> -1")
        },
    },
}


# --- mutants -------------------------------------------------------------------------------

_NEGATE: dict[type, type] = {
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Lt: ast.GtE,
    ast.GtE: ast.Lt,
    ast.Gt: ast.LtE,
    ast.LtE: ast.Gt,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
_BOUNDARY: dict[type, type] = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt}
_SYMBOL = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.Is: "is",
    ast.IsNot: "is not",
}
_SIMPLE_STATEMENTS = (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)


@dataclasses.dataclass(frozen=True)
class Mutant:
    target: str
    index: int  # the n-th mutation site in the module (the order is stable for one source)
    function: str
    line: int
    text: str  # the original source line, stripped
    what: str
    repeat: int = 0  # how many earlier mutants of this function have the same text and what

    @property
    def key(self) -> tuple[str, str, str]:
        """What EQUIVALENT is keyed by; the same line and mutation a second time in one
        function (two identical lines) is told apart by a `[2]` after the text."""
        text = self.text if not self.repeat else f"{self.text} [{self.repeat + 1}]"
        return (self.function, text, self.what)

    def label(self, module: str) -> str:
        return f"{module}:{self.line} {self.function}: {self.what}   [{self.text}]"


def _is_log_call(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id in ("log", "logging", "logger")
    )


def _docstring(body: list[ast.stmt], stmt: ast.stmt) -> bool:
    return (
        stmt is body[0]
        and isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def _functions(tree: ast.Module) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function and method with its qualified name (Class.method)."""

    def walk(body: list[ast.stmt], prefix: str) -> Iterator:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                name = prefix + node.name
                yield name, node
                yield from walk(node.body, name + ".")
            elif isinstance(node, ast.ClassDef):
                yield from walk(node.body, prefix + node.name + ".")

    yield from walk(tree.body, "")


def _own_nodes(root: ast.AST) -> Iterator[ast.AST]:
    """`root` and everything in it but nested functions and classes (mutated on their
    own), type annotations (`int | None` is not a flag set) and subscript indexes
    (`args[1]` off by one reads another argument: noise, not a rule)."""
    todo = [root]
    while todo:
        node = todo.pop()
        yield node
        for field, value in ast.iter_fields(node):
            if field in ("annotation", "returns") or (
                isinstance(node, ast.Subscript) and field == "slice"
            ):
                continue
            children = value if isinstance(value, list) else [value]
            for child in children:
                if isinstance(child, ast.AST) and not isinstance(
                    child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
                ):
                    todo.append(child)


def _sites(root: ast.AST) -> Iterator[tuple[ast.AST, str, object]]:
    """(node, description, how) for every mutation in `root`; `how` is what `apply` needs
    to make it. Never inside f-strings, logging calls or docstrings."""
    nodes = sorted(
        _own_nodes(root), key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0))
    )
    skip: set[int] = set()
    for node in nodes:
        if isinstance(node, ast.JoinedStr) or _is_log_call(node):
            skip.update(id(n) for n in ast.walk(node))
    for node in nodes:
        if id(node) in skip:
            continue
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                old = _SYMBOL[type(op)]
                for table in (_NEGATE, _BOUNDARY):
                    new = table.get(type(op))
                    if new is not None:
                        yield node, f"'{old}' -> '{_SYMBOL[new]}'", ("op", i, new)
        elif isinstance(node, ast.BoolOp):
            other = ast.Or if isinstance(node.op, ast.And) else ast.And
            yield node, f"'{type(node.op).__name__.lower()}' -> '{other.__name__.lower()}'", other
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield node, "'not' dropped", None
        elif isinstance(node, ast.If):
            yield node, "if-guard never taken", None
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):
            old, new = ("+", "-") if isinstance(node.op, ast.Add) else ("-", "+")
            yield node, f"'{old}' -> '{new}'", None
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            operands = _bitor_operands(node)
            if not _inside_bitor(node, root):
                for i, operand in enumerate(operands):
                    yield node, f"'| {ast.unparse(operand)}' dropped", i
        elif isinstance(node, ast.Constant) and type(node.value) is bool:
            yield node, f"{node.value} -> {not node.value}", None
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            yield node, f"{node.value} -> {node.value + 1}", 1
            yield node, f"{node.value} -> {node.value - 1}", -1
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if not isinstance(body, list):
                continue
            for stmt in body:
                if id(stmt) in skip or _docstring(body, stmt):
                    continue
                if isinstance(stmt, ast.Raise):
                    yield stmt, "raise -> pass", (node, field)
                elif isinstance(stmt, _SIMPLE_STATEMENTS) and not _is_log_call(
                    getattr(stmt, "value", None) or stmt
                ):
                    yield stmt, "statement dropped", (node, field)


def _bitor_operands(node: ast.AST) -> list[ast.expr]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _bitor_operands(node.left) + _bitor_operands(node.right)
    return [node]  # type: ignore[list-item]


def _inside_bitor(node: ast.AST, root: ast.AST) -> bool:
    for parent in ast.walk(root):
        if (
            isinstance(parent, ast.BinOp)
            and isinstance(parent.op, ast.BitOr)
            and node in (parent.left, parent.right)
        ):
            return True
    return False


def _all_sites(tree: ast.Module, target: Target) -> list[tuple[str, ast.AST, str, object]]:
    """Every mutation site of the target's functions, then of its module-level constants
    (flag sets such as `_DIR_FLAGS = A | B | C`, limits) when it asks for them."""
    wanted = set(target.functions)
    sites = [
        (name, node, what, how)
        for name, fn in _functions(tree)
        if not wanted or name in wanted
        for node, what, how in _sites(fn)
    ]
    if target.constants:
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign | ast.AnnAssign) and stmt.value is not None:
                sites += [("<module>", node, what, how) for node, what, how in _sites(stmt.value)]
    return sites


def mutants(target_name: str, target: Target, source: str) -> list[Mutant]:
    lines = source.splitlines()
    out = []
    seen: dict[tuple[str, str, str], int] = {}
    for i, (name, node, what, _) in enumerate(_all_sites(ast.parse(source), target)):
        line = getattr(node, "lineno", 0)
        text = lines[line - 1].strip()
        repeat = seen.get((name, text, what), 0)
        seen[(name, text, what)] = repeat + 1
        out.append(Mutant(target_name, i, name, line, text, what, repeat))
    return out


def apply(source: str, target: Target, index: int) -> str:
    """The module's source with mutant `index` applied (as ast.unparse writes it)."""
    tree = ast.parse(source)
    _, node, what, how = _all_sites(tree, target)[index]
    if isinstance(node, ast.Compare):
        _, i, new = how  # type: ignore[misc]
        node.ops[i] = new()
    elif isinstance(node, ast.BoolOp):
        node.op = how()  # type: ignore[operator]
    elif isinstance(node, ast.UnaryOp):
        _replace(tree, node, node.operand)
    elif isinstance(node, ast.If) and what == "if-guard never taken":
        node.test = ast.Constant(False)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub) and how is None:
        node.op = ast.Sub() if isinstance(node.op, ast.Add) else ast.Add()
    elif isinstance(node, ast.BinOp):
        operands = _bitor_operands(node)
        del operands[how]  # type: ignore[arg-type]
        expr = operands[0]
        for o in operands[1:]:
            expr = ast.BinOp(expr, ast.BitOr(), o)
        _replace(tree, node, expr)
    elif isinstance(node, ast.Constant) and type(node.value) is bool:
        node.value = not node.value
    elif isinstance(node, ast.Constant):
        node.value = node.value + how  # type: ignore[operator]
    elif isinstance(node, ast.stmt):
        parent, field = how  # type: ignore[misc]
        body = getattr(parent, field)
        body[body.index(node)] = ast.Pass()
    else:
        raise AssertionError(f"cannot apply {what} to {type(node).__name__}")
    return ast.unparse(ast.fix_missing_locations(tree))


def _replace(tree: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, field, new)
                return
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if item is old:
                        value[i] = new
                        return
    raise AssertionError("node not found")


# --- running -------------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    mutant: Mutant
    status: str  # killed, survived, timeout, invalid
    seconds: float
    detail: str = ""


class Workspace:
    """A private copy of src/ for one worker, compiled once; one module swapped at a time."""

    def __init__(self, base: Path, n: int) -> None:
        self.dir = base / f"w{n}"
        shutil.copytree(ROOT / "src", self.dir / "src", ignore=shutil.ignore_patterns("*.pyc"))
        compileall.compile_dir(self.dir / "src", quiet=1)
        self.basetemp = self.dir / "pytest"

    def run(self, module: str, source: str, tests: list[str], timeout: float) -> tuple[int, str]:
        path = self.dir / module
        original = path.read_text()
        for pyc in (path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):
            pyc.unlink()
        path.write_text(source)
        env = dict(
            os.environ,
            PYTHONPATH=str(self.dir / "src"),
            PYTHONDONTWRITEBYTECODE="1",  # the mutated module is compiled afresh each time
        )
        argv = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
        argv += ["--basetemp", str(self.basetemp), "-o", "addopts=", *tests]
        try:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            try:
                out, _ = proc.communicate(timeout=timeout)
                return proc.returncode, out
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                return -1, "timeout"
        finally:
            path.write_text(original)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help=f"some of: {', '.join(TARGETS)} (all)")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="mutants run at once")
    parser.add_argument("--list", action="store_true", help="print the mutants, run nothing")
    parser.add_argument("--json", type=Path, help="also write every outcome to this file")
    parser.add_argument("--only", type=int, nargs="*", help="mutant indexes of one target")
    args = parser.parse_args()
    names = args.targets or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")

    plan: list[tuple[Target, Mutant, str]] = []
    for name in names:
        target = TARGETS[name]
        source = (ROOT / target.module).read_text()
        found = mutants(name, target, source)
        if args.only is not None:
            found = [m for m in found if m.index in args.only]
        for m in found:
            plan.append((target, m, source))
    if args.list:
        for target, m, _ in plan:
            print(f"{m.target}#{m.index} {m.label(target.module)}")
        print(f"{len(plan)} mutants")
        return 0

    started = time.monotonic()
    # A mutant that breaks a test's clean-up can leave a mount or a server behind in the
    # workspace: the report must still come, and say so.
    with tempfile.TemporaryDirectory(prefix="zos-mutate-", ignore_cleanup_errors=True) as tmp:
        workers = [Workspace(Path(tmp), n) for n in range(max(1, args.jobs))]
        # A clean run of each target's tests first: they must pass, and their time bounds
        # how long a mutant may take (a mutant that hangs counts as killed).
        limits: dict[str, float] = {}
        for name in names:
            target = TARGETS[name]
            tests = [t for t in target.tests if (ROOT / t).exists()]
            t0 = time.monotonic()
            code, out = workers[0].run(
                target.module, (ROOT / target.module).read_text(), tests, 1800
            )
            took = time.monotonic() - t0
            if code != 0:
                print(f"{name}: its tests fail without any mutant:\n{out[-3000:]}")
                return 2
            limits[name] = took * 3 + 60
            print(f"{name}: {len([p for p in plan if p[1].target == name])} mutants, "
                  f"tests {' '.join(tests)} pass in {took:.0f}s", flush=True)  # fmt: skip

        free = list(workers)
        outcomes: list[Outcome] = []

        def run_one(item: tuple[Target, Mutant, str]) -> Outcome:
            target, m, source = item
            worker = free.pop()
            try:
                try:
                    mutated = apply(source, target, m.index)
                    compile(mutated, target.module, "exec")
                except (SyntaxError, AssertionError, IndexError) as e:
                    return Outcome(m, "invalid", 0.0, str(e))
                tests = [t for t in target.tests if (ROOT / t).exists()]
                t0 = time.monotonic()
                code, out = worker.run(target.module, mutated, tests, limits[m.target])
                took = time.monotonic() - t0
                if code == -1:
                    return Outcome(m, "timeout", took)
                if code == 0:
                    return Outcome(m, "survived", took)
                return Outcome(m, "killed", took, _last_line(out))
            finally:
                free.append(worker)

        with concurrent.futures.ThreadPoolExecutor(len(workers)) as pool:
            for outcome in pool.map(run_one, plan):
                outcomes.append(outcome)
                m = outcome.mutant
                if outcome.status == "survived":
                    print(f"SURVIVED {m.target}#{m.index} {m.label(TARGETS[m.target].module)}",
                          flush=True)  # fmt: skip

    print()
    if Path(tmp).exists():
        print(f"left behind by a mutant's tests (mounts, servers): {tmp}\n")
    total_survivors = 0
    for name in names:
        mine = [o for o in outcomes if o.mutant.target == name]
        survivors = [o for o in mine if o.status == "survived"]
        equivalent = [o for o in survivors if o.mutant.key in EQUIVALENT.get(name, {})]
        real = [o for o in survivors if o not in equivalent]
        total_survivors += len(real)
        counts = {s: sum(o.status == s for o in mine) for s in ("killed", "timeout", "invalid")}
        print(
            f"{name}: {len(mine)} mutants, {counts['killed']} killed, {counts['timeout']} "
            f"timed out, {counts['invalid']} invalid, {len(survivors)} survived "
            f"({len(equivalent)} known equivalent)"
        )
        module = TARGETS[name].module
        for o in real:
            print(f"  survivor #{o.mutant.index} {o.mutant.label(module)}")
        for o in equivalent:
            why = EQUIVALENT[name][o.mutant.key]
            print(f"  equivalent #{o.mutant.index} {o.mutant.label(module)}: {why}")
    minutes = (time.monotonic() - started) / 60
    print(f"\n{total_survivors} survivor(s) not known equivalent; {minutes:.1f} min")
    if args.json:
        args.json.write_text(
            json.dumps([dataclasses.asdict(o) for o in outcomes], indent=1, default=str)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
