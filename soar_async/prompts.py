"""Chat prompts for sampling and refining ARC programs, and extracting code from completions.

The structure follows SOAR (DESIGN.md section 3) because the released SOAR models were
trained on it: a short system message; a user message asking for `transform` taking and
returning list[list[int]] in a fenced python block, with the colour legend, every train
pair as `## Input i (grid shape: R by C):` / `## Output i (...)` followed by the grid as
`str(numpy.array(grid))`, and each test input as `## Test Input i (...)` without output.
The refinement prompt adds the parent's code and feedback (k/n train pairs correct,
per-pair verdicts, predicted grids for the wrong pairs, unverified test predictions, the
failing pairs; never a cell diff). The wording is our own and lives in
`config/prompts/*.txt`, overridable per run with `PromptTemplates.from_dir`.
"""

from __future__ import annotations

import ast
import re
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soar_async.arc import Grid, Task
from soar_async.records import ProgramRecord

Message = dict[str, str]

COLOURS = ("Black", "Blue", "Red", "Green", "Yellow", "Grey", "Pink", "Orange", "Purple", "Brown")
COLOUR_LEGEND = "; ".join(f"{i}:{name}" for i, name in enumerate(COLOURS))
"""`0:Black; 1:Blue; ...; 9:Brown`, as the SOAR prompts write it."""

BIG_GRID_SIDE = 50
"""Predicted grids with a side this long or longer are described, not printed."""

MAX_ERROR_CHARS = 800
"""Error texts (tracebacks) in feedback are cut to their last this many characters."""

DEFAULT_PROMPT_DIR = Path(__file__).resolve().parents[1] / "config" / "prompts"
"""Where the default templates live in a source checkout."""

TEMPLATE_FILES = {"system": "system.txt", "sample_user": "sample_user.txt", "refine_user": "refine_user.txt"}


def render(template: str, **values: str) -> str:
    """Fill `{name}` placeholders in one pass over the template.

    Not `str.format`: templates may contain literal braces (code examples). Not one
    replacement after another either: a value (a parent's code, a grid) that contains
    `{feedback}` or `{task}` must come out verbatim, never be filled in itself. Unknown
    placeholders are left as they are.
    """
    if not values:
        return template
    pattern = re.compile(r"\{(" + "|".join(re.escape(name) for name in values) + r")\}")
    return pattern.sub(lambda m: values[m.group(1)], template)


@dataclass(frozen=True, slots=True)
class PromptTemplates:
    """The three texts that make up every prompt; placeholders `{colours}`, `{task}`,
    `{code}` (refine only) and `{feedback}` (refine only)."""

    system: str
    sample_user: str
    refine_user: str

    @classmethod
    def builtin(cls) -> PromptTemplates:
        """The project's own wording, `config/prompts/*.txt` of the checkout (the one copy)."""
        missing = [f for f in TEMPLATE_FILES.values() if not (DEFAULT_PROMPT_DIR / f).is_file()]
        if missing:
            raise FileNotFoundError(
                f"default prompt templates {', '.join(missing)} not found in {DEFAULT_PROMPT_DIR}: "
                "soar-async runs from a source checkout (pip install -e .)"
            )
        return cls(**{k: (DEFAULT_PROMPT_DIR / f).read_text().rstrip("\n") for k, f in TEMPLATE_FILES.items()})

    @classmethod
    def from_dir(cls, path: str | Path, *, fallback: PromptTemplates | None = None) -> PromptTemplates:
        """Read `system.txt`, `sample_user.txt`, `refine_user.txt` from `path`.

        A missing file takes its text from `fallback` (default: the project's templates), so
        a run can override just one of them. A trailing newline is dropped.
        """
        base = fallback or cls.builtin()
        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"prompt template folder {folder} does not exist")
        texts = {}
        for field_name, fname in TEMPLATE_FILES.items():
            f = folder / fname
            texts[field_name] = f.read_text().rstrip("\n") if f.is_file() else getattr(base, field_name)
        if "{task}" not in texts["sample_user"] or "{task}" not in texts["refine_user"]:
            raise ValueError(f"{folder}: user templates must contain the {{task}} placeholder")
        for ph in ("{code}", "{feedback}"):
            if ph not in texts["refine_user"]:
                raise ValueError(f"{folder}: refine_user.txt must contain the {ph} placeholder")
        return cls(**texts)

    @classmethod
    def default(cls) -> PromptTemplates:
        return cls.builtin()


