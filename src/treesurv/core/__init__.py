"""Core: configuration and typed parameters, the feature schema, data I/O and
validation, the feature encoding and the crash journal. Imports no other layer."""
