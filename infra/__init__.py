"""Launchers for the local Kafka broker and the FerretDB server used without Docker."""
