"""`soar generate`: try the configured model on one task and see what its programs do."""

from __future__ import annotations

import argparse
import json
import sys

import anyio

from soar_async.arc import one_task
from soar_async.commands._common import add_config_args, config_from_args
from soar_async.llm import EngineError


def cmd_generate(args: argparse.Namespace) -> int:
    from soar_async.generate import try_model

    cfg = config_from_args(args)
    task = one_task(args.task, what="--task")
    if not args.json:
        print(
            f"soar generate: task {task.id}, {args.n} completion(s), engine {cfg.model.engine}, "
            f"model {cfg.model.path or cfg.model.name or '(default)'}",
            file=sys.stderr,
            flush=True,
        )
    try:
        gen, tried = anyio.run(lambda: try_model(task, cfg, n=args.n, max_tokens=args.max_tokens))
    except EngineError as e:
        raise ValueError(str(e)) from None
    if args.json:
        print(json.dumps([t.to_dict() for t in tried], indent=1))
        return 0
    for i, t in enumerate(tried, 1):
        right = sum(t.train_correct)
        verdict = "no program" if t.code is None else f"train {right}/{len(t.train_correct)} right"
        errs = sorted({e for e in t.errors if e})
        print(
            f"--- completion {i}: {t.tokens} tokens ({t.finish_reason}), {verdict}"
            + (f"; errors: {', '.join(errs)}" if errs else "")
        )
        print(t.text.strip())
        if t.code is not None:
            print(f"--- program {i}:")
            print(t.code.strip())
    rate = gen.completion_tokens / gen.seconds if gen.seconds else 0.0
    solved = sum(all(t.train_correct) and t.code is not None for t in tried)
    print(
        f"model version {gen.version}: {gen.completion_tokens} tokens in {gen.seconds:.1f} s ({rate:.0f} tokens/s); "
        f"{sum(t.code is not None for t in tried)}/{len(tried)} with a program, {solved} right on every train pair"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="try the configured model on one task: completions, their programs, their train results",
        description="Send the sampling prompt of one task through the configured engine (model.* in the config), "
        "print every completion, the program extracted from it and how it does on the train pairs in the sandbox.",
    )
    p.add_argument("--task", required=True, help="a selector naming one task, e.g. 3c9b0459")
    p.add_argument("--n", type=int, default=4, help="completions to sample (default 4)")
    p.add_argument("--max-tokens", type=int, help="new tokens per completion (default: search.max_tokens_sample)")
    p.add_argument("--json", action="store_true", help="print [{text, code, train_correct, ...}] as JSON")
    add_config_args(p)
    p.set_defaults(func=cmd_generate)
