"""Kafka consumers that write Confluence records into MongoDB."""
