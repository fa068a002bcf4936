"""Confluence crawl job that publishes Avro records to Kafka."""
