// Files for the extraction and upload tests, built byte by byte here so no binary fixture is committed: minimal
// PDFs (one text object per page, a correct xref table), ZIP archives (stored or deflated, with sizes that may lie),
// and DOCX files (the smallest package mammoth reads).
import { createHash } from "node:crypto";
import { crc32, deflateRawSync } from "node:zlib";

export interface PdfOptions {
  /** Lines of text per page; an empty page has no text object. */
  readonly pages?: ReadonlyArray<readonly string[]>;
  readonly title?: string;
  /** Extra entries for the trailer dictionary, e.g. an /Encrypt dictionary. */
  readonly trailer?: string;
  /** Transforms each content stream's bytes (latin1) given its object number, e.g. to encrypt them. */
  readonly streamData?: (objectNumber: number, data: string) => string;
}

const pdfString = (text: string) => `(${text.replace(/[\\()]/g, (c) => `\\${c}`)})`;

/** A valid PDF 1.4 with Helvetica text: by default one page saying "Hello from a PDF". */
export function makePdf({ pages = [["Hello from a PDF"]], title, trailer = "", streamData = (_n, data) => data }: PdfOptions = {}): Buffer {
  const objects: string[] = [];
  const add = (body: string) => objects.push(body);
  add("<< /Type /Catalog /Pages 2 0 R >>");
  add(""); // the page tree, filled in below once the page numbers are known
  add("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>");
  const pageRefs: string[] = [];
  for (const lines of pages) {
    const ops = streamData(objects.length + 1, lines.map((line, i) => `BT /F1 14 Tf 72 ${740 - 20 * i} Td ${pdfString(line)} Tj ET`).join("\n"));
    add(`<< /Length ${Buffer.byteLength(ops, "latin1")} >>\nstream\n${ops}\nendstream`);
    const contents = objects.length;
    add(`<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents ${contents} 0 R /Resources << /Font << /F1 3 0 R >> >> >>`);
    pageRefs.push(`${objects.length} 0 R`);
  }
  objects[1] = `<< /Type /Pages /Kids [${pageRefs.join(" ")}] /Count ${pageRefs.length} >>`;
  let info = "";
  if (title !== undefined) {
    add(`<< /Title ${pdfString(title)} /Producer (Quire tests) >>`);
    info = `/Info ${objects.length} 0 R `;
  }
  let out = "%PDF-1.4\n%\xe2\xe3\xcf\xd3\n";
  const offsets: number[] = [];
  objects.forEach((body, i) => {
    offsets.push(Buffer.byteLength(out, "latin1"));
    out += `${i + 1} 0 obj\n${body}\nendobj\n`;
  });
  const xref = Buffer.byteLength(out, "latin1");
  out += `xref\n0 ${objects.length + 1}\n0000000000 65535 f \n${offsets.map((o) => `${String(o).padStart(10, "0")} 00000 n \n`).join("")}`;
  out += `trailer\n<< /Size ${objects.length + 1} /Root 1 0 R ${info}${trailer}>>\nstartxref\n${xref}\n%%EOF\n`;
  return Buffer.from(out, "latin1");
}

/** A PDF whose /Encrypt dictionary needs a password that is not the empty one (random /O and /U entries). */
export function makeEncryptedPdf(): Buffer {
  const id = "0123456789abcdef0123456789abcdef";
  return makePdf({
    pages: [["secret"]],
    trailer: `/Encrypt << /Filter /Standard /V 1 /R 2 /O <${"ab".repeat(32)}> /U <${"cd".repeat(32)}> /P -4 >> /ID [<${id}><${id}>] `,
  });
}

function rc4(key: Buffer, data: Buffer): Buffer {
  const box = Array.from({ length: 256 }, (_, i) => i);
  for (let i = 0, j = 0; i < 256; i++) {
    j = (j + box[i]! + key[i % key.length]!) & 0xff;
    [box[i], box[j]] = [box[j]!, box[i]!];
  }
  const out = Buffer.alloc(data.length);
  for (let n = 0, i = 0, j = 0; n < data.length; n++) {
    i = (i + 1) & 0xff;
    j = (j + box[i]!) & 0xff;
    [box[i], box[j]] = [box[j]!, box[i]!];
    out[n] = data[n]! ^ box[(box[i]! + box[j]!) & 0xff]!;
  }
  return out;
}
const md5 = (...parts: Buffer[]) => createHash("md5").update(Buffer.concat(parts)).digest();

