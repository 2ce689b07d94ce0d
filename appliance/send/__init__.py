"""Send: the durable result outbox and the sender that delivers it to PACS."""
