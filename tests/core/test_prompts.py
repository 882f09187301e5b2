"""Prompts on real ARC tasks, grid text round trips, templates, and code extraction from completions."""

from __future__ import annotations

import ast
import re
from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soar_async.arc import Grid, Pair, Task, load_tasks
from soar_async.prompts import (
    COLOUR_LEGEND,
    DEFAULT_PROMPT_DIR,
    PromptTemplates,
    extract_code,
    feedback_text,
    fenced,
    grid_text,
    parse_grid_text,
    refine_messages,
    render,
    sampling_messages,
    task_block,
)
from soar_async.records import ProgramRecord, evaluate_native, run_native


@cache
def tasks() -> list[Task]:
    return [
        t
        for split in ("training", "evaluation")
        for t in load_tasks(f"arc-agi-1:{split}")
    ]


@cache
def by_id() -> dict[str, Task]:
    return {t.id: t for t in tasks()}


def test_colour_legend() -> None:
    assert COLOUR_LEGEND == (
        "0:Black; 1:Blue; 2:Red; 3:Green; 4:Yellow; 5:Grey; 6:Pink; 7:Orange; 8:Purple; 9:Brown"
    )


def test_grid_text_is_numpy_str_and_round_trips_on_every_arc1_grid() -> None:
    for t in tasks():
        for p in t.train + t.test:
            for g in (p.input, p.output):
                assert g is not None
                text = grid_text(g)
                assert text == str(np.array(g))
                assert parse_grid_text(text) == g


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 60).flatmap(
        lambda c: st.lists(st.lists(st.integers(0, 9), min_size=c, max_size=c), min_size=1, max_size=60)
    )
)
def test_property_grid_text_round_trips(g: Grid) -> None:
    """Also for grids larger than ARC's, where plain numpy would wrap lines or summarise."""
    text = grid_text(g)
    assert "..." not in text
    assert parse_grid_text(text) == g
    assert parse_grid_text(repr(g)) == g


def test_parse_grid_text_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_grid_text("no grid here")


def _grid_blocks(content: str) -> list[tuple[str, Grid]]:
    """(header, grid) for every `## ...:` header followed by a grid in a prompt."""
    out = []
    for m in re.finditer(r"^(## [^\n]*):\n(\[\[.*?\]\])$", content, re.M | re.S):
        out.append((m.group(1), parse_grid_text(m.group(2))))
    return out


def test_sampling_prompt_shows_train_pairs_and_test_inputs_never_test_outputs() -> None:
    for t in tasks():
        msgs = sampling_messages(t)
        assert [m["role"] for m in msgs] == ["system", "user"]
        user = msgs[1]["content"]
        assert "transform" in user and "```python" in user and "list[list[int]]" in user
        assert COLOUR_LEGEND in user
        blocks = _grid_blocks(user)
        expected = []
        for i, p in enumerate(t.train, 1):
            expected.append((f"## Input {i} (grid shape: {len(p.input)} by {len(p.input[0])})", p.input))
            assert p.output is not None
            expected.append((f"## Output {i} (grid shape: {len(p.output)} by {len(p.output[0])})", p.output))
        for i, p in enumerate(t.test, 1):
            expected.append((f"## Test Input {i} (grid shape: {len(p.input)} by {len(p.input[0])})", p.input))
        assert blocks == expected, t.id
        # no test output anywhere, unless that grid is legitimately shown as some other grid
        shown = [g for _, g in blocks]
        for p in t.test:
            assert p.output is not None
            if p.output not in shown:
                assert grid_text(p.output) not in user, t.id
        assert "Test Output" not in user


def _parent(t: Task, code: str) -> ProgramRecord:
    return evaluate_native(t, code)


