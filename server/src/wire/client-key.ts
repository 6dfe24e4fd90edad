// The client a per-address limit counts (SMB failed logons, the REST API's rate limits). An IPv4
// address is one client; an IPv4 address written as IPv6 (::ffff:192.0.2.1, how a dual-stack
// listener reports it) is that IPv4 address. An IPv6 address counts as the /64 it belongs to:
// a host is normally given a whole /64 (SLAAC, privacy addresses), so counting single addresses
// would let it start afresh with each of its 2^64 addresses. Anything else is kept as it is.
import ipaddr from 'ipaddr.js';

export function clientKey(address: string): string {
  if (!ipaddr.isValid(address)) return address;
  const a = ipaddr.process(address);
  if (a.kind() === 'ipv4') return a.toString();
  const bytes = a.toByteArray();
  bytes.fill(0, 8);
  return `${ipaddr.fromByteArray(bytes).toString()}/64`;
}
