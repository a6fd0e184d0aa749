/**
 * Which IP addresses a server-side fetch may connect to (the SSRF rules).
 *
 * Every address is put in one class. `public` is always allowed; the internal classes
 * (`loopback`, `private`, `link_local`, `shared`) only for hosts the operator allowed;
 * the rest (`unspecified`, `multicast`, `reserved`) never, because no legitimate
 * metadata, registration or token endpoint lives there. Which hosts the operator allowed
 * (`server.allowHosts`) is decided by {@link hostAllowList}, shared by the fetcher and by the
 * configuration's check of the endpoints it names.
 */
import { BlockList, isIP } from 'node:net';

/** The class of an IP address, as far as outbound fetches are concerned. */
export type AddressClass =
  | 'public'
  | 'loopback'
  | 'private'
  | 'link_local'
  | 'shared'
  | 'unspecified'
  | 'multicast'
  | 'reserved';

/** Classes that a host on the allow list (or `allowPrivate`) may resolve to. */
const INTERNAL: ReadonlySet<AddressClass> = new Set(['loopback', 'private', 'link_local', 'shared']);

type Rule = readonly [AddressClass, string, number];

// IPv4 ranges (RFC 6890 special-purpose registry). Node's BlockList also matches the
// IPv4-mapped IPv6 form (::ffff:a.b.c.d) of every IPv4 rule, so `::ffff:127.0.0.1`
// is loopback too; the embedded-IPv4 prefixes below are added separately.
const V4: readonly Rule[] = [
  ['unspecified', '0.0.0.0', 8], // "this network"; 0.0.0.0 reaches the local host on Linux
  ['private', '10.0.0.0', 8],
  ['shared', '100.64.0.0', 10], // CGNAT (RFC 6598): internal to the carrier or the cluster
  ['loopback', '127.0.0.0', 8],
  ['link_local', '169.254.0.0', 16], // includes the cloud metadata service 169.254.169.254
  ['private', '172.16.0.0', 12],
  ['reserved', '192.0.0.0', 24], // IETF protocol assignments
  ['reserved', '192.0.2.0', 24], // TEST-NET-1
  ['reserved', '192.88.99.0', 24], // deprecated 6to4 relay anycast
  ['private', '192.168.0.0', 16],
  ['reserved', '198.18.0.0', 15], // benchmarking
  ['reserved', '198.51.100.0', 24], // TEST-NET-2
  ['reserved', '203.0.113.0', 24], // TEST-NET-3
  ['multicast', '224.0.0.0', 4],
  ['reserved', '240.0.0.0', 4], // includes the broadcast address 255.255.255.255
];

const V6: readonly Rule[] = [
  ['unspecified', '::', 128],
  ['loopback', '::1', 128],
  ['reserved', '::', 96], // deprecated IPv4-compatible addresses (::a.b.c.d)
  ['reserved', '100::', 64], // discard-only
  ['reserved', '2001:db8::', 32], // documentation
  ['private', '64:ff9b:1::', 48], // local-use NAT64 (RFC 8215): translated inside this network
  ['private', 'fc00::', 7], // unique local
  ['link_local', 'fe80::', 10],
  ['private', 'fec0::', 10], // deprecated site-local, still routed internally by some networks
  ['multicast', 'ff00::', 8],
];

// IPv6 prefixes that carry an IPv4 address a translator or relay will reach on our
// behalf: an internal IPv4 address hidden in them must be refused like the address itself.
const EMBEDDING: readonly { prefix: (v4: string) => string; bits: number }[] = [
  { prefix: (v4) => `64:ff9b::${v4}`, bits: 96 }, // NAT64 well-known prefix (RFC 6052)
  { prefix: (v4) => sixToFour(v4), bits: 16 }, // 6to4 (RFC 3056): 2002:AABB:CCDD::/48
];

function sixToFour(v4: string): string {
  const [a, b, c, d] = v4.split('.').map(Number) as [number, number, number, number];
  const hex = (hi: number, lo: number) => ((hi << 8) | lo).toString(16);
  return `2002:${hex(a, b)}:${hex(c, d)}::`;
}

/** One BlockList per class, checked in a fixed order (more specific classes first). */
const LISTS: readonly (readonly [AddressClass, BlockList])[] = (() => {
  const byClass = new Map<AddressClass, BlockList>();
  const add = (cls: AddressClass, address: string, prefix: number, family: 'ipv4' | 'ipv6') => {
    let list = byClass.get(cls);
    if (!list) byClass.set(cls, (list = new BlockList()));
    list.addSubnet(address, prefix, family);
  };
  for (const [cls, address, prefix] of V4) {
    add(cls, address, prefix, 'ipv4');
    for (const e of EMBEDDING) add(cls, e.prefix(address), e.bits + prefix, 'ipv6');
  }
  for (const [cls, address, prefix] of V6) add(cls, address, prefix, 'ipv6');
  const order: AddressClass[] = ['unspecified', 'loopback', 'link_local', 'shared', 'private', 'multicast', 'reserved'];
  return order.map((cls) => [cls, byClass.get(cls) ?? new BlockList()] as const);
})();

/**
 * Classifies an IP address (IPv4, or IPv6 with or without brackets and zone id).
 * Anything that is not an IP address is `reserved`, so a caller that forgot to resolve
 * a name fails closed.
 */
export function classifyAddress(address: string): AddressClass {
  const bare = address.replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  const family = isIP(bare);
  if (family === 0) return 'reserved';
  const type = family === 4 ? 'ipv4' : 'ipv6';
  for (const [cls, list] of LISTS) if (list.check(bare, type)) return cls;
  return 'public';
}

/**
 * Whether a fetch may connect to `address`.
 * @param internalAllowed true when the host is on the allow list or private addresses
 *   are allowed globally (dev mode); it never opens `unspecified`, `multicast` or `reserved`.
 */
export function isAddressAllowed(address: string, internalAllowed: boolean): boolean {
  const cls = classifyAddress(address);
  return cls === 'public' || (internalAllowed && INTERNAL.has(cls));
}

/** A host as the allow list compares it: lower case, without IPv6 brackets or a final dot. */
export function normalizeHost(host: string): string {
  return host.toLowerCase().replace(/^\[|\]$/g, '').replace(/\.$/, '');
}

/**
 * Whether a host is on `allowHosts` (`server.allowHosts`: names or IP literals, case-insensitive,
 * IPv6 with or without brackets), so that it may reach internal addresses. The one comparison the
 * guarded fetcher applies and `mcpgate check` applies to the endpoints of the configuration.
 */
export function hostAllowList(allowHosts: readonly string[]): (host: string) => boolean {
  const listed = new Set(allowHosts.map(normalizeHost));
  return (host) => listed.has(normalizeHost(host));
}