def test_refine_prompt_structure() -> None:
    t = by_id()["3c9b0459"]
    code = "def transform(grid):\n    return [row[::-1] for row in grid]\n"  # flip, not rotate
    parent = _parent(t, code)
    msgs = refine_messages(t, parent)
    user = msgs[1]["content"]
    assert msgs[0]["role"] == "system" and code.strip() in user
    k = sum(parent.train_correct)
    assert f"{k}/{len(t.train)} train pairs correct" in user
    failing = [i for i, ok in enumerate(parent.train_correct, 1) if not ok]
    assert failing
    for i, ok in enumerate(parent.train_correct, 1):
        if ok:
            assert f"## Output {i}: correct" in user
        else:
            assert f"## Output {i}: incorrect" in user
            assert grid_text(parent.train_outputs[i - 1]) in user
    assert "Test Output 1 (unverified" in user and grid_text(parent.test_outputs[0]) in user
    assert f"Failing train pairs: {', '.join(map(str, failing))}" in user
    assert t.test[0].output is not None and grid_text(t.test[0].output) not in user
    assert "diff" not in user.lower()
    # the task block is the same as in the sampling prompt
    assert task_block(t) in user and task_block(t) in sampling_messages(t)[1]["content"]


def test_feedback_errors_and_big_grids() -> None:
    t = by_id()["3c9b0459"]
    outs: list[Grid | None] = [p.output for p in t.train]
    outs[1] = None
    outs[2] = [[1] * 55 for _ in range(3)]
    errs: list[str | None] = [None, "ZeroDivisionError: division by zero", None, None]
    text = feedback_text(t, outs, errs, [None], ["Traceback ...\n" + "x" * 5000 + "\nTimeoutError: too slow"])
    assert "2/4 train pairs correct" in text
    assert "ZeroDivisionError: division by zero" in text
    assert "too large to show" in text and "3 by 55" in text and "[[1 1 1" not in text
    assert "TimeoutError: too slow" in text and len(text) < 3000
    assert "Failing train pairs: 2, 3" in text
    all_right = feedback_text(t, [p.output for p in t.train], [None] * 4, [[[1]]], [None])
    assert "4/4 train pairs correct" in all_right and "Failing train pairs: none" in all_right


def test_templates_come_from_config_and_can_be_overridden(tmp_path: Path) -> None:
    default = PromptTemplates.default()
    assert default.system == (DEFAULT_PROMPT_DIR / "system.txt").read_text().rstrip("\n")
    assert "{task}" in default.sample_user and "{feedback}" in default.refine_user
    (tmp_path / "system.txt").write_text("You write ARC programs. {not a placeholder}\n")
    custom = PromptTemplates.from_dir(tmp_path)
    assert custom.system == "You write ARC programs. {not a placeholder}"
    assert custom.sample_user == PromptTemplates.builtin().sample_user
    t = by_id()["67a3c6ac"]
    assert sampling_messages(t, custom)[0]["content"] == custom.system
    (tmp_path / "refine_user.txt").write_text("no placeholders\n{task}")
    with pytest.raises(ValueError, match="code"):
        PromptTemplates.from_dir(tmp_path)
    with pytest.raises(FileNotFoundError):
        PromptTemplates.from_dir(tmp_path / "missing")


def test_templates_with_braces_in_values() -> None:
    t = by_id()["67a3c6ac"]
    code = "def transform(grid):\n    d = {'a': '{task}'}\n    return grid\n"
    parent = replace(_parent(t, code), code=code)
    user = refine_messages(t, parent)[1]["content"]
    assert "{'a': '{task}'}" in user and user.count("# Examples") == 1


def test_placeholders_in_values_are_never_filled() -> None:
    """One pass over the template: a parent's code containing `{feedback}`, `{task}` or
    `{code}` comes out verbatim, and the feedback appears exactly once."""
    t = by_id()["67a3c6ac"]
    code = 'def transform(grid):\n    s = "{feedback} {task} {code} {colours}"\n    return grid\n'
    parent = replace(_parent(t, code), code=code)
    user = refine_messages(t, parent)[1]["content"]
    assert 's = "{feedback} {task} {code} {colours}"' in user
    assert user.count("train pairs correct") == 1 and user.count("# Examples") == 1
    assert render("{a}{b}{a}{c}", a="{b}", b="[{a}]") == "{b}[{a}]{b}{c}"
    assert render("{a} {{a}}", a="x") == "x {x}"
    assert render("{a}") == "{a}"


