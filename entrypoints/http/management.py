"""Ollama's model management routes: pull, push, create, blobs, copy, delete, ps."""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import attrs
import falcon

from modelport.domain import InvalidRequest, ModelRef, PullProgress
from modelport.ports import ProgressCallback, Services

from . import model_schemas, schemas
from .blobs import CHUNK_BYTES, BlobStore
from .resources import MAX_BODY_BYTES, body_stream, read_json
from .model_schemas import progress
from .schemas import Clock, error
from .streaming import NDJSON, line, log_unexpected

PUSH_REFUSAL = (
    "push is not supported: modelport does not publish models to a registry; "
    "copy the model's files (see /api/show) or push them with the Hugging Face tools"
)


NO_SOURCE = (
    "this server has no model source to pull from; install 'modelport[hub]', or import local files with /api/create"
)


class Ps:
    """``/api/ps``: the models loaded in this worker process."""

    def __init__(self, services: Services, clock: Clock) -> None:
        self._services = services
        self._clock = clock

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._services.expire()
        now = self._clock()
        resp.media = model_schemas.ps(self._services.loaded(now), now)


class Copy:
    def __init__(self, services: Services, max_body: int = MAX_BODY_BYTES) -> None:
        self._services = services
        self._max_body = max_body

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        source, destination = model_schemas.parse_copy(read_json(req, self._max_body))
        self._services.copy(source, destination)
        resp.status = falcon.HTTP_200


class Delete:
    """``/api/delete``; then the blobs that only the deleted model used go too."""

    def __init__(self, services: Services, blobs: BlobStore | None = None, max_body: int = MAX_BODY_BYTES) -> None:
        self._services = services
        self._blobs = blobs
        self._max_body = max_body

    def on_delete(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._services.remove(model_schemas.parse_name(read_json(req, self._max_body)))
        if self._blobs is not None:
            self._blobs.prune()
        resp.status = falcon.HTTP_200


class Push:
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise falcon.HTTPNotImplemented(description=PUSH_REFUSAL)


class Pull:
    """``/api/pull``: progress lines while the model downloads, then ``success``.

    The download runs in a thread of its own; when the client goes away, the next
    progress report from the source stops it (and the store discards what it had).
    """

    def __init__(self, services: Services, max_body: int = MAX_BODY_BYTES) -> None:
        self._services = services
        self._max_body = max_body

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, self._max_body)
        name, trust_note = pull_target(body)
        stream = schemas.parse_stream(body)
        if self._services.source is None:
            raise falcon.HTTPNotImplemented(description=NO_SOURCE)
        run = Background(lambda report: self._services.pull(name, report))
        if not stream:
            try:
                for _ in run:
                    pass
            finally:
                run.cancel()
            resp.media = {"status": "success"}
            return
        steps = run.started()
        if trust_note:
            steps = _prepend(PullProgress(status=trust_note), steps)
        resp.content_type = NDJSON
        resp.stream = _progress_lines(steps, run)


def pull_target(body: dict[str, Any]) -> tuple[str, str | None]:
    """The model to pull, with Hugging Llama's ``revision`` (a branch, tag or commit)
    folded in, and what to say about ``trust_remote_code`` (None when not asked)."""
    from ..catalog import resolve_name
    from ..cli_seeds import TRUST_REMOTE_CODE_NOTE

    name = resolve_name(model_schemas.parse_name(body))
    revision = body.get("revision")
    if revision is not None:
        if not isinstance(revision, str) or not revision:
            raise InvalidRequest('field "revision" must be a non-empty string')
        ref = ModelRef.parse(name)
        if ref.revision and ref.revision != revision:
            raise InvalidRequest(f"'{name}' names revision {ref.revision}; \"revision\" says {revision}: give one")
        name = str(attrs.evolve(ref, revision=ModelRef.parse(f"x@{revision}").revision))
    trust = body.get("trust_remote_code", False)
    if not isinstance(trust, bool):
        raise InvalidRequest('field "trust_remote_code" must be true or false')
    return name, TRUST_REMOTE_CODE_NOTE.replace("--trust-remote-code", "trust_remote_code") if trust else None


def _progress_lines(steps: Iterator[PullProgress], run: "Background") -> Iterator[bytes]:
    """Ollama's progress lines; before a file's first one, Hugging Llama's
    ``{"status": "downloading", "path": FILE}``."""
    announced: set[str] = set()
    try:
        for step in steps:
            if step.file and step.file not in announced:
                announced.add(step.file)
                yield line({"status": "downloading", "path": step.file})
            yield line(progress(step))
    except Exception as exc:  # the status is already sent: report it in the stream
        yield line(error(log_unexpected(exc, "pull")))
    finally:
        run.cancel()


class Cancelled(Exception):
    """Raised inside a background task whose client went away."""


