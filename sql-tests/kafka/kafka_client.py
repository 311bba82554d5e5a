#!/usr/bin/env python3
"""The outside Kafka client of Runnel's tests (confluent-kafka, a current
librdkafka): makes topics and produces messages the tests describe.

  kafka_client.py BOOTSTRAP create-topic TOPIC PARTITIONS
  kafka_client.py BOOTSTRAP produce TOPIC < messages
  kafka_client.py BOOTSTRAP consume TOPIC > messages
  kafka_client.py BOOTSTRAP count TOPIC > figures
  kafka_client.py BOOTSTRAP produce-avro TOPIC SCHEMA ID < records
  kafka_client.py BOOTSTRAP consume-avro TOPIC REGISTRY_URL > messages
  kafka_client.py - registry PORT < schemas

Each line of `messages` is a JSON array [partition, key, value]: key and
value strings or null (a null value is a tombstone). `consume` reads every
partition from its start to its end as a read_committed consumer.
`count` reads every partition to its end as fast as confluent-kafka can
(the benchmark's baseline) and prints one JSON object: messages, bytes,
cpu_s (this process, every thread) and wall_s.
`produce-avro` encodes each line's record ([partition, object]) with
fastavro in SCHEMA (JSON), bare (ID -1) or in the schema registry's wire
format with schema id ID; a line [partition, "text"] sends the text's bytes
as they are (a value that is not Avro). `registry` answers the schema
registry's GET /subjects, GET /schemas/ids/N and POST
/subjects/S/versions on 127.0.0.1:PORT, starting with the schemas of stdin
({"N": schema, ...}), until killed: a stand-in for the registry's REST
API, as far as Avro sources and sinks use it. `consume-avro` reads like
`consume` and decodes keys and values in the registry's wire format with
fastavro, the schemas fetched from REGISTRY_URL.

"""
import io
import json
import struct
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def create_topic(bootstrap, topic, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=int(partitions), replication_factor=1)])
    for future in futures.values():
        future.result(timeout=30)


def produce_lines(bootstrap, topic, message_of):
    """Produces a message per stdin line: message_of(the line's JSON) is
    (partition, key bytes or None, value bytes or None)."""
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
        partition, key, value = message_of(json.loads(line))
        producer.produce(topic, key=key, value=value, partition=partition, on_delivery=delivered)
        count += 1
        if count % 10000 == 0:
            producer.flush(30)
        producer.poll(0)
    left = producer.flush(60)
    if left or failures:
        raise KafkaException(f"{left} messages not delivered, errors: {failures[:3]}")
    print(count)


def produce(bootstrap, topic):
    def message_of(line):
        partition, key, value = line
        return (
            partition,
            None if key is None else key.encode(),
            None if value is None else value.encode(),
        )

    produce_lines(bootstrap, topic, message_of)


def consume(bootstrap, topic):
    for line in read_all(bootstrap, topic, lambda data: data.decode()):
        print(json.dumps(line))


def read_all(bootstrap, topic, decode):
    """Every message of every partition, start to end, read_committed:
    [partition, decode(key), decode(value)] (None stays None)."""
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
            None if key is None else decode(key),
            None if value is None else decode(value),
        ])
        if message.offset() + 1 >= ends.get(message.partition(), 0):
            ends.pop(message.partition(), None)
    consumer.close()
    return out


def consume_avro(bootstrap, topic, registry_url):
    import urllib.request

    import fastavro

    schemas = {}

    def decode(data):
        if len(data) < 5 or data[0] != 0:
            raise ValueError(f"not in the registry's wire format: {data[:8]!r}")
        schema_id = struct.unpack(">I", data[1:5])[0]
        if schema_id not in schemas:
            with urllib.request.urlopen(f"{registry_url}/schemas/ids/{schema_id}") as answer:
                text = json.loads(answer.read())["schema"]
            schemas[schema_id] = fastavro.parse_schema(json.loads(text))
        return fastavro.schemaless_reader(io.BytesIO(data[5:]), schemas[schema_id])

    for line in read_all(bootstrap, topic, decode):
        print(json.dumps(line, default=str))


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


def produce_avro(bootstrap, topic, schema, schema_id):
    import fastavro

    parsed = fastavro.parse_schema(json.loads(schema))
    schema_id = int(schema_id)

    def message_of(line):
        partition, record = line
        if isinstance(record, str):
            return partition, None, record.encode()
        body = io.BytesIO()
        fastavro.schemaless_writer(body, parsed, record)
        header = b"" if schema_id < 0 else b"\x00" + struct.pack(">I", schema_id)
        return partition, None, header + body.getvalue()

    produce_lines(bootstrap, topic, message_of)


def registry(port):
    schemas = {int(k): v for k, v in json.loads(sys.stdin.read()).items()}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            if not (self.path.startswith("/subjects/") and self.path.endswith("/versions")):
                return self.answer(404, {"error_code": 404, "message": "not found"})
            length = int(self.headers.get("Content-Length", 0))
            schema = json.loads(json.loads(self.rfile.read(length))["schema"])
            for schema_id, known in schemas.items():
                if known == schema:
                    return self.answer(200, {"id": schema_id})
            schema_id = max(schemas, default=0) + 1
            schemas[schema_id] = schema
            return self.answer(200, {"id": schema_id})

        def do_GET(self):
            if self.path == "/subjects":
                return self.answer(200, ["runnel-value"])
            prefix = "/schemas/ids/"
            if self.path.startswith(prefix) and self.path[len(prefix):].isdigit():
                schema = schemas.get(int(self.path[len(prefix):]))
                if schema is not None:
                    return self.answer(200, {"schema": json.dumps(schema)})
                return self.answer(404, {"error_code": 40403, "message": "Schema not found"})
            return self.answer(404, {"error_code": 404, "message": "not found"})

        def answer(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", int(port)), Handler)
    print("listening", flush=True)
    server.serve_forever()


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
    elif command == "produce-avro":
        produce_avro(bootstrap, *args)
    elif command == "consume-avro":
        consume_avro(bootstrap, *args)
    elif command == "registry":
        registry(*args)
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
