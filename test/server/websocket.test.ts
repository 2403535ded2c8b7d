// One client's bad bytes end that client's connection, never the server: malformed WebSocket frames sent after a
// bare upgrade (no token, no Origin, no connection_init) are answered with the close code RFC 6455 names, and the
// server goes on serving HTTP and other WebSockets.
import { connect, type Socket } from "node:net";
import { randomBytes } from "node:crypto";
import WebSocket from "ws";
import { useQuireServer } from "../support/server.ts";

// A loaded machine can take seconds between the upgrade and the bad frame: graphql-ws's wait for connection_init
// (4408 after it) must not end the connection before the frame is judged.
const fx = useQuireServer({ env: { LIVE_CONNECTION_INIT_SECONDS: "60" } });
const server = fx.app;

/** A raw TCP connection that completes a WebSocket handshake on /graphql, as a hostile client would. */
async function bareUpgrade(): Promise<{ socket: Socket; received: () => Buffer; ended: Promise<void> }> {
  const { port } = new URL(server.url);
  const socket = connect(Number(port), "127.0.0.1");
  let data = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => (data = Buffer.concat([data, chunk])));
  const ended = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  socket.on("error", () => undefined);
  await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
  socket.write(
    [
      "GET /graphql HTTP/1.1",
      `Host: 127.0.0.1:${port}`,
      "Upgrade: websocket",
      "Connection: Upgrade",
      `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}`,
      "Sec-WebSocket-Version: 13",
      "Sec-WebSocket-Protocol: graphql-transport-ws",
      "",
      "",
    ].join("\r\n"),
  );
  for (let i = 0; i < 100 && !data.includes("\r\n\r\n"); i++) await new Promise((r) => setTimeout(r, 20));
  expect(data.toString("latin1")).toMatch(/^HTTP\/1\.1 101 /);
  const headerEnd = data.indexOf("\r\n\r\n") + 4;
  return { socket, received: () => data.subarray(headerEnd), ended };
}

/** The close code in the server's close frame (an unmasked frame with opcode 8), or null when none came. */
function closeCodeOf(frames: Buffer): number | null {
  let at = 0;
  while (at + 2 <= frames.length) {
    const opcode = frames[at]! & 0x0f;
    let length = frames[at + 1]! & 0x7f;
    let start = at + 2;
    if (length === 126) {
      length = frames.readUInt16BE(at + 2);
      start += 2;
    } else if (length === 127) {
      length = Number(frames.readBigUInt64BE(at + 2));
      start += 8;
    }
    if (opcode === 8) return length >= 2 ? frames.readUInt16BE(start) : null;
    at = start + length;
  }
  return null;
}

/** A masked client frame (mask 0, so the payload goes as it is) with the given first byte and payload. */
function frame(first: number, payload: Buffer): Buffer {
  const header =
    payload.length < 126
      ? Buffer.from([first, 0x80 | payload.length])
      : payload.length < 65536
        ? Buffer.from([first, 0x80 | 126, payload.length >> 8, payload.length & 0xff])
        : Buffer.concat([Buffer.from([first, 0x80 | 127]), Buffer.from(new BigUint64Array([BigInt(payload.length)]).buffer).reverse()]);
  return Buffer.concat([header, Buffer.alloc(4), payload]);
}

async function healthy() {
  const response = await fetch(`${server.url}/health`);
  expect(response.status).toBe(200);
}

const cases: Array<[string, Buffer, number]> = [
  ["a text frame that is not UTF-8 (the bytes 81 82 00 00 00 00 ff fe)", Buffer.from("818200000000fffe", "hex"), 1007],
  ["a reserved opcode", frame(0x83, Buffer.from("x")), 1002],
  ["a reserved bit with no extension agreed", frame(0xc1, Buffer.from("x")), 1002],
  ["a control frame over 125 bytes", frame(0x89, Buffer.alloc(200)), 1002],
  ["an unmasked client frame", Buffer.from([0x81, 0x01, 0x78]), 1002],
  ["a fragmented control frame", frame(0x09, Buffer.from("x")), 1002],
];

test.each(cases)("%s closes that connection with its code, and the server keeps serving", async (_name, bytes, code) => {
  const client = await bareUpgrade();
  client.socket.write(bytes);
  await client.ended;
  expect(closeCodeOf(client.received())).toBe(code);
  await healthy();
});

test("a message larger than the request body limit is refused with 1009 before it is buffered", async () => {
  const client = await bareUpgrade();
  const limit = fx.db.config.http.maxRequestBytes;
  // Only the header of a frame announcing limit + 1 bytes: the server must refuse it without waiting for the bytes.
  const header = frame(0x81, Buffer.alloc(0)).subarray(0, 2);
  header[1] = 0x80 | 127;
  const length = Buffer.alloc(8);
  length.writeBigUInt64BE(BigInt(limit + 1));
  client.socket.write(Buffer.concat([header, length, Buffer.alloc(4)]));
  await client.ended;
  expect(closeCodeOf(client.received())).toBe(1009);
  await healthy();
});

test("a stream of malformed frames from many connections leaves a well-behaved client's subscription working", async () => {
  const bad = await Promise.all(Array.from({ length: 20 }, () => bareUpgrade()));
  for (const [i, client] of bad.entries()) client.socket.write(cases[i % cases.length]![1]);
  await Promise.all(bad.map((client) => client.ended));

  const socket = new WebSocket(server.url.replace("http", "ws") + "/graphql", "graphql-transport-ws");
  const answer = new Promise<unknown>((resolve, reject) => {
    socket.on("error", reject);
    socket.on("message", (data) => {
      const message = JSON.parse(data.toString()) as { type: string; payload?: unknown };
      if (message.type === "connection_ack") socket.send(JSON.stringify({ id: "1", type: "subscribe", payload: { query: "{ __typename }" } }));
      if (message.type === "next") resolve(message.payload);
    });
  });
  await new Promise((resolve) => socket.on("open", resolve));
  socket.send(JSON.stringify({ type: "connection_init", payload: {} }));
  expect(await answer).toEqual({ data: { __typename: "Query" } });
  socket.close();
  await healthy();
});

test("a binary message is refused with 4400 and nothing else is affected", async () => {
  const socket = new WebSocket(server.url.replace("http", "ws") + "/graphql", "graphql-transport-ws");
  const closed = new Promise<number>((resolve) => socket.on("close", (code) => resolve(code)));
  await new Promise((resolve) => socket.on("open", resolve));
  socket.send(Buffer.from([1, 2, 3]), { binary: true });
  expect(await closed).toBe(4400);
  await healthy();
});