class Background:
    """Runs ``work(report)`` in a daemon thread and hands out what it reports, in
    order; iterating re-raises the error the work ended with. :meth:`cancel` makes
    the work's next report raise :class:`Cancelled`."""

    _END = object()

    def __init__(self, work: Callable[[ProgressCallback], Any]) -> None:
        self._queue: queue.Queue[Any] = queue.Queue()
        self._cancelled = threading.Event()
        threading.Thread(target=self._run, args=(work,), daemon=True, name="modelport-pull").start()

    def _run(self, work: Callable[[ProgressCallback], Any]) -> None:
        try:
            work(self._report)
        except BaseException as exc:  # handed to the request thread
            self._queue.put(_Failure(exc))
        else:
            self._queue.put(self._END)

    def _report(self, step: PullProgress) -> None:
        if self._cancelled.is_set():
            raise Cancelled("the client went away")
        self._queue.put(step)

    def __iter__(self) -> Iterator[PullProgress]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def started(self) -> Iterator[PullProgress]:
        """The steps, with the first already taken: what fails at once fails with a
        real HTTP status."""
        steps = iter(self)
        try:
            first = next(steps)
        except StopIteration:
            return iter(())
        return _prepend(first, steps)

    def cancel(self) -> None:
        self._cancelled.set()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _prepend(first: PullProgress, rest: Iterator[PullProgress]) -> Iterator[PullProgress]:
    yield first
    yield from rest


class Create:
    """``/api/create``: a model from a local file or folder, from an installed model
    (a copy), or from uploaded blobs (``files``). As with Ollama, an installed model
    of the same name is replaced."""

    def __init__(
        self, services: Services, blobs: BlobStore, max_body: int = MAX_BODY_BYTES, *, allowed: Sequence[str] = ()
    ) -> None:
        self._services = services
        self._blobs = blobs
        self._max_body = max_body
        self._allowed = tuple(allowed)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        call = model_schemas.parse_create(read_json(req, self._max_body))
        steps = self._create(call) + [{"status": "success"}]
        self._blobs.prune()  # the blobs only a replaced model used
        if call.stream:
            resp.content_type = NDJSON
            resp.text = b"".join(line(step) for step in steps).decode()
        else:
            resp.media = steps[-1]

    def _create(self, call: model_schemas.CreateCall) -> list[dict[str, Any]]:
        defaults = [{"status": "writing model defaults"}] if not call.defaults.empty else []
        if call.files:
            with self._blobs.assembled(call.files) as folder:
                path = str(_importable(folder, call.files))
                self._services.import_model(call.model, path, call.defaults, replace=True)
            self._blobs.record_use(call.model, [digest for _, digest in call.files])
            steps = [{"status": f"using existing layer sha256:{digest}"} for _, digest in call.files]
            return steps + defaults + [{"status": "writing manifest"}]
        assert call.source is not None
        source = call.source
        if ModelRef.parse(source).is_path:
            source = allowed_path(source, self._allowed)
        self._services.create(call.model, source, call.defaults)
        verb = "importing" if ModelRef.parse(call.source).is_path else "using existing model"
        return [{"status": f"{verb} {call.source}"}, *defaults, {"status": "writing manifest"}]


def allowed_path(source: str, allowed: Sequence[str]) -> str:
    """The real path of ``source`` when it lies inside one of the ``allowed`` folders
    (``MODELPORT_ALLOWED_PATHS``); anything else is refused with the same answer
    whether or not it exists, so that the refusal tells nothing about the disk."""
    real = os.path.realpath(source) if os.path.isabs(source) else None
    for folder in allowed:
        root = os.path.realpath(folder)
        if real is not None and os.path.commonpath([real, root]) == root:
            return real
    where = (
        "the folders in MODELPORT_ALLOWED_PATHS" if allowed else "folders listed in MODELPORT_ALLOWED_PATHS (none are)"
    )
    raise falcon.HTTPForbidden(
        description=f"'from' may be an installed model, or an absolute path inside {where}; '{source}' is neither"
    )


def _importable(folder: Path, files: tuple[tuple[str, str], ...]) -> Path:
    """The one GGUF file when that is all there is, else the folder."""
    if len(files) == 1 and not files[0][0].endswith(".json"):
        return folder / files[0][0]
    return folder


class Blob:
    """``/api/blobs/{digest}``: HEAD says whether it is here; POST uploads it."""

    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs

    def on_head(self, req: falcon.Request, resp: falcon.Response, digest: str) -> None:
        if not self._blobs.exists(model_schemas.blob_digest(digest)):
            raise falcon.HTTPNotFound(description=f"blob {digest} not found")

    def on_post(self, req: falcon.Request, resp: falcon.Response, digest: str) -> None:
        hex_digest = model_schemas.blob_digest(digest)
        try:
            if self._blobs.exists(hex_digest):
                body = body_stream(req)
                while body.read(CHUNK_BYTES):
                    pass  # leave the connection clean for the next request
                resp.status = falcon.HTTP_200
                return
            self._blobs.save(hex_digest, body_stream(req))
        except TimeoutError:  # the client stalled (see worker.py)
            raise falcon.HTTPError(falcon.HTTP_408, description="the blob did not arrive in time") from None
        resp.status = falcon.HTTP_201
