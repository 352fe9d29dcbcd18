"""A SASL gate in front of a Kafka broker, for the Kafka sink's SASL tests: it answers the SASL
requests of each connection itself (PLAIN, and SCRAM-SHA-256/512 with `scramp`, a SCRAM
implementation independent of flagtail's client) and, once the client is authenticated, pipes
the connection to the broker. A request other than ApiVersions before that closes the
connection, as a broker requiring authentication does. tansu's own SASL cannot be used: it keeps
users only in storage engines this build lacks.

usage: kafka_sasl.py LISTEN_PORT BROKER_PORT USER PASSWORD
Prints `ready`, then one line per login: `ok MECHANISM USER` or `refused MECHANISM USER: WHY`."""
import asyncio, struct, sys

from scramp import ScramException, ScramMechanism

MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED, ILLEGAL_SASL_STATE = 33, 58, 34


def say(line):
    print(line, flush=True)


async def read_frame(reader):
    size = struct.unpack(">i", await reader.readexactly(4))[0]
    return await reader.readexactly(size)


def frame(body):
    return struct.pack(">i", len(body)) + body


def uvarint(data, at):
    value, shift = 0, 0
    while True:
        b = data[at]
        at += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, at
        shift += 7


def put_uvarint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def parse_header(data):
    """api key, version, correlation id, and where the body starts (request header v1, or v2 with
    tagged fields for flexible versions: SaslAuthenticate v2+)."""
    api, version, corr = struct.unpack(">hhi", data[:8])
    n = struct.unpack(">h", data[8:10])[0]
    at = 10 + max(n, 0)
    if api == SASL_AUTHENTICATE and version >= 2:
        count, at = uvarint(data, at)
        for _ in range(count):
            _, at = uvarint(data, at)
            size, at = uvarint(data, at)
            at += size
    return api, version, corr, at


class Login:
    """One connection's SASL exchange."""

    def __init__(self, user, password):
        self.user, self.password = user, password
        self.mechanism, self.scram, self.name = None, None, "?"
        self.done = False

    def handshake(self, body):
        n = struct.unpack(">h", body[:2])[0]
        asked = body[2:2 + n].decode()
        listed = b"".join(struct.pack(">h", len(m)) + m.encode() for m in MECHANISMS)
        listing = struct.pack(">i", len(MECHANISMS)) + listed
        if asked not in MECHANISMS:
            return struct.pack(">h", UNSUPPORTED_SASL_MECHANISM) + listing
        self.mechanism = asked
        return struct.pack(">h", 0) + listing

    def step(self, token):
        """The server's answer to one client token: (error code, message, bytes)."""
        if self.mechanism == "PLAIN":
            parts = token.split(b"\0")
            self.name = parts[1].decode(errors="replace") if len(parts) == 3 else "?"
            if len(parts) == 3 and parts[1:] == [self.user.encode(), self.password.encode()]:
                return self.accept(b"")
            return self.refuse("wrong user or password")
        if self.mechanism is None:
            return self.refuse("no SaslHandshake first")
        try:
            if self.scram is None:
                self.scram = self.scram_server()
                text = token.decode()
                self.name = next((p[2:] for p in text.split(",") if p.startswith("n=")), "?")
                self.scram.set_client_first(text)
                return 0, None, self.scram.get_server_first().encode()
            self.scram.set_client_final(token.decode())
            return self.accept(self.scram.get_server_final().encode())
        except ScramException as e:
            return self.refuse(str(e))

    def scram_server(self):
        mechanism = ScramMechanism(self.mechanism)
        info = mechanism.make_auth_info(self.password, iteration_count=4096)

        def lookup(name):
            if name != self.user:
                raise ScramException("unknown user")
            return info

        return mechanism.make_server(lookup)

    def accept(self, data):
        self.done = True
        say(f"ok {self.mechanism} {self.name}")
        return 0, None, data

    def refuse(self, why):
        say(f"refused {self.mechanism} {self.name}: {why}")
        return SASL_AUTHENTICATION_FAILED, f"Authentication failed: {why}", b""


def authenticate_answer(version, code, message, data):
    if version >= 2:
        text = b"\0" if message is None else put_uvarint(len(message) + 1) + message.encode()
        return (b"\0" + struct.pack(">h", code) + text + put_uvarint(len(data) + 1) + data
                + struct.pack(">q", 0) + b"\0")
    text = struct.pack(">h", -1) if message is None else struct.pack(">h", len(message)) + message.encode()
    out = struct.pack(">h", code) + text + struct.pack(">i", len(data)) + data
    return out + (struct.pack(">q", 0) if version >= 1 else b"")


def token_of(version, body):
    if version >= 2:
        size, at = uvarint(body, 0)
        return body[at:at + size - 1]
    size = struct.unpack(">i", body[:4])[0]
    return body[4:4 + size]


async def serve(client_r, client_w, broker_port, user, password):
    login = Login(user, password)
    broker = None
    try:
        while not login.done:
            data = await read_frame(client_r)
            api, version, corr, at = parse_header(data)
            head = struct.pack(">i", corr)
            if api == API_VERSIONS:
                if broker is None:
                    broker = await asyncio.open_connection("127.0.0.1", broker_port)
                broker[1].write(frame(data))
                client_w.write(frame(await read_frame(broker[0])))
            elif api == SASL_HANDSHAKE and version >= 1:
                client_w.write(frame(head + login.handshake(data[at:])))
            elif api == SASL_AUTHENTICATE:
                code, message, answer = login.step(token_of(version, data[at:]))
                client_w.write(frame(head + authenticate_answer(version, code, message, answer)))
                if code:
                    await client_w.drain()
                    return
            else:
                say(f"refused {login.mechanism} {login.name}: request {api} before authentication")
                return
            await client_w.drain()
        if broker is None:
            broker = await asyncio.open_connection("127.0.0.1", broker_port)
        await asyncio.gather(pipe(client_r, broker[1]), pipe(broker[0], client_w))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        client_w.close()
        if broker is not None:
            broker[1].close()


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def main():
    port, broker_port, user, password = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    server = await asyncio.start_server(
        lambda r, w: serve(r, w, broker_port, user, password), "127.0.0.1", port)
    say("ready")
    async with server:
        await server.serve_forever()


asyncio.run(main())