_default_templates: PromptTemplates | None = None


def default_templates() -> PromptTemplates:
    global _default_templates
    if _default_templates is None:
        _default_templates = PromptTemplates.default()
    return _default_templates


# --------------------------------------------------------------------------- grids as text


def grid_text(grid: Grid) -> str:
    """`str(numpy.array(grid))` without numpy's summarising or line wrapping for big grids.

    For every ARC-sized grid (at most 30x30 = 900 < 1000 cells, rows under 75 characters)
    this is exactly `str(np.array(grid))`.
    """
    return np.array2string(np.array(grid, dtype=np.int64), threshold=sys.maxsize, max_line_width=sys.maxsize)


def parse_grid_text(text: str) -> Grid:
    """Inverse of `grid_text`; also reads Python list literals such as `[[1, 2], [3, 4]]`."""
    rows = re.findall(r"\[([^\[\]]*)\]", text)
    if not rows:
        raise ValueError(f"no grid rows in {text[:60]!r}")
    grid = [[int(v) for v in re.split(r"[\s,]+", row.strip()) if v] for row in rows]
    if any(not r for r in grid):
        raise ValueError(f"empty row in {text[:60]!r}")
    return grid


def _shape(grid: Grid) -> str:
    return f"{len(grid)} by {len(grid[0]) if grid else 0}"


def task_block(task: Task) -> str:
    """Every train pair with its output, then every test input without its output."""
    parts = ["# Examples"]
    for i, pair in enumerate(task.train, 1):
        assert pair.output is not None
        parts.append(f"## Input {i} (grid shape: {_shape(pair.input)}):\n{grid_text(pair.input)}")
        parts.append(f"## Output {i} (grid shape: {_shape(pair.output)}):\n{grid_text(pair.output)}")
    parts.append("# Test")
    for i, pair in enumerate(task.test, 1):
        parts.append(f"## Test Input {i} (grid shape: {_shape(pair.input)}):\n{grid_text(pair.input)}")
    return "\n\n".join(parts)


def sampling_messages(task: Task, templates: PromptTemplates | None = None) -> list[Message]:
    """System + user messages asking for a fresh `transform` for `task` (test outputs never shown)."""
    t = templates or default_templates()
    user = render(t.sample_user, colours=COLOUR_LEGEND, task=task_block(task))
    return [{"role": "system", "content": t.system}, {"role": "user", "content": user}]


# --------------------------------------------------------------------------- refinement feedback


def _shown(grid: Grid) -> str:
    if len(grid) >= BIG_GRID_SIDE or (grid and len(grid[0]) >= BIG_GRID_SIDE):
        return f"(a grid of shape {_shape(grid)}, too large to show)"
    return f"(grid shape: {_shape(grid)}):\n{grid_text(grid)}"


def _error(err: str) -> str:
    err = err.strip()
    if len(err) > MAX_ERROR_CHARS:
        err = "..." + err[-MAX_ERROR_CHARS:]
    return err


