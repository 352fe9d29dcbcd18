"""Reads every record of a Kafka topic with kafka-python (an independent client) and prints one
JSON line per record: partition, offset, key, value (base64), headers. With --proto FILE, each
value is also decoded as `flipt.audit.Event` from FILE compiled by grpcio-tools' protoc.

usage: kafka_read.py BOOTSTRAP [--sasl USER PASSWORD] TOPIC WANT [--proto FILE]
With --sasl it logs in with SASL PLAIN. Stops once WANT records are read, or after 3 s without a
new one."""
import base64, importlib, json, os, sys, tempfile, time

from kafka import KafkaConsumer, TopicPartition


def decoder(proto):
    from grpc_tools import protoc
    from google.protobuf import json_format
    import grpc_tools
    out = tempfile.mkdtemp()
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    folder, name = os.path.split(os.path.abspath(proto))
    rc = protoc.main(["protoc", f"-I{folder}", f"-I{include}", f"--python_out={out}", name])
    if rc != 0:
        sys.exit(f"protoc failed on {proto}")
    sys.path.insert(0, out)
    module = importlib.import_module(name[:-len(".proto")] + "_pb2")

    def decode(value):
        event = module.Event()
        event.ParseFromString(value)
        return json_format.MessageToDict(event, preserving_proto_field_name=True)

    return decode


def main():
    args = sys.argv[1:]
    bootstrap, login = args.pop(0), {}
    if args[0] == "--sasl":
        login = dict(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                     sasl_plain_username=args[1], sasl_plain_password=args[2])
        args = args[3:]
    topic, want = args[0], int(args[1])
    decode = decoder(args[3]) if len(args) > 3 and args[2] == "--proto" else None
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, api_version=(2, 8),
                             enable_auto_commit=False, auto_offset_reset="earliest", **login)
    partitions = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    seen, last = 0, time.monotonic()
    while seen < want and time.monotonic() - last < 3:
        for tp, records in consumer.poll(timeout_ms=200).items():
            for r in records:
                line = {
                    "partition": r.partition,
                    "offset": r.offset,
                    "key": r.key.decode() if r.key is not None else None,
                    "value": base64.b64encode(r.value or b"").decode(),
                    "headers": {k: v.decode() for k, v in (r.headers or [])},
                }
                if decode:
                    line["event"] = decode(r.value)
                print(json.dumps(line), flush=True)
                seen += 1
                last = time.monotonic()
    consumer.close()


main()
