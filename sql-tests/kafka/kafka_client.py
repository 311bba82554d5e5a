#!/usr/bin/env python3
"""The outside Kafka client of Runnel's tests (confluent-kafka, a current
librdkafka): makes topics and produces messages the tests describe.

  kafka_client.py BOOTSTRAP create-topic TOPIC PARTITIONS
  kafka_client.py BOOTSTRAP produce TOPIC < messages

Each line of `messages` is a JSON array [partition, key, value]: key and
value strings or null (a null value is a tombstone).
"""
import json
import sys

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def create_topic(bootstrap, topic, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=int(partitions), replication_factor=1)])
    for future in futures.values():
        future.result(timeout=30)


def produce(bootstrap, topic):
    # One request in flight per partition: a retried batch cannot overtake
    # the next, so each partition keeps the order the test gave.
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "max.in.flight.requests.per.connection": 1}
    )
    failures = []

    def delivered(error, _message):
        if error is not None:
            failures.append(error)

    count = 0
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        partition, key, value = json.loads(line)
        producer.produce(
            topic,
            key=None if key is None else key.encode(),
            value=None if value is None else value.encode(),
            partition=partition,
            on_delivery=delivered,
        )
        count += 1
        if count % 10000 == 0:
            producer.flush(30)
        producer.poll(0)
    left = producer.flush(60)
    if left or failures:
        raise KafkaException(f"{left} messages not delivered, errors: {failures[:3]}")
    print(count)


def main():
    bootstrap, command, *args = sys.argv[1:]
    if command == "create-topic":
        create_topic(bootstrap, *args)
    elif command == "produce":
        produce(bootstrap, *args)
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
