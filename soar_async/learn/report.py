"""The daemon's per-generation table: did learning help?"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "-"
    return format(v, spec) if spec else str(v)


def render_generations(history: Sequence[dict[str, Any]]) -> str:
    """One line per searched generation: the model that searched, what it found, what its data and training were."""
    head = (
        f"{'gen':>3} {'model':<14} {'programs':>8} {'right':>5} {'solved':>6} {'score':>6} {'search s':>8} "
        f"{'examples':>8} {'loss':>13} {'train s':>7}"
    )
    lines = [head, "-" * len(head)]
    for h in sorted(history, key=lambda h: h.get("generation", 0)):
        ds, tr = h.get("dataset") or {}, h.get("train") or {}
        loss = (
            f"{tr['first_loss']:.2f}->{tr['final_loss']:.2f}"
            if tr.get("first_loss") is not None and tr.get("final_loss") is not None
            else "-"
        )
        score = h.get("score")
        lines.append(
            f"{h.get('generation', 0):>3} {str(h.get('model_version', 'base'))[:14]:<14} {_fmt(h.get('programs')):>8} "
            f"{_fmt(h.get('right_on_train')):>5} {_fmt(h.get('solved')):>6} "
            f"{'-' if score is None else f'{score:.3f}':>6} {_fmt(h.get('search_s'), '.0f'):>8} "
            f"{_fmt(ds.get('examples')):>8} {loss:>13} {_fmt(tr.get('seconds'), '.0f'):>7}"
        )
    return "\n".join(lines)
