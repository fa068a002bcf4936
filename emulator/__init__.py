"""A local Confluence REST API v1 server for demos, tests and benchmarks."""
