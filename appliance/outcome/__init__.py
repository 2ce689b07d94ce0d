"""The outcome stage: what happens once triage has decided.

Triage hands on a :class:`~appliance.outcome.decision.Decision` for every claimed job;
:class:`~appliance.outcome.recorder.Recorder` records it in one transaction (the job's
end and its series' state, the audit row, the result or notice row, the outbox rows, the
drift row) after building the result objects or the "not analysed" notice with
:mod:`appliance.report`, and says what it did in an
:class:`~appliance.outcome.recorder.Outcome`. :mod:`appliance.outcome.studies` keeps the
per-study summary the worklist reads; :mod:`appliance.outcome.upkeep` is the scheduled
work (drift windows, study summaries) the worker owns.
"""
