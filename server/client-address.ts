// The client's address as Quire records and limits it (rate limits, sign-in throttling, the audit log): the
// connection's peer, unless that peer is one of TRUSTED_PROXIES, in which case the address it forwarded in
// X-Forwarded-For is taken, hop by hop, until an untrusted one. A client can always write X-Forwarded-For itself,
// so without trusted proxies the header is ignored. proxy-addr (Express's own) does the parsing and matching.
import type { IncomingMessage } from "node:http";
import proxyaddr from "proxy-addr";

/** The address of the client that sent `req`, or null when its socket has none (already closed). */
export type ClientAddress = (req: IncomingMessage) => string | null;

/** An IPv4 peer on a dual-stack socket reads ::ffff:a.b.c.d; record it as a.b.c.d. */
const plain = (address: string) => (address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address);

export function clientAddress(trustedProxies: readonly string[]): ClientAddress {
  if (trustedProxies.length === 0) {
    return (req) => (req.socket.remoteAddress ? plain(req.socket.remoteAddress) : null);
  }
  const trust = proxyaddr.compile([...trustedProxies]);
  return (req) => (req.socket.remoteAddress ? plain(proxyaddr(req, trust)) : null);
}
