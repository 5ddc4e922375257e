"""Ports (what modelport needs from the outside world, as Protocols) and the use
cases built on them. Imports the domain only."""

from .engine import EngineOptions, InferenceEngine
from .engines import EngineCheck, EngineRegistry, EngineSpec, Resident, ResidentModels
from .sessions import Clock, SessionRepository
from .store import ModelSource, ModelStore, ProgressCallback
from .usecases import ChatTurn, GenerationStream, Services

__all__ = [
    "ChatTurn",
    "Clock",
    "EngineCheck",
    "EngineOptions",
    "EngineRegistry",
    "EngineSpec",
    "GenerationStream",
    "InferenceEngine",
    "ModelSource",
    "ModelStore",
    "ProgressCallback",
    "Resident",
    "ResidentModels",
    "SessionRepository",
    "Services",
]
