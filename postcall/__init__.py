"""Post-call QA: rubric scoring with evidence, root causes apart from the agent, redaction, review.

Public face:

``NoteDrafter(settings, store)``
    The pipeline stage (name "postcall", consumes ``calls``, produces ``notes``): on CallEnded it
    reads the stored call and returns a draft :class:`~livecoach.events.QANote` whose ``body`` is the
    note JSON (see :class:`livecoach.postcall.schema.Note`).
``draft_note(call, rubric, ...)``
    The pure drafting function (a stored call dict in, the note body out).
``load_rubric(path=None)`` / ``Rubric`` / ``RubricNotApproved``
    Versioned rubric YAML with an approval state (``default_rubric.yaml`` ships in the package).
``Redactor``
    Pattern + known-customer-fields PII redaction for notes and excerpts.
"""

from livecoach.postcall import tables as _tables  # noqa: F401  (registers the tables on the metadata)
from livecoach.postcall._scoring import draft_note
from livecoach.postcall.drafter import NoteDrafter
from livecoach.postcall.redact import Redactor
from livecoach.postcall.rubric import Rubric, RubricError, RubricNotApproved, load_rubric

__all__ = ["NoteDrafter", "Redactor", "Rubric", "RubricError", "RubricNotApproved", "draft_note", "load_rubric"]
