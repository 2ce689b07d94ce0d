"""Triage: route a queued series, decode, preprocess, run its model, aggregate, threshold.

The worker is thin: claim a job, route it, run the pipeline, build the report, record.
"""
