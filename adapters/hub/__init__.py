"""Models from the Hugging Face Hub (or a mirror): pull with resume, and search.

Importing this package is cheap: huggingface_hub is imported on the first pull or search.
"""

from .selection import DEFAULT_QUANTIZATIONS, RemoteFile, Selection, folder_files, quantization_of, select_files
from .source import DEFAULT_ENDPOINT, HubModelSource, RetryPolicy

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_QUANTIZATIONS",
    "HubModelSource",
    "RemoteFile",
    "RetryPolicy",
    "Selection",
    "folder_files",
    "quantization_of",
    "select_files",
]