def test_prompts_on_a_task_with_hidden_test_outputs() -> None:
    t = by_id()["67a3c6ac"]
    hidden = Task(t.id, t.train, tuple(Pair(p.input, None) for p in t.test))
    assert sampling_messages(hidden) == sampling_messages(t)


# --------------------------------------------------------------------------- extraction

BODY = "def transform(grid):\n    return [row[::-1] for row in grid]"
NP_BODY = "def transform(grid):\n    a = np.array(grid)\n    return np.fliplr(a).tolist()"

CASES: list[tuple[str, str, str | None]] = [
    ("plain python block", f"Here it is:\n```python\n{BODY}\n```\nDone.", BODY),
    ("no language tag", f"```\n{BODY}\n```", BODY),
    ("py tag and trailing spaces", f"```py   \n{BODY}\n```", BODY),
    ("unterminated final block", f"Sure.\n```python\n{BODY}\n", BODY),
    ("no fence at all", f"The rule flips rows.\n\n{BODY}\n", BODY),
    ("no fence, prose after the code", f"Rule: flip.\n{BODY}\n\nThis works because rows are mirrored.", BODY),
    ("no code", "I cannot solve this puzzle.", None),
    ("empty block", "```python\n```", None),
    (
        "last block with transform wins over a later helper block",
        f"```python\n{BODY}\n```\nUsage:\n```python\nprint(transform([[1, 2]]))\n```",
        BODY,
    ),
    (
        "later transform block wins over earlier draft",
        "```python\ndef transform(grid):\n    return grid\n```\nBetter:\n```python\n" + BODY + "\n```",
        BODY,
    ),
    (
        "test calls and prints dropped",
        f"```python\n{BODY}\n\nexample = [[1, 2], [3, 4]]\nprint(transform(example))\n```",
        BODY,
    ),
    (
        "main guard dropped",
        f"```python\n{BODY}\n\nif __name__ == '__main__':\n    print(transform([[1]]))\n```",
        BODY,
    ),
    ("numpy import added", f"```python\n{NP_BODY}\n```", "import numpy as np\n\n" + NP_BODY),
    (
        "numpy import kept",
        f"```python\nimport numpy as np\n{NP_BODY}\n```",
        "import numpy as np\n\n" + NP_BODY,
    ),
    (
        "helpers, classes, decorators and used constants kept; unused global dropped",
        "```python\nfrom functools import lru_cache\nimport numpy as np\n\nMAPPING = {7: 5}\nUNUSED = 3\n"
        "SHIFT = MAPPING[7] - 5\n\n@lru_cache\ndef helper(v):\n    return MAPPING.get(v, v) + SHIFT\n\n"
        "class Box:\n    pass\n\ndef transform(grid):\n    return [[helper(v) for v in row] for row in grid]\n"
        "\nprint(transform([[7]]))\n```",
        "from functools import lru_cache\nimport numpy as np\n\nMAPPING = {7: 5}\n\nSHIFT = MAPPING[7] - 5\n\n"
        "@lru_cache\ndef helper(v):\n    return MAPPING.get(v, v) + SHIFT\n\nclass Box:\n    pass\n\n"
        "def transform(grid):\n    return [[helper(v) for v in row] for row in grid]",
    ),
    (
        "syntax error returned as is",
        "```python\ndef transform(grid)\n    return grid\n```",
        "def transform(grid)\n    return grid",
    ),
    (
        "non-python block with transform used when no python block has one",
        f'```text\nnotes\n```\n```Python\n{BODY}\n```\n```json\n{{"a": 1}}\n```',
        BODY,
    ),
    (
        "indented block is dedented",
        "1. Code:\n   ```python\n   def transform(grid):\n       return grid[::-1]\n   ```",
        "def transform(grid):\n    return grid[::-1]",
    ),
    (
        "reasoning text with inline backticks then code",
        "I think `transform` should flip. Let me write ``code``.\n```python\n" + BODY + "\n```",
        BODY,
    ),
    (
        "local numpy import in another function does not count",
        "```python\ndef helper(g):\n    import numpy as np\n    return np.array(g)\n\n"
        "def transform(grid):\n    return np.fliplr(helper(grid)).tolist()\n```",
        "import numpy as np\n\ndef helper(g):\n    import numpy as np\n    return np.array(g)\n\n"
        "def transform(grid):\n    return np.fliplr(helper(grid)).tolist()",
    ),
    (
        "think section with a draft, final answer after",
        "<think>\n```python\ndef transform(grid):\n    return grid\n```\n</think>\nFinal:\n```python\n"
        + BODY
        + "\n```",
        BODY,
    ),
    ("block without any definition", "```python\nx = 1\nprint(x)\n```", None),
    (
        "inline triple backticks in prose are not a fence",
        "Use ```transform``` to map.\n```python\ndef transform(g):\n    return g\n```",
        "def transform(g):\n    return g",
    ),
    (
        "inline triple backticks then an unterminated block",
        "Call ```transform(grid)```, it returns ```grid```.\n```python\n" + BODY + "\n",
        BODY,
    ),
    (
        "a fence mid-line does not close the block",
        "```python\n" + BODY + "\n# returns a grid, see ```docs```\n```\nDone ```.",
        BODY,
    ),
    (
        "longer fence holds a shorter one",
        "````python\n" + BODY + '\n\nNOTE = """\n```\n"""\n````',
        BODY,
    ),
    (
        "unfenced transform beside fenced grids",
        "The output is:\n```\n[[1, 2]]\n```\nSo the code is:\n\n" + BODY + "\n\nThat is all.\n```\n[[2, 1]]\n```",
        BODY,
    ),
    (
        "unfenced transform beside a python block without one",
        "```python\nprint(1)\n```\nNow the function:\n" + BODY + "\n",
        BODY,
    ),
    (
        "transform only named in prose: last block used",
        "I will call `def transform(grid)` later.\n```python\ndef helper(g):\n    return g\n```",
        "def helper(g):\n    return g",
    ),
    (
        "indented unfenced code",
        "Answer:\n    def transform(grid):\n        return [row[::-1] for row in grid]\nThat flips.",
        BODY,
    ),
    ("windows line endings", "```python\r\n" + BODY.replace("\n", "\r\n") + "\r\n```\r\n", BODY),
]


