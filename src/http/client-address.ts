import { BlockList, isIP } from 'node:net';
import type { IncomingMessage } from 'node:http';

/** Resolves who the client is, believing X-Forwarded-* only from configured proxies. */
export interface ClientAddressResolver {
  resolve(req: IncomingMessage): { ip: string; proto: string; host: string | undefined };
}

/** @param trustedProxies IP addresses or CIDR ranges whose X-Forwarded-* headers are believed. */
export function createClientAddressResolver(trustedProxies: string[]): ClientAddressResolver {
  const trusted = new BlockList();
  for (const entry of trustedProxies) {
    const [address, bits] = entry.split('/') as [string, string | undefined];
    const family = isIP(address) === 6 ? 'ipv6' : 'ipv4';
    if (bits === undefined) trusted.addAddress(address, family);
    else trusted.addSubnet(address, Number(bits), family);
  }
  const isTrusted = (ip: string) => {
    const plain = ip.startsWith('::ffff:') ? ip.slice(7) : ip;
    const family = isIP(plain);
    return family !== 0 && trusted.check(plain, family === 6 ? 'ipv6' : 'ipv4');
  };

  return {
    resolve(req) {
      const peer = req.socket.remoteAddress ?? 'unknown';
      const direct = { ip: peer, proto: 'encrypted' in req.socket && req.socket.encrypted ? 'https' : 'http', host: req.headers.host };
      if (trustedProxies.length === 0 || !isTrusted(peer)) return direct;
      // Walk X-Forwarded-For from the right; the first address that is not a trusted proxy is the client.
      const hops = String(req.headers['x-forwarded-for'] ?? '').split(',').map((s) => s.trim()).filter(Boolean);
      let ip = peer;
      for (let i = hops.length - 1; i >= 0; i--) {
        // A hop that is not an IP address was written by someone we cannot vouch for (a client's
        // forged header passed on by the proxy): the walk stops at the last address a trusted hop
        // gave, so no free text becomes the client address that rate limits, logs and upstreams see.
        const hop = ipOf(hops[i]!);
        if (hop === undefined) break;
        ip = hop;
        if (!isTrusted(ip)) break;
      }
      const proto = firstValue(req.headers['x-forwarded-proto']);
      const host = firstValue(req.headers['x-forwarded-host']);
      return { ip, proto: proto === 'https' || proto === 'http' ? proto : direct.proto, host: host ?? direct.host };
    },
  };
}

/**
 * The IP address of one X-Forwarded-For hop: a bare IPv4/IPv6 address, or one with a port as some
 * proxies write it (`203.0.113.9:5678`, `[2001:db8::1]:443`); undefined for anything else.
 */
function ipOf(hop: string): string | undefined {
  if (isIP(hop) !== 0) return hop;
  const withPort = /^(?:\[([^\]]+)\]|(\d{1,3}(?:\.\d{1,3}){3})):\d{1,5}$/.exec(hop);
  const address = withPort?.[1] ?? withPort?.[2];
  return address !== undefined && isIP(address) !== 0 ? address : undefined;
}

function firstValue(header: string | string[] | undefined): string | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  return value?.split(',')[0]?.trim() || undefined;
}
