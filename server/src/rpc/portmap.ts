// RFC 1833 §3 PMAP version 2: an optional embedded portmapper that answers GETPORT and DUMP for the
// programs this server offers, so clients that insist on asking one can find us.
import type { RpcCall } from './message.js';
import type { RpcProgram } from './server.js';
import type { XdrWriter } from './xdr.js';

export const PMAP_PROGRAM = 100000;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

export interface PortMapping {
  prog: number;
  vers: number;
  prot: number;
  port: number;
}

const NAMES = ['NULL', 'SET', 'UNSET', 'GETPORT', 'DUMP', 'CALLIT'];

export function portmapProgram(mappings: () => PortMapping[]): RpcProgram {
  return {
    prog: PMAP_PROGRAM,
    name: 'portmap',
    lowVersion: 2,
    highVersion: 2,
    maxProc: 4,
    isNonIdempotent: () => false,
    procName: (p) => NAMES[p] ?? `PROC_${p}`,
    async handle(call: RpcCall, w: XdrWriter): Promise<undefined> {
      const r = call.args;
      switch (call.proc) {
        case 0:
          return undefined;
        case 1: // SET: registrations from other processes are not accepted
        case 2: // UNSET
          r.u32();
          r.u32();
          r.u32();
          r.u32();
          w.bool(false);
          return undefined;
        case 3: {
          const prog = r.u32();
          const vers = r.u32();
          const prot = r.u32();
          r.u32();
          const m = mappings().find((x) => x.prog === prog && x.vers === vers && x.prot === prot);
          w.u32(m ? m.port : 0);
          return undefined;
        }
        case 4:
          for (const m of mappings()) w.u32(1).u32(m.prog).u32(m.vers).u32(m.prot).u32(m.port);
          w.u32(0);
          return undefined;
        default:
          throw new RangeError('unknown procedure');
      }
    },
  };
}
