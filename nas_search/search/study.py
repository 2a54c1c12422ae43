"""Optuna storage and study handling: URLs, heartbeats, the trial queue.

A search is a queue of planned trials in an Optuna study. ``run`` creates the study once
and enqueues the planned trials (the first ones with budget-aware fixed parameters, the
rest empty so the sampler chooses); every process working on it (``run`` itself, or any
number of ``nas-search worker`` processes on a shared PostgreSQL study) claims WAITING
trials with the storage's own atomic state change, exactly as ``Study.ask`` pops the
queue, and never creates trials of its own. Hence N planned trials run exactly once
each, however many workers share them. A heartbeat thread marks a trial as alive;
trials of a killed worker go stale, are failed by the next worker and re-queued by
Optuna's ``RetryHeartbeatStaleTrialCallback``.

The heartbeat interval (10 s) and grace period (30 s) can be overridden with the
environment variables ``NAS_SEARCH_HEARTBEAT_SECONDS`` and ``NAS_SEARCH_GRACE_SECONDS``
(whole seconds), e.g. to recover a killed worker's trial sooner.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, cast
from urllib.parse import urlparse

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState

from nas_search.errors import UserError

if TYPE_CHECKING:
    from optuna.storages._heartbeat import BaseHeartbeat

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_SECONDS = 10
GRACE_PERIOD_SECONDS = 30
HEARTBEAT_ENVIRONMENT = "NAS_SEARCH_HEARTBEAT_SECONDS"
GRACE_ENVIRONMENT = "NAS_SEARCH_GRACE_SECONDS"
SUPPORTED_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg2", "mysql", "mysql+pymysql")


def default_storage_url(study: str, studies_dir: str | Path = "studies") -> str:
    """``sqlite:///studies/<study>.db`` (relative to the working directory)."""
    return f"sqlite:///{Path(studies_dir) / (study + '.db')}"


def check_study_name(name: str) -> str:
    """Study names become file names: letters, digits, ``-``, ``_`` and ``.``."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", name or ""):
        raise UserError(f"bad study name {name!r}; accepted: letters, digits, '-', '_', '.' (max 100)")
    return name


def _seconds_from_environment(name: str, default: int) -> int:
    """A positive whole number of seconds from the environment variable ``name``."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"{name}={text!r}; accepted: a whole number of seconds, 1 or more")
    return int(text)


def heartbeat_settings() -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds: 10 and 30 unless overridden by
    ``NAS_SEARCH_HEARTBEAT_SECONDS`` / ``NAS_SEARCH_GRACE_SECONDS``."""
    interval = _seconds_from_environment(HEARTBEAT_ENVIRONMENT, HEARTBEAT_INTERVAL_SECONDS)
    grace = _seconds_from_environment(GRACE_ENVIRONMENT, max(GRACE_PERIOD_SECONDS, 3 * interval))
    if grace <= interval:
        raise UserError(f"{GRACE_ENVIRONMENT}={grace} must be longer than the heartbeat interval ({interval} s)")
    return interval, grace


def driver_url(url: str) -> str:
    """``url`` with an explicit PostgreSQL driver where the URL names none.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3; nas-search depends on
    psycopg2 (``psycopg2-binary``), so a bare URL is sent to psycopg2 unless psycopg 3
    is installed. Other URLs are returned unchanged.
    """
    scheme, separator, rest = url.partition("://")
    if scheme == "postgresql" and separator and importlib.util.find_spec("psycopg") is None:
        return f"postgresql+psycopg2://{rest}"
    return url


def without_password(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for files others may read)."""
    if urlparse(url).password is None:
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def open_storage(url: str, heartbeat: bool = True) -> RDBStorage:
    """An RDB storage for ``url`` with heartbeats and stale-trial retry; unreachable or
    malformed URLs are a one-line :class:`UserError`."""
    scheme = urlparse(url).scheme
    if scheme not in SUPPORTED_SCHEMES:
        raise UserError(f"bad storage URL {url!r}; accepted: sqlite:///PATH.db or postgresql://USER@HOST:PORT/DB")
    if scheme == "sqlite":
        path = url[len("sqlite:///") :]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    options = {}
    # Heartbeats and the retry callback are flagged experimental by Optuna; the warnings
    # would break the one-line error contract of the CLI, and choosing them is deliberate.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if heartbeat:
            interval, grace = heartbeat_settings()
            options = {
                "heartbeat_interval": interval,
                "grace_period": grace,
                "failed_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=3),
            }
        engine_options = {"connect_args": {"connect_timeout": 5}} if scheme.startswith("postgresql") else {}
        try:
            return RDBStorage(driver_url(url), engine_kwargs=engine_options, **_heartbeat_keywords(options))
        except Exception as error:  # sqlalchemy raises many types; all mean "cannot use this URL"
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(f"cannot open storage {url!r}: {message[:200]}") from None