def feedback_text(
    task: Task,
    train_outputs: Sequence[Grid | None],
    train_errors: Sequence[str | None],
    test_outputs: Sequence[Grid | None],
    test_errors: Sequence[str | None],
) -> str:
    """What the parent did: k/n right, per-pair verdicts, its grids where wrong, its test guesses.

    Correctness is recomputed here against `task`, so the same function serves relabelled
    tasks. No cell-by-cell diff (SOAR found it unhelpful); the model compares grids itself.
    """
    n = len(task.train)
    right = [o is not None and o == p.output for o, p in zip(train_outputs, task.train, strict=True)]
    lines = [f"The program gets {sum(right)}/{n} train pairs correct."]
    for i, (ok, out, err) in enumerate(zip(right, train_outputs, train_errors, strict=True), 1):
        if ok:
            lines.append(f"## Output {i}: correct")
        elif out is None:
            lines.append(
                f"## Output {i}: incorrect, the program failed with this error:\n{_error(err or 'no output')}"
            )
        else:
            lines.append(f"## Output {i}: incorrect, the program returned {_shown(out)}")
    for i, (out, err) in enumerate(zip(test_outputs, test_errors, strict=True), 1):
        if out is None:
            lines.append(
                f"## Test Output {i} (unverified): the program failed with this error:\n"
                f"{_error(err or 'no output')}"
            )
        else:
            lines.append(
                f"## Test Output {i} (unverified, the true answer is hidden): the program returned "
                f"{_shown(out)}"
            )
    failing = [str(i) for i, ok in enumerate(right, 1) if not ok]
    lines.append(f"Failing train pairs: {', '.join(failing)}" if failing else "Failing train pairs: none")
    return "\n\n".join(lines)


def refine_messages(
    task: Task, parent: ProgramRecord, templates: PromptTemplates | None = None
) -> list[Message]:
    """System + user messages asking to repair `parent`, a program run on every input of `task`."""
    t = templates or default_templates()
    fb = feedback_text(
        task, parent.train_outputs, parent.train_errors, parent.test_outputs, parent.test_errors
    )
    user = render(
        t.refine_user, colours=COLOUR_LEGEND, task=task_block(task), code=parent.code.strip("\n"), feedback=fb
    )
    return [{"role": "system", "content": t.system}, {"role": "user", "content": user}]


def fenced(code: str) -> str:
    """The assistant answer used as a training target: the code in a python fence, nothing else."""
    return f"```python\n{code.strip(chr(10))}\n```"


# --------------------------------------------------------------------------- code extraction

_FENCE_OPEN = re.compile(r"^[ \t]*(`{3,})[ \t]*([^`]*)$")
"""An opening fence: a line that starts (after indentation) with three or more backticks,
followed by an optional language tag without backticks. A ``` inside prose is not one."""
_FENCE_CLOSE = re.compile(r"^[ \t]*(`{3,})[ \t]*$")
"""A closing fence: a line of backticks only (at least as many as the opening fence)."""
_PY_TAGS = {"", "python", "py", "python3", "py3"}
_CODE_START = re.compile(r"^[ \t]*(?:import |from \S+ import |def |class |@)", re.M)
_TRANSFORM_LINE = re.compile(r"^[ \t]*def transform\(", re.M)


def _scan(text: str) -> tuple[list[tuple[str, str]], str]:
    """(language tag, body) of each fenced block, and the text outside all blocks.

    Fences count only at the start of a line; a final block without a closing fence runs
    to the end of the text.
    """
    lines = text.split("\n")
    blocks: list[tuple[str, str]] = []
    outside: list[str] = []
    i = 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if m is None:
            outside.append(lines[i])
            i += 1
            continue
        ticks = len(m.group(1))
        words = m.group(2).split()
        tag = words[0].lower() if words else ""
        body: list[str] = []
        i += 1
        while i < len(lines):
            close = _FENCE_CLOSE.match(lines[i])
            if close is not None and len(close.group(1)) >= ticks:
                break
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence (or past the end)
        blocks.append((tag, "\n".join(body)))
    return blocks, "\n".join(outside)


def _parsable_prefix(code: str) -> str | None:
    """The longest run of leading lines, dedented, that parses and defines `transform`
    (prose after unfenced code is cut off); None when there is none."""
    lines = code.splitlines()
    for end in range(len(lines), 0, -1):
        candidate = textwrap.dedent("\n".join(lines[:end]))
        if "def transform(" not in candidate:
            break
        try:
            ast.parse(candidate)
        except (SyntaxError, ValueError):
            continue
        return candidate
    return None


