// fetch for URLs that a tenant chose (an organization's identity provider): the server must not become a way into
// its own network. Each connection is made to an address checked at the moment of connecting (the check is the
// lookup the socket uses, so a name cannot resolve to a public address for the check and a private one for the
// connection), redirects are not followed, the answer is read up to a bound, and the whole exchange has a deadline.
import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { BlockList, isIP, type LookupFunction } from "node:net";

/** Addresses no tenant-chosen URL may reach: loopback, private, link-local (cloud metadata), shared and reserved ranges. */
const blocked = new BlockList();
for (const [network, prefix] of [
  ["0.0.0.0", 8],
  ["10.0.0.0", 8],
  ["100.64.0.0", 10],
  ["127.0.0.0", 8],
  ["169.254.0.0", 16],
  ["172.16.0.0", 12],
  ["192.0.0.0", 24],
  ["192.168.0.0", 16],
  ["198.18.0.0", 15],
  ["224.0.0.0", 4],
  ["240.0.0.0", 4],
] as const) {
  blocked.addSubnet(network, prefix, "ipv4");
}
for (const [network, prefix] of [
  ["::", 96], // unspecified, loopback and IPv4-compatible addresses
  ["64:ff9b::", 96], // NAT64: reaches IPv4 hosts, private ones included
  ["64:ff9b:1::", 48],
  ["100::", 64], // discard
  ["2001:db8::", 32], // documentation
  ["2002::", 16], // 6to4: embeds an IPv4 address
  ["fc00::", 7], // unique local
  ["fe80::", 10], // link-local
  ["fec0::", 10], // site-local (deprecated)
  ["ff00::", 8], // multicast
] as const) {
  blocked.addSubnet(network, prefix, "ipv6");
}

/** Whether `address` (an IP literal) is one a tenant-chosen URL may reach. IPv4-mapped IPv6 is judged as IPv4. */
export function isPublicAddress(address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return isPublicAddress(mapped[1]!);
  const family = isIP(address);
  if (family === 0) return false;
  return !blocked.check(address, family === 4 ? "ipv4" : "ipv6");
}

/** A URL refused before or while connecting: a private address, or a scheme other than http(s). */
export class ForbiddenDestination extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ForbiddenDestination";
  }
}

export interface PublicFetchOptions {
  /** Let loopback and private addresses through (local development and tests only). Default false. */
  readonly allowPrivate?: boolean;
  /** The most bytes of an answer that are read; a larger one fails. Default 1 MiB. */
  readonly maxBytes?: number;
  /** The whole exchange's deadline in milliseconds, on top of the caller's signal. Default 10 000. */
  readonly timeoutMs?: number;
}

/** A socket lookup that refuses names resolving to any address not public (every address of the name is checked). */
const publicLookup: LookupFunction = (hostname, options, callback) => {
  dnsLookup(hostname, { ...options, all: true }, (error, addresses: LookupAddress[]) => {
    if (error) return callback(error, "", 0);
    const refused = addresses.find((a) => !isPublicAddress(a.address));
    if (refused || addresses.length === 0) return callback(new ForbiddenDestination(`${hostname} resolves to an address that is not public`), "", 0);
    if (options.all) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, addresses);
    callback(null, addresses[0]!.address, addresses[0]!.family);
  });
};

/** A fetch Response of a finished node:http answer; statuses outside 200–599 are refused (Response cannot hold them). */
function responseOf(res: IncomingMessage, body: Buffer, method: string): Response {
  const status = res.statusCode ?? 0;
  if (status < 200 || status > 599) throw new Error(`the answer's status ${status} is not one a client can use`);
  const answer = new Headers();
  for (const [name, value] of Object.entries(res.headers)) {
    for (const one of Array.isArray(value) ? value : value === undefined ? [] : [value]) answer.append(name, one);
  }
  const nullBody = status === 204 || status === 205 || status === 304 || method === "HEAD";
  return new Response(nullBody ? null : body, { status, headers: answer });
}

/** A request body as bytes or text: strings, form parameters and byte arrays (no streams). */
function requestBody(body: unknown): string | Buffer | undefined {
  if (body === undefined || body === null) return undefined;
  if (typeof body === "string") return body;
  if (body instanceof URLSearchParams) return body.toString();
  if (body instanceof Uint8Array) return Buffer.from(body);
  if (body instanceof ArrayBuffer) return Buffer.from(body);
  throw new TypeError("publicFetch sends strings, form parameters and byte arrays only");
}

/**
 * A fetch (the subset openid-client and similar clients use: method, headers, body, signal) for tenant-chosen URLs.
 * Answers a Response whose body is already read (at most `maxBytes`); redirects come back as they are.
 */
export function publicFetch(options: PublicFetchOptions = {}) {
  const { allowPrivate = false, maxBytes = 1024 * 1024, timeoutMs = 10_000 } = options;
  return async (
    input: string | URL,
    init: { method?: string; headers?: Record<string, string> | Headers; body?: unknown; signal?: AbortSignal | null } = {},
  ): Promise<Response> => {
    const url = new URL(input);
    if (url.protocol !== "https:" && url.protocol !== "http:") throw new ForbiddenDestination(`${url.protocol} URLs are not fetched`);
    if (!allowPrivate && isIP(url.hostname.replace(/^\[|\]$/g, "")) && !isPublicAddress(url.hostname.replace(/^\[|\]$/g, ""))) {
      throw new ForbiddenDestination(`${url.hostname} is not a public address`);
    }
    const signal = init.signal ? AbortSignal.any([init.signal, AbortSignal.timeout(timeoutMs)]) : AbortSignal.timeout(timeoutMs);
    const body = requestBody(init.body);
    const headers = Object.fromEntries(new Headers(init.headers).entries());
    const request = url.protocol === "https:" ? httpsRequest : httpRequest;
    return new Promise<Response>((resolve, reject) => {
      const req = request(url, { method: init.method ?? "GET", headers, signal, ...(allowPrivate ? {} : { lookup: publicLookup }) }, (res: IncomingMessage) => {
        const chunks: Buffer[] = [];
        let received = 0;
        res.on("data", (chunk: Buffer) => {
          received += chunk.length;
          if (received > maxBytes) {
            res.destroy();
            reject(new Error(`the answer is larger than ${maxBytes} bytes`));
          } else chunks.push(chunk);
        });
        res.on("error", reject);
        res.on("end", () => {
          // Inside a listener, a throw would not reject this promise but end the process: everything that can throw
          // on a hostile answer (a status Response refuses, a header it cannot hold) is caught and rejected.
          try {
            resolve(responseOf(res, Buffer.concat(chunks), init.method ?? "GET"));
          } catch (error) {
            reject(error instanceof Error ? error : new Error(String(error)));
          }
        });
      });
      req.on("error", reject);
      req.end(body);
    });
  };
}
