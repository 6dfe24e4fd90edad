// Which protocol engines this build of DittoFS actually serves: the one place that says so. The
// config accepts settings for every adapter type (`adapters.nfs`, `adapters.smb`), and the control
// plane keeps a row for each; an adapter is *served* only when it is enabled AND its engine is
// implemented here. The server, `dittofs --help`, `dittofs config show`, the adapter API and
// `dittofsctl adapter list` all read this registry, so that none of them claims a protocol that
// refuses connections. When an engine lands, flip its entry here (and start its listener in
// server.ts).
import type { AdapterType } from './control/types.js';

export const PROTOCOL_ENGINES: Readonly<Record<AdapterType, { implemented: boolean; title: string }>> = Object.freeze({
  nfs: { implemented: true, title: 'NFSv3 + MOUNT v3' },
  smb: { implemented: true, title: 'SMB2/3 (2.0.2 to 3.1.1)' },
});

/** True when this build has the engine of `type`. */
export function protocolImplemented(type: AdapterType): boolean {
  return PROTOCOL_ENGINES[type].implemented;
}

/** True when an adapter with this `enabled` setting is served by this build. */
export function protocolServed(type: AdapterType, enabled: boolean): boolean {
  return enabled && protocolImplemented(type);
}

/** The titles of the implemented engines, for help texts: "NFSv3 + MOUNT v3". */
export function implementedProtocolTitles(): string[] {
  return Object.values(PROTOCOL_ENGINES)
    .filter((e) => e.implemented)
    .map((e) => e.title);
}

/** Why an enabled adapter is not served, or undefined when it is (or is disabled). */
export function notServedReason(type: AdapterType, enabled: boolean): string | undefined {
  if (!enabled || protocolImplemented(type)) return undefined;
  return `the ${PROTOCOL_ENGINES[type].title} engine is not implemented in this version: not served`;
}
