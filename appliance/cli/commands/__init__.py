"""The command groups, in the order ``appliance --help`` lists them."""

from appliance.cli.commands import (
    accounts,
    audit,
    backup,
    config,
    dicom,
    drift,
    models,
    outbox,
    report,
    run,
    status,
    sync,
)

COMMANDS = (run, status, config, models, audit, backup, report, sync, drift, accounts, outbox, dicom)
