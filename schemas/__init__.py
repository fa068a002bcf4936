"""Wire contract between producer and consumers: Avro schemas, topics, keys and the codec."""
