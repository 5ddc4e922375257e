"""A running server as modelport's backend (``--url``): the Ollama-compatible API
over HTTP, with the standard library only."""

from .client import OllamaClient, RemoteServices, model_from_ollama, normalize_url

__all__ = ["OllamaClient", "RemoteServices", "model_from_ollama", "normalize_url"]
