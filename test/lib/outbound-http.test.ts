// The mechanics every outbound call shares (lib/outbound-http.ts), against a real local HTTP server: bodies read to
// a bound and no further, service messages cleaned of secrets, Retry-After in each spelling, network failures by code.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { deadline, networkCause, readBody, ResponseTooLarge, retryAfterMs, serviceMessage } from "../../lib/outbound-http.ts";

let server: Server;
let base: string;
/** Per path, resolved when the client has closed the response's connection. */
const closed = new Map<string, PromiseWithResolvers<void>>();
const closedOf = (path: string) => closed.get(path) ?? closed.set(path, Promise.withResolvers<void>()).get(path)!;

beforeAll(async () => {
  server = createServer((req, res) => {
    const path = req.url ?? "/";
    const chunk = Buffer.alloc(16 * 1024, "a");
    if (path === "/declared") {
      res.writeHead(200, { "content-length": String(10 * 1024 * 1024) });
      res.write(chunk);
      return; // never finishes: the client must not wait for the rest
    }
    // Chunked, endless until the client goes away.
    res.writeHead(200, { "content-type": "text/plain" });
    const pump = () => {
      while (!res.destroyed) if (!res.write(chunk)) return void res.once("drain", pump);
    };
    res.on("error", () => undefined);
    res.on("close", () => closedOf(path).resolve());
    pump();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

describe("readBody", () => {
  test("refuses at once when Content-Length is over the bound, without waiting for the body", async () => {
    const error = await readBody(await fetch(`${base}/declared`), 1024 * 1024, "refuse").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ResponseTooLarge);
    expect((error as ResponseTooLarge).limit).toBe(1024 * 1024);
  });

  test("refuses an endless chunked body as soon as it crosses the bound, and stops the download", async () => {
    const error = await readBody(await fetch(`${base}/endless`), 256 * 1024, "refuse").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ResponseTooLarge);
    await closedOf("/endless").promise; // the download is stopped, not left filling buffers (else: jest timeout)
  });

  test("truncate keeps exactly the first bytes up to the bound", async () => {
    const text = await readBody(await fetch(`${base}/truncated`), 100_000, "truncate");
    expect(text).toBe("a".repeat(100_000));
    await closedOf("/truncated").promise;
  });
});

describe("serviceMessage", () => {
  const secret = "sk-proj-SECRETSECRET1234";
  test.each([
    ["OpenAI / Anthropic", { error: { message: `bad key ${secret}` } }, "bad key [redacted]"],
    ["Ollama", { error: "model not found" }, "model not found"],
    ["Notion", { code: "validation_error", message: "body failed validation" }, "body failed validation"],
    ["OAuth", { error: "invalid_grant", error_description: "refresh token revoked" }, "invalid_grant: refresh token revoked"],
    ["Confluence", { errors: [{ title: "Not Found", detail: "page 12 does not exist" }] }, "page 12 does not exist"],
    [
      "credentials in the text",
      { message: "sent Authorization: Bearer abc.def and Basic dXNlcjpwYXNz" },
      "sent Authorization: Bearer [redacted] and Basic [redacted]",
    ],
    ["control characters and whitespace", { message: "line one\n\tline\u0000two" }, "line one line two"],
    ["not an object", "plain text", ""],
  ])("%s", (_name, body, expected) => {
    expect(serviceMessage(body, [secret])).toBe(expected);
  });

  test("masks before cutting to 200 characters, so no part of a secret survives the cut", () => {
    const message = serviceMessage({ message: `${"x".repeat(190)} ${secret}` }, [secret]);
    expect(message).not.toContain("sk-");
    expect(message.length).toBeLessThanOrEqual(200);
  });
});

describe("retryAfterMs", () => {
  test.each([
    [{ "retry-after": "3" }, 3000],
    [{ "retry-after": "1.5" }, 1500],
    [{ "retry-after-ms": "250" }, 250],
    [{ "retry-after": "soon" }, undefined],
    [{}, undefined],
  ])("%j → %s", (headers, expected) => {
    expect(retryAfterMs(new Headers(headers))).toBe(expected);
  });

  test("an HTTP date is the time until then", () => {
    const ms = retryAfterMs(new Headers({ "retry-after": new Date(Date.now() + 60_000).toUTCString() }))!;
    expect(ms).toBeGreaterThan(55_000);
    expect(ms).toBeLessThanOrEqual(60_000);
  });
});

test("networkCause names a refused connection by its code", async () => {
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
  const port = (closed.address() as AddressInfo).port;
  await new Promise((resolve) => closed.close(resolve));
  const error = await fetch(`http://127.0.0.1:${port}/`).catch((e: unknown) => e);
  expect(networkCause(error)).toEqual({ code: "ECONNREFUSED", redirect: false });
});

test("deadline says whether the time ran out or the caller aborted", async () => {
  const caller = new AbortController();
  const cancelled = deadline(60_000, caller.signal);
  caller.abort();
  expect([cancelled.signal.aborted, cancelled.timedOut()]).toEqual([true, false]);
  const expired = deadline(1, undefined);
  await new Promise((resolve) => expired.signal.addEventListener("abort", resolve));
  expect(expired.timedOut()).toBe(true);
});
