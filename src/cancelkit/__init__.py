"""cancelkit: Stop means stop, in async Python services and LLM agents.

The primitives live here: reasons and exceptions, ``CancelToken``, the ``gather``
family and ``to_thread``. Each is defined in a private module and re-exported; this
module is the one front door.
"""

from ._adopt import Adopted as Adopted
from ._adopt import adopt_tasks as adopt_tasks
from ._amap import amap as amap
from ._as_completed import AsCompleted as AsCompleted
from ._as_completed import as_completed as as_completed
from ._background import Background as Background
from ._budget import Budget as Budget
from ._budget import Pricing as Pricing
from ._budget import Reservation as Reservation
from ._exceptions import AbandonedThreadWarning as AbandonedThreadWarning
from ._exceptions import BackendUnavailable as BackendUnavailable
from ._exceptions import BudgetExceeded as BudgetExceeded
from ._exceptions import CancelKind as CancelKind
from ._exceptions import Cancelled as Cancelled
from ._exceptions import CancelReason as CancelReason
from ._exceptions import RunCancelled as RunCancelled
from ._exceptions import other_errors as other_errors
from ._gather import gather as gather
from ._module import publish as _publish
from ._race import race as race
from ._receipt import LayerStop as LayerStop
from ._receipt import StopReceipt as StopReceipt
from ._receipt import keep_partial as keep_partial
from ._run import Run as Run
from ._run import RunOutcome as RunOutcome
from ._run import spawn as spawn
from ._runs import Runs as Runs
from ._runs_backend import RunInfo as RunInfo
from ._runs_backend import RunsBackend as RunsBackend
from ._stoppable import stoppable as stoppable
from ._streams import GuardedStream as GuardedStream
from ._streams import guard_stream as guard_stream
from ._sync_run import SyncRun as SyncRun
from ._sync_streams import SyncGuardedStream as SyncGuardedStream
from ._sync_streams import guard_sync_stream as guard_sync_stream
from ._tasks import OwnedTask as OwnedTask
from ._tasks import RunStatus as RunStatus
from ._threads import thread_stats as thread_stats
from ._threads import to_thread as to_thread
from ._token import CancelHandle as CancelHandle
from ._token import CancelToken as CancelToken
from ._token import current_token as current_token
from ._token import link as link
from ._transaction import LedgerRow as LedgerRow
from ._transaction import Store as Store
from ._transaction import Transaction as Transaction
from ._transaction import transaction as transaction

__all__ = (
    "AbandonedThreadWarning",
    "Adopted",
    "AsCompleted",
    "BackendUnavailable",
    "Background",
    "Budget",
    "BudgetExceeded",
    "CancelHandle",
    "CancelKind",
    "CancelReason",
    "CancelToken",
    "Cancelled",
    "GuardedStream",
    "LayerStop",
    "LedgerRow",
    "OwnedTask",
    "Pricing",
    "Reservation",
    "Run",
    "RunCancelled",
    "RunInfo",
    "RunOutcome",
    "RunStatus",
    "Runs",
    "RunsBackend",
    "StopReceipt",
    "Store",
    "SyncGuardedStream",
    "SyncRun",
    "Transaction",
    "adopt_tasks",
    "amap",
    "as_completed",
    "current_token",
    "gather",
    "guard_stream",
    "guard_sync_stream",
    "keep_partial",
    "link",
    "other_errors",
    "race",
    "spawn",
    "stoppable",
    "thread_stats",
    "to_thread",
    "transaction",
)

__version__ = "0.1.0"

_publish(__name__, globals())
