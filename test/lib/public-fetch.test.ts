// fetch for tenant-chosen URLs: private, loopback and link-local addresses are refused whether written as literals or
// reached through a name (checked by the lookup the socket itself uses), redirects come back unfollowed, answers are
// read up to a bound, and a silent server meets the deadline.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { ForbiddenDestination, isPublicAddress, publicFetch } from "../../lib/public-fetch.ts";

let server: Server;
let base: string;
beforeAll(async () => {
  server = createServer((req, res) => {
    if (req.url === "/big") return void res.end(Buffer.alloc(2 * 1024 * 1024, 0x61));
    if (req.url === "/redirect") return void res.writeHead(302, { location: "http://169.254.169.254/latest/meta-data/" }).end();
    if (req.url === "/silent") return; // never answers
    if (req.url === "/reset") return void res.writeHead(205, { "content-length": "0" }).end();
    if (req.url === "/weird") {
      // A status no fetch Response can hold, written raw.
      req.socket.end("HTTP/1.1 999 Weird\r\ncontent-length: 0\r\n\r\n");
      return;
    }
    let body = "";
    req.on("data", (chunk: Buffer) => (body += chunk.toString()));
    req.on("end", () =>
      res.writeHead(201, { "content-type": "application/json", "x-seen": req.headers["x-probe"] ?? "" }).end(JSON.stringify({ method: req.method, body })),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

test("which addresses are public", () => {
  for (const address of ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]) expect([address, isPublicAddress(address)]).toEqual([address, true]);
  for (const address of [
    "127.0.0.1",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "::1",
    "::",
    "fd00::1",
    "fe80::1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::10.0.0.5",
    "64:ff9b::a00:5",
    "2002:a00:5::1",
    "fec0::1",
    "not an address",
  ]) {
    expect([address, isPublicAddress(address)]).toEqual([address, false]);
  }
});

test("private destinations are refused, as literals and through names that resolve to them", async () => {
  const guarded = publicFetch();
  await expect(guarded(`${base}/`)).rejects.toBeInstanceOf(ForbiddenDestination);
  await expect(guarded(`http://[::1]:${new URL(base).port}/`)).rejects.toBeInstanceOf(ForbiddenDestination);
  await expect(guarded(`http://localhost:${new URL(base).port}/`)).rejects.toThrow(/not public/);
  await expect(guarded("file:///etc/passwd")).rejects.toBeInstanceOf(ForbiddenDestination);
});

test("with private addresses allowed (development): method, headers and form bodies go through; redirects are not followed", async () => {
  const open = publicFetch({ allowPrivate: true });
  const response = await open(`${base}/echo`, { method: "POST", headers: { "x-probe": "yes" }, body: new URLSearchParams({ a: "1", b: "two" }) });
  expect(response.status).toBe(201);
  expect(response.headers.get("x-seen")).toBe("yes");
  expect(await response.json()).toEqual({ method: "POST", body: "a=1&b=two" });
  const redirected = await open(`${base}/redirect`);
  expect([redirected.status, redirected.headers.get("location")]).toEqual([302, "http://169.254.169.254/latest/meta-data/"]);
});

test("an answer over the bound fails instead of filling memory, and a silent server meets the deadline", async () => {
  await expect(publicFetch({ allowPrivate: true, maxBytes: 1024 * 1024 })(`${base}/big`)).rejects.toThrow("the answer is larger than 1048576 bytes");
  await expect(publicFetch({ allowPrivate: true, timeoutMs: 100 })(`${base}/silent`)).rejects.toThrow(/abort|timeout/i);
});

test("a hostile status is a rejected promise, never an exception that ends the process", async () => {
  const open = publicFetch({ allowPrivate: true });
  const reset = await open(`${base}/reset`);
  expect([reset.status, await reset.text()]).toEqual([205, ""]);
  await expect(open(`${base}/weird`)).rejects.toThrow("the answer's status 999 is not one a client can use");
});
