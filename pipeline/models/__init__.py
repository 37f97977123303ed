"""Model providers: the seam between an agent step and whatever answers it (offline, Anthropic, scripted)."""

from pipeline.models.base import ModelProvider, ModelRequest, ModelResponse, ToolCall, Usage

__all__ = ["ModelProvider", "ModelRequest", "ModelResponse", "ToolCall", "Usage"]
