// The worker-thread wrapper the upload route uses: same results, a time bound, a memory bound, and HTML that
// points at a live server never makes it fetch anything.
import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { deflateSync } from "node:zlib";
import { ExtractError, extractText, type ExtractLimits } from "../../lib/extract/index.ts";
import { extractTextIsolated } from "../../lib/extract/isolated.ts";
import { makeDocx, makePdf } from "./fixtures.ts";

const limits: ExtractLimits = { maxPdfPages: 10, maxDocxUncompressedBytes: 1024 * 1024, maxDocxEntries: 20 };

test("results and refusals cross the thread boundary unchanged", async () => {
  expect(await extractTextIsolated(makePdf({ title: "T" }), { limits, timeoutMs: 30_000 })).toEqual({
    format: "plain",
    text: "Hello from a PDF",
    title: "T",
    detectedType: "pdf",
    pages: 1,
  });
  expect(await extractTextIsolated(makeDocx(["a"]), { limits, timeoutMs: 30_000 })).toMatchObject({ text: "a", detectedType: "docx" });
  const refused = extractTextIsolated(Buffer.from("%PDF-1.4 junk"), { limits, timeoutMs: 30_000 });
  await expect(refused).rejects.toBeInstanceOf(ExtractError);
  await expect(refused).rejects.toMatchObject({ code: "BAD_INPUT", status: 400 });
});

test("an extraction that takes too long is stopped: TOO_LARGE", async () => {
  await expect(extractTextIsolated(makePdf(), { limits, timeoutMs: 1 })).rejects.toMatchObject({
    code: "TOO_LARGE",
    status: 413,
    message: "Extracting the file's text took longer than 0.001 seconds.",
  });
});

/** A one-page PDF whose content stream is a Flate bomb: `size` bytes (mostly spaces) from a small file. */
function pdfBomb(size: number): Buffer {
  const raw = Buffer.alloc(size, 0x20);
  raw.write("BT /F1 14 Tf 72 700 Td (Bomb) Tj ET\n");
  const stream = deflateSync(raw, { level: 9 });
  const parts: Buffer[] = [Buffer.from("%PDF-1.4\n")];
  const objects = [
    Buffer.from("<< /Type /Catalog /Pages 2 0 R >>"),
    Buffer.from("<< /Type /Pages /Kids [3 0 R] /Count 1 >>"),
    Buffer.from("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>"),
    Buffer.concat([Buffer.from(`<< /Length ${stream.length} /Filter /FlateDecode >>\nstream\n`), stream, Buffer.from("\nendstream")]),
    Buffer.from("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"),
  ];
  const offsets: number[] = [];
  let length = parts[0]!.length;
  objects.forEach((body, i) => {
    offsets.push(length);
    const object = Buffer.concat([Buffer.from(`${i + 1} 0 obj\n`), body, Buffer.from("\nendobj\n")]);
    parts.push(object);
    length += object.length;
  });
  const xref = offsets.map((o) => `${String(o).padStart(10, "0")} 00000 n \n`).join("");
  parts.push(Buffer.from(`xref\n0 6\n0000000000 65535 f \n${xref}trailer\n<< /Size 6 /Root 1 0 R >>\nstartxref\n${length}\n%%EOF\n`));
  return Buffer.concat(parts);
}

test("a decompression bomb is stopped by the memory bound: TOO_LARGE", async () => {
  const bomb = pdfBomb(400 * 1024 * 1024);
  expect(bomb.length).toBeLessThan(500 * 1024);
  await expect(extractTextIsolated(bomb, { limits, timeoutMs: 30_000, maxMemoryMb: 128 })).rejects.toMatchObject({
    code: "TOO_LARGE",
    message: "Extracting the file's text needs too much memory.",
  });
  // The same construction, small, is an ordinary PDF: the bound is what stopped the big one.
  expect(await extractTextIsolated(pdfBomb(1024 * 1024), { limits, timeoutMs: 30_000, maxMemoryMb: 128 })).toMatchObject({ text: "Bomb" });
});

describe("HTML never fetches what it references", () => {
  let server: Server;
  let requests = 0;
  let base: string;
  beforeAll(async () => {
    server = createServer((_req, res) => {
      requests++;
      res.end("body { }");
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  test("images, scripts, styles, frames and imports are not loaded, in this thread or a worker", async () => {
    const html = `<!doctype html><html><head><title>Linked</title>
      <link rel="stylesheet" href="${base}/style.css"><link rel="preload" href="${base}/font.woff2">
      <style>@import url("${base}/import.css"); body { background: url(${base}/bg.png) }</style>
      <script src="${base}/app.js"></script><script>fetch("${base}/inline")</script>
      <meta http-equiv="refresh" content="0; url=${base}/refresh"><base href="${base}/">
      </head><body background="${base}/body.png"><p>Visible text</p>
      <img src="${base}/a.png" srcset="${base}/b.png 2x"><iframe src="${base}/frame"></iframe>
      <object data="${base}/object"></object><video poster="${base}/poster.png"><source src="${base}/v.mp4"></video>
      <a href="${base}/link">a link</a></body></html>`;
    const inThread = await extractText(Buffer.from(html), { limits });
    const inWorker = await extractTextIsolated(Buffer.from(html), { limits, timeoutMs: 30_000 });
    expect(inThread).toEqual({ format: "plain", text: "Visible text\n\na link", title: "Linked", detectedType: "html" });
    expect(inWorker).toEqual(inThread);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(requests).toBe(0);
  });
});
