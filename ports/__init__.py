"""Ports (what modelport needs from the outside world, as Protocols) and the use
cases built on them. Imports the domain only."""

from .engine import EngineOptions, InferenceEngine
from .engines import EngineCheck, EngineRegistry, EngineSpec, Resident, ResidentModels
from .scheduler import Generation, Scheduler, SlotStats
from .slots import Chunk, Sample, SlotEngine, SlotSampling, Step, TextDecoder, TokenConstraint
from .sessions import SessionRepository
from .store import ModelSource, ModelStore, ProgressCallback
from .templates import ChatTemplates
from .usecases import ChatTurn, GenerationStream, Services
from .backend import Backend

__all__ = [
    "Backend",
    "ChatTemplates",
    "ChatTurn",
    "Chunk",
    "Generation",
    "Sample",
    "Scheduler",
    "SlotEngine",
    "SlotSampling",
    "SlotStats",
    "Step",
    "TextDecoder",
    "TokenConstraint",
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
