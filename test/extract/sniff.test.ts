// Type sniffing: decided from the bytes; a name only chooses between text formats.
import { looksLikeHtml, looksLikeMarkdown, sniff, textKind } from "../../lib/extract/sniff.ts";
import { makeDocx, makeExe, makePdf, makeZip, png } from "./fixtures.ts";

test("PDF and ZIP by their signatures, whatever follows", () => {
  expect(sniff(makePdf())).toEqual({ kind: "pdf" });
  expect(sniff(makeDocx(["x"]))).toEqual({ kind: "zip" });
  expect(sniff(makeZip([]))).toEqual({ kind: "zip" });
});

test.each([
  ["PNG", png, "PNG image"],
  ["EXE", makeExe(), "Windows executable"],
  ["ELF", Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]), Buffer.alloc(100)]), "ELF executable"],
  ["gzip", Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]), "gzip archive"],
  ["JPEG", Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 16]), "JPEG image"],
  ["OLE (legacy .doc)", Buffer.from("d0cf11e0a1b11ae1000000", "hex"), "OLE compound file (legacy Office document, or an encrypted DOCX)"],
  ["UTF-16", Buffer.from("\uFEFFhello", "utf16le"), "UTF-16 text (only UTF-8 is accepted)"],
])("%s is binary", (_name, bytes, what) => {
  expect(sniff(bytes)).toEqual({ kind: "binary", what });
});

test("bytes full of control characters are binary; text with a stray NUL or Latin-1 bytes is still text", () => {
  expect(sniff(Buffer.from([1, 2, 3, 4, 5, 6, 7, 8, 0x41, 0x42]))).toEqual({ kind: "binary", what: "binary data" });
  expect(sniff(Buffer.from("hello\u0000world, a perfectly ordinary sentence"))).toEqual({ kind: "text" });
  expect(sniff(Buffer.from([0x63, 0x61, 0x66, 0xe9]))).toEqual({ kind: "text" });
  expect(sniff(Buffer.from("MZ is a text file that starts like an executable"))).toEqual({ kind: "text" });
});

test("HTML is recognised by its first tag", () => {
  expect(looksLikeHtml("<!DOCTYPE html><html></html>")).toBe(true);
  expect(looksLikeHtml("\uFEFF  <!-- saved page -->\n<html lang=en>")).toBe(true);
  expect(looksLikeHtml("<p>A fragment</p>")).toBe(true);
  expect(looksLikeHtml("Text that mentions <p> later")).toBe(false);
  expect(looksLikeHtml("<pre-existing> is not a tag we know")).toBe(false);
});

test("Markdown is recognised by headings, fences, links, tables, or two lighter signs", () => {
  expect(looksLikeMarkdown("# Title\n\nText")).toBe(true);
  expect(looksLikeMarkdown("Intro\n\n```ts\ncode\n```")).toBe(true);
  expect(looksLikeMarkdown("See [the docs](https://example.com).")).toBe(true);
  expect(looksLikeMarkdown("| a | b |\n| --- | --- |\n| 1 | 2 |")).toBe(true);
  expect(looksLikeMarkdown("- one\n- two\n\nSome **bold** text")).toBe(true);
  expect(looksLikeMarkdown("Just a line.\nAnd another - with a dash.")).toBe(false);
  expect(looksLikeMarkdown("- a list alone")).toBe(false);
});

test("the name only chooses between text formats", () => {
  expect(textKind("plain words", "notes.txt")).toBe("plain");
  expect(textKind("plain words", "notes.md")).toBe("markdown");
  expect(textKind("plain words", "notes.MARKDOWN")).toBe("markdown");
  expect(textKind("# Heading", "notes.txt")).toBe("markdown");
  expect(textKind("plain words", "page.html")).toBe("html");
  expect(textKind("<html><body>x</body></html>", "page.txt")).toBe("html");
  expect(textKind("plain words", null)).toBe("plain");
});