def _unfenced(text: str, *, must_parse: bool) -> str | None:
    """Code written without a fence: from the first line that looks like code (or, failing
    that, from the `def transform(` line) to the last line that keeps it parsable.

    None when `text` has no line starting `def transform(`-bearing code. When nothing parses,
    the text from the first code line is returned (so that running it reports the syntax
    error) unless `must_parse`.
    """
    if "def transform(" not in text:
        return None
    starts = [m.start() for m in (_CODE_START.search(text), _TRANSFORM_LINE.search(text)) if m]
    if not starts:
        return None
    for start in dict.fromkeys(starts):
        code = _parsable_prefix(text[start:])
        if code is not None:
            return code
    return None if must_parse else text[starts[0] :]


def _pick_block(text: str) -> str | None:
    blocks, outside = _scan(text)
    if not blocks:
        return _unfenced(text, must_parse=False)
    for tier in (
        [b for tag, b in blocks if tag in _PY_TAGS and "def transform(" in b],
        [b for _, b in blocks if "def transform(" in b],
    ):
        if tier:
            return tier[-1]
    code = _unfenced(outside, must_parse=True)
    if code is not None:
        return code
    for tier in ([b for tag, b in blocks if tag in _PY_TAGS], [b for _, b in blocks]):
        if tier:
            return tier[-1]
    return None


def _names_loaded(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _assigned_names(node: ast.stmt) -> set[str]:
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, ast.AnnAssign):
        targets = [node.target]
    names: set[str] = set()
    for t in targets:
        for n in ast.walk(t):
            if isinstance(n, ast.Name):
                names.add(n.id)
    return names


def _clean(code: str) -> str:
    """Keep top-level imports, functions, classes and the constants they use; drop the rest.

    SOAR keeps imports and function definitions only; we also keep classes (helpers written
    as small classes are common) and top-level assignments to plain names that a kept
    definition reads (e.g. `COLOR_MAP = {...}`), followed transitively. Dropped: test calls,
    prints, `if __name__ == "__main__":` blocks, example grids. Code that does not parse is
    returned unchanged so that running it reports the syntax error.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return code
    lines = code.splitlines()
    keep: list[ast.stmt] = []
    assigns: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(
            node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        ):
            keep.append(node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and _assigned_names(node):
            assigns.append(node)
    needed: set[str] = set()
    if assigns:  # the names the definitions read matter only when there are constants to keep
        for node in keep:
            needed |= _names_loaded(node)
    chosen: set[int] = set()
    changed = bool(assigns)
    while changed:
        changed = False
        for node in assigns:
            if id(node) not in chosen and _assigned_names(node) & needed:
                chosen.add(id(node))
                needed |= _names_loaded(node)
                changed = True
    kept = sorted(keep + [a for a in assigns if id(a) in chosen], key=lambda n: n.lineno)
    out = ""
    prev_import = False
    for node in kept:
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        end = node.end_lineno or node.lineno
        is_import = isinstance(node, (ast.Import, ast.ImportFrom))
        if out:
            out += "\n" if is_import and prev_import else "\n\n"
        out += "\n".join(lines[start - 1 : end])
        prev_import = is_import
    return out


def _binds_np(code: str) -> bool:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return re.search(r"^\s*import\s+numpy\s+as\s+np\b", code, re.M) is not None
    for node in tree.body:  # a local import inside one function does not serve the others
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((a.asname or a.name) == "np" for a in node.names):
                return True
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "np" for t in node.targets
        ):
            return True
    return False


def extract_code(completion: str) -> str | None:
    """The program in an LLM completion, cleaned, or None when there is none.

    Fences count only at the start of a line (an inline ``` in prose is not one), and a
    block without a closing fence runs to the end of the text. Picks the last ```python
    block containing `def transform(`, falling back to the last such block in any
    language; then to code written outside the fences (taken from its first line of code
    up to where it stops parsing); then to the last python block, then the last block.
    Then keeps only top-level definitions (see `_clean`), and prepends
    `import numpy as np` when the code uses `np.` without binding `np`.
    """
    block = _pick_block(completion.replace("\r\n", "\n"))
    if block is None:
        return None
    code = _clean(textwrap.dedent(block).strip("\n")).strip("\n")
    if not code.strip():
        return None
    if re.search(r"\bnp\.", code) and not _binds_np(code):
        code = "import numpy as np\n\n" + code
    return code + "\n"
