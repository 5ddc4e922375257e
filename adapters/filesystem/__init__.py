"""Models and chat sessions on the local disk.

Only the standard library, attrs and the domain are imported here: ``modelport list``
goes through this package and must stay fast.
"""

from .bundled import DEFAULT_BUNDLED, BundledModel
from .gguf_header import GGUFHeader, SkippedArray, TensorInfo, read_gguf_header
from .describe import read_safetensors_header
from .sessions import FileSessionRepository
from .store import FilesystemModelStore, canonical_name, model_folder

__all__ = [
    "DEFAULT_BUNDLED",
    "BundledModel",
    "FileSessionRepository",
    "FilesystemModelStore",
    "GGUFHeader",
    "SkippedArray",
    "TensorInfo",
    "canonical_name",
    "model_folder",
    "read_gguf_header",
    "read_safetensors_header",
]
