"""Chat templates rendered with jinja2 (imported on first use)."""

from .templates import JinjaChatTemplates, sandboxed

__all__ = ["JinjaChatTemplates", "sandboxed"]
