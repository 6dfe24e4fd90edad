// `server.api.trust_proxy`: which peers of the REST API are proxies whose X-Forwarded-For names the
// client. One predicate serves Fastify (req.ip, which the rate limits count) and the connection
// caps (a proxy's connections are not capped per address), so the two never disagree.
import net from 'node:net';
import ipaddr from 'ipaddr.js';

/** Named ranges, as Fastify's own trustProxy strings know them. */
export const TRUST_PROXY_PRESETS: Readonly<Record<string, readonly string[]>> = Object.freeze({
  loopback: ['127.0.0.0/8', '::1/128'],
  linklocal: ['169.254.0.0/16', 'fe80::/10'],
  uniquelocal: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7'],
});

/** false: no proxy (X-Forwarded-For is ignored); true: every peer; a list: addresses, CIDRs and presets. */
export type TrustProxySetting = boolean | readonly string[];

type Range = [ipaddr.IPv4 | ipaddr.IPv6, number];

/** One entry of the list as a range, or why it is not one. */
function parseEntry(entry: string): Range[] | string {
  const preset = TRUST_PROXY_PRESETS[entry];
  if (preset !== undefined) return preset.map((cidr) => ipaddr.parseCIDR(cidr));
  const notOne = `${JSON.stringify(entry)} is not an IP address, a CIDR range (10.0.0.0/8, fd00::/64) or one of ${Object.keys(TRUST_PROXY_PRESETS).join(', ')}`;
  const [host = '', bits, ...rest] = entry.split('/');
  // net.isIP: the usual spellings only (ipaddr.js would also take 127.1 or 0x7f.1).
  const family = net.isIP(host);
  if (family === 0 || rest.length > 0) return notOne;
  const addr = ipaddr.parse(host);
  if (bits === undefined) return [[addr, family === 4 ? 32 : 128]];
  const max = family === 4 ? 32 : 128;
  if (!/^\d{1,3}$/.test(bits) || Number(bits) > max) return `${JSON.stringify(entry)}: the prefix length must be 0 to ${max}`;
  const n = Number(bits);
  const network = ipaddr.parseCIDR(`${host}/${n}`)[0];
  const base = family === 4 ? ipaddr.IPv4.networkAddressFromCIDR(`${host}/${n}`) : ipaddr.IPv6.networkAddressFromCIDR(`${host}/${n}`);
  // 10.1.2.3/8 most likely means 10.0.0.0/8, but say so rather than guess.
  if (base.toString() !== network.toString())
    return `${JSON.stringify(entry)} has bits set past its prefix: the range is ${base.toString()}/${n}`;
  return [[network, n]];
}

/** What is wrong with a list of trusted proxies, or undefined. */
export function trustProxyProblem(entries: readonly string[]): string | undefined {
  for (const e of entries) {
    const r = parseEntry(e);
    if (typeof r === 'string') return r;
  }
  return undefined;
}

/**
 * The predicate: is a peer at `address` (as a socket or X-Forwarded-For gives it) a trusted proxy?
 * Throws on an invalid list (the config checked it before).
 */
export function trustedProxy(setting: TrustProxySetting): (address: string) => boolean {
  if (setting === true) return () => true;
  if (setting === false || setting.length === 0) return () => false;
  const ranges: Range[] = [];
  for (const e of setting) {
    const r = parseEntry(e);
    if (typeof r === 'string') throw new Error(`trust_proxy: ${r}`);
    ranges.push(...r);
  }
  return (address) => {
    // Not an address in its usual spelling: X-Forwarded-For is whatever the client wrote.
    if (net.isIP(address) === 0) return false;
    // An IPv4-mapped IPv6 address (a dual-stack socket's) as the IPv4 one.
    let a: ipaddr.IPv4 | ipaddr.IPv6;
    try {
      a = ipaddr.process(address);
    } catch {
      return false;
    }
    return ranges.some(([range, bits]) => range.kind() === a.kind() && a.match(range, bits));
  };
}
