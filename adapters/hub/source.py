"""The Hugging Face Hub (or a mirror of it) as a :class:`~modelport.ports.ModelSource`.

huggingface_hub does the talking: ``HfApi.model_info`` lists a repository's files with
their sizes and the Hub's sha256 (LFS) or git blob ids, ``get_hf_file_metadata`` resolves
each file (ETag, commit, size, CDN redirect), and its HTTP session streams the bytes.
What modelport adds: which files to fetch (:mod:`.selection`), resuming a file where an
interrupted pull left it (a Range request), retries with backoff, per-file progress,
digest checks, and errors that say what to do.

huggingface_hub is imported on the first fetch or search, never before.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from typing import Any, Callable, TypeVar

import attrs

from modelport.domain import (
    DownloadError,
    InvalidRequest,
    ModelFile,
    ModelNotFound,
    ModelportError,
    ModelRef,
    PullProgress,
    SearchHit,
)

from .download import DigestMismatch, Incomplete, Workspace, stream_into
from .selection import RemoteFile, select_files

DEFAULT_ENDPOINT = "https://huggingface.co"
SORT_KEYS = {
    "downloads": "downloads",
    "likes": "likes",
    "trending": "trending_score",
    "created": "created_at",
    "modified": "last_modified",
    "updated": "last_modified",
}
MAX_SEARCH_LIMIT = 1000
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# At most this often (seconds) a progress event for the same file, besides its first and last.
PROGRESS_INTERVAL_S = 0.1

T = TypeVar("T")
ProgressCallback = Callable[[PullProgress], None]


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """``attempts`` tries of each request, waiting ``first_delay`` seconds after the first
    failure and twice as long after each next one, at most ``max_delay``. A download
    that made progress before failing starts counting again."""

    attempts: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    first_delay: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    max_delay: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))

    def delay(self, failures: int) -> float:
        return min(self.first_delay * 2 ** (failures - 1), self.max_delay)


class HubModelSource:
    """Models from the Hugging Face Hub at ``endpoint`` (the official Hub by default, or
    a mirror). ``token``: a string, False for none, or None to use huggingface_hub's own
    (``HF_TOKEN``, then the token saved by ``hf auth login``)."""

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        token: str | bool | None = None,
        retry: RetryPolicy = RetryPolicy(),
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self.token = token
        self.retry = retry
        self.timeout = timeout
        self._sleep = sleep

    # -- the port ---------------------------------------------------------------------

    def fetch(self, ref: ModelRef, folder: str, progress: ProgressCallback) -> list[ModelFile]:
        """Download the files ``ref`` needs into ``folder``, resuming what an earlier
        pull left there; every file's digest is checked against the Hub's."""
        hub = _import_hub()
        token = self._token(hub)
        context = _Context(ref=ref, endpoint=self._checked_endpoint(), has_token=bool(token))
        api = hub.HfApi(endpoint=context.endpoint, token=token or False, library_name="modelport")
        info = self._call(
            context,
            lambda: api.model_info(ref.repo_id, revision=ref.revision, files_metadata=True, timeout=self.timeout),
        )
        selection = select_files(ref, _remote_files(info))
        if selection.note:
            progress(PullProgress(status=selection.note))
        revision = info.sha or ref.revision or "main"
        workspace = Workspace(folder)
        done: dict[str, ModelFile] = {}
        for remote in selection.files:
            found = workspace.finished(remote) or workspace.reuse_installed(remote)
            if found is not None:
                done[remote.path] = found
                progress(_file_progress(remote, found.size, found.size))
        pending = sorted((f for f in selection.files if f.path not in done), key=lambda f: (f.size or 0, f.path))
        _check_space(folder, pending, workspace, ref)
        for remote in pending:
            done[remote.path] = self._download(hub, context, token, revision, remote, workspace, progress)
        progress(PullProgress(status="verifying sha256 digest"))
        workspace.finish(f.path for f in selection.files)
        return [done[f.path] for f in selection.files]

    def search(
        self,
        query: str,
        *,
        author: str | None = None,
        filter: str | None = None,
        sort: str = "downloads",
        limit: int = 20,
    ) -> list[SearchHit]:
        """Models on the Hub matching ``query``, most downloaded (or ``sort``) first."""
        if sort not in SORT_KEYS:
            raise InvalidRequest(f"sort must be one of {', '.join(SORT_KEYS)}, got {sort!r}")
        if not isinstance(limit, int) or not 1 <= limit <= MAX_SEARCH_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_SEARCH_LIMIT}, got {limit!r}")
        hub = _import_hub()
        token = self._token(hub)
        context = _Context(ref=None, endpoint=self._checked_endpoint(), has_token=bool(token))
        api = hub.HfApi(endpoint=context.endpoint, token=token or False, library_name="modelport")
        # list_models retries on its own (huggingface_hub's backoff): one attempt here.
        models = self._call(
            context,
            retry=False,
            action=lambda: list(
                api.list_models(
                    search=query or None,
                    author=author or None,
                    filter=filter or None,
                    sort=SORT_KEYS[sort],
                    limit=limit,
                )
            ),
        )
        return [
            SearchHit(
                repo_id=m.id,
                downloads=m.downloads or 0,
                likes=m.likes or 0,
                pipeline_tag=m.pipeline_tag,
                tags=tuple(m.tags or ()),
            )
            for m in models
        ]

    # -- one file -----------------------------------------------------------------------

    def _download(
        self,
        hub: Any,
        context: "_Context",
        token: str | None,
        revision: str,
        remote: RemoteFile,
        workspace: Workspace,
        progress: ProgressCallback,
    ) -> ModelFile:
        url = hub.hf_hub_url(context.repo_id, remote.path, revision=revision, endpoint=context.endpoint)
        meta = self._call(
            context,
            lambda: hub.get_hf_file_metadata(
                url, token=token or False, timeout=self.timeout, endpoint=context.endpoint
            ),
            file=remote.path,
        )
        size = meta.size if meta.size is not None else remote.size
        remote = attrs.evolve(remote, size=size)
        partial = workspace.partial(remote, meta.etag or remote.source_digest or "unknown")
        headers = hub.build_hf_headers(token=token or False, library_name="modelport")
        if not hub.same_origin(url, meta.location):
            headers.pop("authorization", None)  # a CDN's signed URL: the token stays on the Hub
        report = _Throttled(progress, remote, size)

        def attempt() -> ModelFile:
            stream_into(
                hub.get_session(),
                meta.location,
                headers,
                partial,
                size,
                report,
                hub.hf_raise_for_status,
                hub.timeout(self.timeout),
            )
            return workspace.install(remote, partial)

        file = self._call(context, attempt, file=remote.path, progress_of=lambda: partial.size)
        report.finish(file.size)
        return file

    # -- errors and retries -------------------------------------------------------------

    def _call(
        self,
        context: "_Context",
        action: Callable[[], T],
        *,
        file: str | None = None,
        progress_of: Callable[[], int] | None = None,
        retry: bool = True,
    ) -> T:
        """``action()``, retried with backoff on transient failures; huggingface_hub's
        and the network's errors become modelport's."""
        failures = 0
        mismatches = 0
        before = progress_of() if progress_of else 0
        while True:
            try:
                return action()
            except DigestMismatch as exc:
                mismatches += 1
                if mismatches > 1:
                    raise DownloadError(
                        f"{exc}, twice; the server at {context.endpoint} serves a damaged file "
                        "(try again later, or another mirror)"
                    ) from None
            except Exception as exc:  # noqa: BLE001 - sorted into transient or final below
                if not _transient(exc):
                    raise _translate(exc, context, file) from None
                now = progress_of() if progress_of else 0
                failures = 1 if now > before else failures + 1
                before = now
                if not retry or failures >= self.retry.attempts:
                    raise _translate(exc, context, file) from None
                self._sleep(self.retry.delay(failures))

    def _token(self, hub: Any) -> str | None:
        if isinstance(self.token, str):
            return self.token or None
        if self.token is False:
            return None
        return hub.get_token()

    def _checked_endpoint(self) -> str:
        if not self.endpoint.startswith(("http://", "https://")):
            raise InvalidRequest(
                f"the Hub endpoint must be an http(s) URL, got {self.endpoint!r} (check MODELPORT_MIRROR)"
            )
        return self.endpoint


@attrs.frozen(kw_only=True)
class _Context:
    ref: ModelRef | None
    endpoint: str
    has_token: bool

    @property
    def repo_id(self) -> str:
        assert self.ref is not None
        return self.ref.repo_id


class _Throttled:
    """Progress events of one file: the first, then at most every PROGRESS_INTERVAL_S."""

    def __init__(self, progress: ProgressCallback, remote: RemoteFile, total: int | None) -> None:
        self._progress, self._remote, self._total = progress, remote, total
        self._last = -1.0

    def __call__(self, completed: int) -> None:
        now = time.monotonic()
        if self._last < 0 or now - self._last >= PROGRESS_INTERVAL_S:
            self._last = now
            self._progress(_file_progress(self._remote, completed, self._total))

    def finish(self, size: int) -> None:
        self._progress(_file_progress(self._remote, size, size))


def _file_progress(remote: RemoteFile, completed: int, total: int | None) -> PullProgress:
    return PullProgress(
        status=f"pulling {remote.short_id}",
        file=remote.path,
        digest=f"sha256:{remote.sha256}" if remote.sha256 else None,
        completed=completed,
        total=total,
    )


def _remote_files(info: Any) -> list[RemoteFile]:
    files = []
    for sibling in info.siblings or ():
        lfs = sibling.lfs
        files.append(
            RemoteFile(
                path=sibling.rfilename,
                size=lfs.size if lfs else sibling.size,
                sha256=lfs.sha256 if lfs else None,
                blob_id=None if lfs else sibling.blob_id,
            )
        )
    return files


def _check_space(folder: str, pending: list[RemoteFile], workspace: Workspace, ref: ModelRef) -> None:
    needed = sum(max((f.size or 0) - workspace.partial_bytes(f), 0) for f in pending)
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DownloadError(
            f"no space left for '{ref}': it needs {_human(needed)} more but {_human(free)} is free "
            f"where models are kept ({os.path.dirname(os.path.dirname(folder))}); free some space "
            "(modelport rm <model>) or point MODELPORT_HOME at a larger disk, then pull again"
        )


def _human(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{count} B"


# -- huggingface_hub, imported on first use -------------------------------------------------


class _Hub:
    """The parts of huggingface_hub (and its HTTP library) this adapter uses."""

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        import httpx2  # huggingface_hub's HTTP library from version 2 on
        import huggingface_hub
        from huggingface_hub import errors
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        self.httpx = httpx2
        self.errors = errors
        self.HfApi = huggingface_hub.HfApi
        self.hf_hub_url = huggingface_hub.hf_hub_url
        self.get_hf_file_metadata = huggingface_hub.get_hf_file_metadata
        self.get_token = huggingface_hub.get_token
        self.build_hf_headers = build_hf_headers
        self.get_session = get_session
        self.hf_raise_for_status = hf_raise_for_status

    def timeout(self, seconds: float) -> Any:
        return self.httpx.Timeout(seconds)

    def same_origin(self, url: str, other: str) -> bool:
        a, b = self.httpx.URL(url), self.httpx.URL(other)
        return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


_HUB: _Hub | None = None
_HUB_LOCK = threading.Lock()


def _import_hub() -> _Hub:
    global _HUB
    with _HUB_LOCK:
        if _HUB is None:
            try:
                _HUB = _Hub()
            except ImportError as exc:
                raise DownloadError(
                    f"pulling from the Hub needs huggingface_hub ({exc}); install it with: pip install 'modelport[hub]'"
                ) from None
        return _HUB


def _transient(exc: BaseException) -> bool:
    hub = _HUB
    if isinstance(exc, Incomplete):
        return True
    if hub is None:
        return False
    if isinstance(exc, hub.errors.OfflineModeIsEnabled):
        return False
    if isinstance(exc, hub.httpx.TransportError):
        return not isinstance(exc, hub.httpx.ProxyError)
    if isinstance(exc, hub.errors.HfHubHTTPError):
        response = getattr(exc, "response", None)
        return response is not None and response.status_code in _RETRY_STATUSES
    return False


def _translate(exc: BaseException, context: _Context, file: str | None) -> ModelportError:
    """A huggingface_hub, network or disk error as a modelport error that says what to do."""
    if isinstance(exc, ModelportError):
        return exc
    hub = _import_hub()
    errors = hub.errors
    ref = context.ref
    repo = ref.repo_id if ref else ""
    page = f"{context.endpoint}/{repo}"
    resume = "pull again: it resumes where it stopped"
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return DownloadError(
            "huggingface_hub's offline mode is on (HF_HUB_OFFLINE): installed models work, but "
            "pulling and searching need the network; unset HF_HUB_OFFLINE to use the Hub"
        )
    if isinstance(exc, errors.GatedRepoError):
        if context.has_token:
            return DownloadError(
                f"'{repo}' is a gated model and your Hugging Face token has no access to it yet: "
                f"request access at {page} (signed in as the token's owner), wait for approval, then pull again"
            )
        return DownloadError(
            f"'{repo}' is a gated model: sign in at {context.endpoint}, accept its conditions at {page}, "
            f"create a read token at {context.endpoint}/settings/tokens and set HF_TOKEN to it, then pull again"
        )
    if isinstance(exc, errors.RevisionNotFoundError) and ref is not None:
        return ModelNotFound(str(ref), hint=f"'{repo}' has no revision '{ref.revision}' on {context.endpoint}")
    if isinstance(exc, errors.RepositoryNotFoundError) and ref is not None:
        private = (
            "if it is private, check that your token (HF_TOKEN) can read it"
            if context.has_token
            else "if it is private, set HF_TOKEN to a token that can read it"
        )
        return ModelNotFound(str(ref), hint=f"no repository '{repo}' on {context.endpoint}; {private}")
    if isinstance(exc, errors.DisabledRepoError):
        return DownloadError(f"'{repo}' has been disabled on {context.endpoint}")
    if isinstance(exc, errors.RemoteEntryNotFoundError):
        return DownloadError(f"'{file}' is no longer in '{repo}' (it changed during the pull); pull again")
    if isinstance(exc, errors.HfHubHTTPError) and getattr(exc, "response", None) is not None:
        status = exc.response.status_code
        if status == 401:
            return DownloadError(
                f"{context.endpoint} refused the credentials (401): check HF_TOKEN "
                f"({context.endpoint}/settings/tokens), or unset it for public models"
            )
        if status == 403:
            return DownloadError(
                f"{context.endpoint} refused access to '{repo or 'the Hub'}' (403): if it is gated or private, "
                f"request access at {page} and set HF_TOKEN to a token of an account that has it"
            )
        if status == 429:
            return DownloadError(f"{context.endpoint} is limiting requests (429): wait a minute and {resume}")
        what = f"'{file}' of '{repo}'" if file else f"'{repo}'" if repo else "the search"
        return DownloadError(f"{context.endpoint} answered {status} for {what}; {resume}")
    if isinstance(exc, Incomplete) or isinstance(exc, hub.httpx.TransportError):
        return DownloadError(
            f"cannot reach {context.endpoint} ({type(exc).__name__}: {exc}); check the network "
            f"connection (or MODELPORT_MIRROR) and {resume}"
        )
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DownloadError(
            f"no space left on the disk holding the models ({exc.strerror}); free some space "
            f"(modelport rm <model>) or point MODELPORT_HOME at a larger disk, then {resume}"
        )
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return DownloadError(f"cannot write the download ({exc}); check MODELPORT_HOME's permissions")
    raise exc
