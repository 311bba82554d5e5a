#!/usr/bin/env python3
"""The outside Kafka client of Runnel's tests (confluent-kafka, a current
librdkafka): makes topics and produces messages the tests describe.

  kafka_client.py BOOTSTRAP create-topic TOPIC PARTITIONS
  kafka_client.py BOOTSTRAP produce TOPIC < messages
  kafka_client.py BOOTSTRAP consume TOPIC > messages
  kafka_client.py BOOTSTRAP count TOPIC > figures

Each line of `messages` is a JSON array [partition, key, value]: key and
value strings or null (a null value is a tombstone). `consume` reads every
partition from its start to its end as a read_committed consumer.
`count` reads every partition to its end as fast as confluent-kafka can
(the benchmark's baseline) and prints one JSON object: messages, bytes,
cpu_s (this process, every thread) and wall_s.

"""
import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
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


def consume(bootstrap, topic):
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "runnel-tests",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    metadata = consumer.list_topics(topic, timeout=30)
    partitions = sorted(metadata.topics[topic].partitions)
    ends = {}
    assignment = []
    for partition in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
        if high > low:
            ends[partition] = high
            assignment.append(TopicPartition(topic, partition, low))
    consumer.assign(assignment)
    out = []
    while ends:
        message = consumer.poll(5)
        if message is None:
            # Only transaction markers may be left before the end.
            for tp in consumer.position([TopicPartition(topic, p) for p in list(ends)]):
                if tp.offset >= ends.get(tp.partition, 0):
                    ends.pop(tp.partition, None)
            continue
        if message.error():
            raise KafkaException(message.error())
        key = message.key()
        value = message.value()
        out.append([
            message.partition(),
            None if key is None else key.decode(),
            None if value is None else value.decode(),
        ])
        if message.offset() + 1 >= ends.get(message.partition(), 0):
            ends.pop(message.partition(), None)
    consumer.close()
    for line in out:
        print(json.dumps(line))


def count(bootstrap, topic):
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "runnel-bench", "enable.auto.commit": False}
    )
    metadata = consumer.list_topics(topic, timeout=30)
    assignment = []
    total = 0
    for partition in sorted(metadata.topics[topic].partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
        total += high - low
        assignment.append(TopicPartition(topic, partition, low))
    cpu, wall = time.process_time(), time.monotonic()
    consumer.assign(assignment)
    messages = size = 0
    last = time.monotonic()
    while messages < total:
        # consume() waits for all num_messages or the timeout: a short one,
        # so the last batch does not wait.
        batch = consumer.consume(num_messages=10000, timeout=0.05)
        if not batch:
            if time.monotonic() - last > 10:
                raise KafkaException(f"no message for 10 s after {messages} of {total}")
            continue
        last = time.monotonic()
        for message in batch:
            if message.error():
                raise KafkaException(message.error())
            messages += 1
            size += len(message.value() or b"")
    figures = {
        "messages": messages,
        "bytes": size,
        "cpu_s": time.process_time() - cpu,
        "wall_s": time.monotonic() - wall,
    }
    consumer.close()
    print(json.dumps(figures))


def main():
    bootstrap, command, *args = sys.argv[1:]
    if command == "create-topic":
        create_topic(bootstrap, *args)
    elif command == "produce":
        produce(bootstrap, *args)
    elif command == "consume":
        consume(bootstrap, *args)
    elif command == "count":
        count(bootstrap, *args)
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
