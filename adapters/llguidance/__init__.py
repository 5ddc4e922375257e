"""Structured output and tool calls through llguidance (imported lazily, when a
constraint is first checked or compiled)."""

from .compiler import LLGuidanceCompiler, grammar_for

__all__ = ["LLGuidanceCompiler", "grammar_for"]
