"""Kaizen's feedback store: every answer and every 👍/👎 kept, and turned into trl training data.

Front: `FeedbackStore` (record, attach_message_ref, find_by_message_ref, vote, retract_vote, set_reason,
record_correction, flush_spool, examples, export, stats; `on_reply` is the engine's hook), its errors, and the
dataset helpers.
"""

from feedback.preferences import EXPORT_KINDS, ExportKind, FeedbackStats, StatsRow, scrub_text
from feedback.store import FeedbackError, FeedbackStore, StoreUnavailable, UnknownInteraction, WriteStatus

__all__ = [
    "EXPORT_KINDS",
    "ExportKind",
    "FeedbackError",
    "FeedbackStats",
    "FeedbackStore",
    "StatsRow",
    "StoreUnavailable",
    "UnknownInteraction",
    "WriteStatus",
    "scrub_text",
]
