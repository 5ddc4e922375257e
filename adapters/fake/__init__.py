"""Working in-memory implementations of every port, for tests and for embedding
modelport in an application's own tests. They keep their state in plain attributes
so a test can look at it."""

from .engine import FakeEngine
from .store import InMemoryModelStore, InMemorySessionRepository, FixedClock, fake_model

__all__ = ["FakeEngine", "FixedClock", "InMemoryModelStore", "InMemorySessionRepository", "fake_model"]