/**
 * A PDF encrypted with the standard security handler (revision 2, 40-bit RC4) under an owner password only: it
 * opens without a password, as "copy-protected" PDFs do.
 */
export function makeOwnerProtectedPdf(): Buffer {
  const padding = Buffer.from("28bf4e5e4e758a4164004e56fffa01082e2e00b6d0683e802f0ca9fe6453697a", "hex");
  const id = Buffer.from("0123456789abcdef0123456789abcdef", "hex");
  const ownerKey = md5(Buffer.concat([Buffer.from("owner secret"), padding]).subarray(0, 32)).subarray(0, 5);
  const o = rc4(ownerKey, padding); // the empty user password, padded, encrypted under the owner key
  const permissions = Buffer.alloc(4);
  permissions.writeInt32LE(-64);
  const key = md5(padding, o, permissions, id).subarray(0, 5);
  const u = rc4(key, padding);
  const objectKey = (n: number) => md5(key, Buffer.from([n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, 0, 0])).subarray(0, 10);
  return makePdf({
    pages: [["Copy-protected text"]],
    streamData: (n, data) => rc4(objectKey(n), Buffer.from(data, "latin1")).toString("latin1"),
    trailer: `/Encrypt << /Filter /Standard /V 1 /R 2 /O <${o.toString("hex")}> /U <${u.toString("hex")}> /P -64 >> /ID [<${id.toString("hex")}><${id.toString("hex")}>] `,
  });
}

export interface ZipEntry {
  readonly name: string;
  readonly data: Buffer | string;
  /** Deflate the data (default) or store it. */
  readonly deflate?: boolean;
  /** Lie in both headers about the uncompressed size. */
  readonly declaredSize?: number;
}

/** A ZIP archive (no data descriptors, no ZIP64) of `entries`, written in order. */
export function makeZip(entries: readonly ZipEntry[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const entry of entries) {
    const data = Buffer.isBuffer(entry.data) ? entry.data : Buffer.from(entry.data, "utf8");
    const deflate = entry.deflate ?? true;
    const body = deflate ? deflateRawSync(data) : data;
    const name = Buffer.from(entry.name, "utf8");
    const size = entry.declaredSize ?? data.length;
    const crc = crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4); // version needed
    local.writeUInt16LE(0x0800, 6); // UTF-8 names
    local.writeUInt16LE(deflate ? 8 : 0, 8);
    local.writeUInt32LE(0, 10); // time, date
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(body.length, 18);
    local.writeUInt32LE(size, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(0, 28);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4); // version made by
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0x0800, 8);
    central.writeUInt16LE(deflate ? 8 : 0, 10);
    central.writeUInt32LE(0, 12);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(body.length, 20);
    central.writeUInt32LE(size, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(offset, 42);
    locals.push(local, name, body);
    centrals.push(central, name);
    offset += local.length + name.length + body.length;
  }
  const directory = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(directory.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, directory, end]);
}

const xmlEscape = (text: string) => text.replace(/[<>&]/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;" })[c]!);

/** The parts of a minimal DOCX whose body has `paragraphs`. */
export function docxEntries(paragraphs: readonly string[]): ZipEntry[] {
  const body = paragraphs.map((p) => `<w:p><w:r><w:t xml:space="preserve">${xmlEscape(p)}</w:t></w:r></w:p>`).join("");
  return [
    {
      name: "[Content_Types].xml",
      data:
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>' +
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">' +
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>' +
        '<Default Extension="xml" ContentType="application/xml"/>' +
        '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>' +
        "</Types>",
    },
    {
      name: "_rels/.rels",
      data:
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>' +
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">' +
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/>' +
        "</Relationships>",
    },
    {
      name: "word/document.xml",
      data:
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>' +
        `<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>${body}</w:body></w:document>`,
    },
  ];
}

export const makeDocx = (paragraphs: readonly string[]) => makeZip(docxEntries(paragraphs));

/** The first bytes of a Windows executable: "MZ", a DOS header full of NULs, and the PE signature. */
export function makeExe(): Buffer {
  const exe = Buffer.alloc(512);
  exe.write("MZ", 0, "latin1");
  exe.writeUInt32LE(0x80, 0x3c);
  exe.write("PE\0\0", 0x80, "latin1");
  exe.write("This program cannot be run in DOS mode.", 0x4e, "latin1");
  return exe;
}

/** A 1×1 PNG. */
export const png = Buffer.from(
  "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082",
  "hex",
);
