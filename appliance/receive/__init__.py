"""Receive: the DICOM upper layer and durable storage.

Associations are accepted and negotiated, each dataset is validated while it streams
into the spool, made durable and indexed before the sender hears 0x0000; the completion
loop decides when a series has finished arriving and hands it to :mod:`appliance.jobs`.
"""
