"""LLM backends behind one interface (`engine.Engine`); `open_engine` picks one from the config.

Backends import their heavy libraries (vllm, torch, transformers, httpx) only when chosen, so
the rest of the project never pays for them.
"""

from __future__ import annotations

from soar_async.config import ModelConfig
from soar_async.llm.engine import (
    BASE_VERSION,
    ChatMessage,
    Completion,
    Engine,
    EngineError,
    Generation,
    Sampling,
)

__all__ = [
    "BASE_VERSION",
    "ChatMessage",
    "Completion",
    "Engine",
    "EngineError",
    "Generation",
    "Sampling",
    "open_engine",
]


async def open_engine(model: ModelConfig) -> Engine:
    """Start the configured backend (`model.engine`) on the configured model (`model.path`)."""
    if model.engine == "openai":
        from soar_async.llm.openai_engine import OpenAIEngine

        return await OpenAIEngine.start(model)
    if model.engine == "double":
        from soar_async.llm.double import ScriptedEngine

        return await ScriptedEngine.start(model.path)
    if model.engine == "transformers":
        from soar_async.llm.hf_engine import HFEngine

        return await HFEngine.start(model)
    import anyio

    from soar_async.llm.models import resolve_model_path
    from soar_async.llm.vllm_engine import VLLMEngine

    # The first use of a GGUF or of the default model converts it (a minute): off the event loop.
    model_dir = await anyio.to_thread.run_sync(resolve_model_path, model.path)
    return await VLLMEngine.start(model, model_dir)
