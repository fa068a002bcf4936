"""Kafka and MongoDB connection settings shared by the producer and the consumers."""