def _heartbeat_keywords(options: dict) -> dict:
    """Optuna 5 renamed ``failed_trial_callback`` to ``heartbeat_stale_trial_callback``."""
    import inspect

    parameters = inspect.signature(RDBStorage.__init__).parameters
    if "failed_trial_callback" in options and "heartbeat_stale_trial_callback" in parameters:
        options = dict(options)
        options["heartbeat_stale_trial_callback"] = options.pop("failed_trial_callback")
    return options


def load_existing_study(name: str, storage: RDBStorage) -> optuna.Study:
    """Load a study, or a one-line error listing the studies that exist."""
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [summary.study_name for summary in optuna.get_all_study_summaries(storage)]
        raise UserError(f"no study {name!r} in this storage; existing: {', '.join(names) or 'none'}") from None


def planned_trial_count(study: optuna.Study) -> int:
    """Trials that are planned, running or finished (every trial in the study, less the
    failed ones that Optuna re-queued as new WAITING trials)."""
    trials = study.get_trials(deepcopy=False)
    return sum(1 for trial in trials if trial.state != TrialState.FAIL)


def claim_waiting_trial(study: optuna.Study) -> optuna.Trial | None:
    """Atomically take one WAITING trial (the storage refuses a second claimant), or
    ``None`` when the queue is empty. Never creates a trial.

    The claimed trial's first heartbeat is recorded at once: Optuna never counts a
    RUNNING trial without any heartbeat as stale, so a worker killed before its heartbeat
    thread got going would otherwise leave the trial RUNNING for ever.
    """
    storage = study._storage  # the study's storage object (public attribute in practice)
    beats = bool(getattr(storage, "get_heartbeat_interval", lambda: None)())
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
                if beats:  # a storage with a heartbeat interval records heartbeats
                    cast("BaseHeartbeat", storage).record_heartbeat(frozen._trial_id)
                return optuna.Trial(study, frozen._trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def fail_stale(study: optuna.Study) -> None:
    """Fail trials whose worker stopped sending heartbeats (and re-queue them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fail_stale_trials(study)


@contextmanager
def interrupt_watch() -> Iterator[threading.Event]:
    """Remember Ctrl-C (SIGINT) in an event, and still raise ``KeyboardInterrupt`` at once.

    Python raises ``KeyboardInterrupt`` wherever the main thread happens to be; when that is
    a finaliser (SQLAlchemy cleans up ORM state in weakref callbacks), Python prints
    "Exception ignored" and carries on, so a search could run to its end after Ctrl-C. Loops
    check the event at safe points (between trials) and raise there. A SIGINT that is ignored
    (a background job) stays ignored; outside the main thread nothing is installed.
    """
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield event
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame) -> None:
        event.set()
        if callable(previous):
            previous(signum, frame)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    try:
        yield event
    finally:
        signal.signal(signal.SIGINT, previous)


def raise_if_interrupted(event: threading.Event) -> None:
    """Raise ``KeyboardInterrupt`` if Ctrl-C arrived (see :func:`interrupt_watch`)."""
    if event.is_set():
        raise KeyboardInterrupt


@contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Record a heartbeat for ``trial`` every few seconds while the block runs."""
    storage = study._storage
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            try:
                cast("BaseHeartbeat", storage).record_heartbeat(trial._trial_id)  # it has an interval
            except Exception:  # a transient database error must not kill the trial
                pass
            stop.wait(interval)

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


#: Attempts and pause of :func:`requeue` when the storage refuses a write (a Ctrl-C that
#: landed inside a database transaction, a busy SQLite file).
REQUEUE_ATTEMPTS, REQUEUE_PAUSE_SECONDS = 3, 0.2


def _requeued(study: optuna.Study, number: int) -> bool:
    return any(other.user_attrs.get("requeued_from") == number for other in study.get_trials(deepcopy=False))


def requeue(study: optuna.Study, trial: optuna.Trial) -> None:
    """Put an interrupted trial back in the queue: fail it and enqueue its parameters
    (the planned ones as well as those suggested so far). A trial that already finished
    (e.g. interrupted just after it was told) is left alone, so nothing runs twice. If the
    storage keeps refusing the write, the trial stays RUNNING and the stale-trial check
    requeues it after the heartbeat grace period (the summary names such trials)."""
    for attempt in range(REQUEUE_ATTEMPTS):
        try:
            frozen = study._storage.get_trial(trial._trial_id)
            if frozen.state == TrialState.RUNNING:
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            elif frozen.state != TrialState.FAIL or _requeued(study, trial.number):
                return  # finished, or failed and requeued by an earlier attempt
            params = {**frozen.system_attrs.get("fixed_params", {}), **frozen.params}
            study.enqueue_trial(params, user_attrs={"requeued_from": trial.number}, skip_if_exists=False)
            return
        except optuna.exceptions.StorageInternalError as error:
            if attempt + 1 == REQUEUE_ATTEMPTS:
                logger.warning(
                    "trial %d could not be requeued now (%s); it is retried after the heartbeat grace period",
                    trial.number,
                    str(error).splitlines()[0],
                )
                return
            time.sleep(REQUEUE_PAUSE_SECONDS)
