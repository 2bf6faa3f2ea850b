"""The prediction log: queued by the server, written by a writer process, read back
for drift checks."""