@pytest.mark.parametrize(("name", "completion", "expected"), CASES, ids=[c[0] for c in CASES])
def test_extract_code(name: str, completion: str, expected: str | None) -> None:
    got = extract_code(completion)
    if expected is None:
        assert got is None
    else:
        assert got == expected + "\n"


def test_extracted_programs_run() -> None:
    t = by_id()["67a3c6ac"]
    for _name, completion, expected in CASES:
        if expected is None or "def transform(grid)\n" in expected or "def transform" not in expected:
            continue
        code = extract_code(completion)
        assert code is not None
        ast.parse(code)
        _outs, errs = run_native(code, t.inputs())
        assert errs == [None] * len(errs), _name


def test_fenced_round_trips_through_extract() -> None:
    code = "import numpy as np\n\ndef transform(grid):\n    return np.array(grid).T.tolist()\n"
    assert extract_code(fenced(code)) == code


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "```",
                "```python",
                "```py",
                "\n",
                "def transform(grid):",
                "    return grid",
                "import numpy",
                "np.array(x)",
                "print(1)",
                "x = (",
                "    ",
                "if __name__ == '__main__':",
                "text",
                "@dec",
                "class A:",
            ]
        ),
        max_size=30,
    ).map("\n".join)
)
def test_property_extract_never_raises(text: str) -> None:
    """Whatever the model writes, extraction returns code text or None, never an exception."""
    code = extract_code(text)
    assert code is None or (code.strip() and code.endswith("\n"))
