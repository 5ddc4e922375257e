"""modelport's domain: pure values and rules, with no I/O and no framework.

Only the standard library and attrs are imported here (a test enforces it).
"""

from .errors import (
    CapabilityMissing,
    ContextOverflow,
    DownloadError,
    EngineUnavailable,
    InvalidModelName,
    InvalidRequest,
    ModelLoadError,
    ModelNotFound,
    ModelportError,
    ModelReadOnly,
    ServerBusy,
    PromptTooLong,
    UnsupportedArchitecture,
)
from .generation import (
    MAX_TOKEN_BYTES,
    Completion,
    EmbeddingRequest,
    Embeddings,
    FinishReason,
    GenerationRequest,
    TokenEvent,
    Usage,
    system_and_user,
)
from .messages import ChatMessage, ChatSession, Conversation, Role
from .models import DEFAULT_TAG, Capability, ModelFile, ModelFormat, ModelInfo, ModelRef
from .sampling import SamplingPolicy
from .stopping import StopMatcher
from .store import DiskUsage, FileCheck, PullProgress, SearchHit, VerifyReport

__all__ = [
    "DEFAULT_TAG",
    "MAX_TOKEN_BYTES",
    "Capability",
    "CapabilityMissing",
    "ChatMessage",
    "ChatSession",
    "Completion",
    "ContextOverflow",
    "Conversation",
    "DiskUsage",
    "DownloadError",
    "EmbeddingRequest",
    "Embeddings",
    "EngineUnavailable",
    "FileCheck",
    "FinishReason",
    "GenerationRequest",
    "InvalidModelName",
    "InvalidRequest",
    "ModelFile",
    "ModelFormat",
    "ModelInfo",
    "ModelLoadError",
    "ModelNotFound",
    "ModelReadOnly",
    "ModelRef",
    "ModelportError",
    "PromptTooLong",
    "PullProgress",
    "Role",
    "SamplingPolicy",
    "SearchHit",
    "ServerBusy",
    "StopMatcher",
    "TokenEvent",
    "UnsupportedArchitecture",
    "Usage",
    "VerifyReport",
    "system_and_user",
]
