// Several servers on one control database: a call that changed something answers once every server
// applied the change, and says in headers which generation that is and which servers had not (a
// server that stopped reporting is not waited for; one that is slow is named, not waited for forever).
import type { FastifyReply } from 'fastify';
import type { ApiRuntime, PendingReplica } from './runtime.js';

/** The control-plane generation the answer reflects (the database's, applied by this server). */
export const GENERATION_HEADER = 'dittofs-generation';
/** GET: the generation this server applied. */
export const APPLIED_GENERATION_HEADER = 'dittofs-applied-generation';
/** After a change: `<server>=<generation applied>` of the servers that had not applied it, comma-separated. */
export const PENDING_HEADER = 'dittofs-pending-replicas';

/** Header value text: server ids are `host:pid:hex`, nothing a header cannot carry; anything else is dropped. */
const headerSafe = (s: string): string => s.replace(/[^\x20-\x7e]/g, '?').replace(/,/g, ';');

/**
 * Waits for every server to apply the control database's current generation (once per reply) and
 * sets the headers. Null without several servers; a failure to tell is logged, never the answer's.
 */
export async function convergeReply(
  runtime: ApiRuntime,
  reply: FastifyReply,
): Promise<{ generation: number; pending: PendingReplica[] } | null> {
  const control = runtime.control;
  if (!control || reply.hasHeader(GENERATION_HEADER)) return null;
  try {
    const r = await control.converge();
    reply.header(GENERATION_HEADER, String(r.generation));
    if (r.pending.length > 0) {
      reply.header(PENDING_HEADER, r.pending.map((p) => `${headerSafe(p.server)}=${p.applied ?? 'unknown'}`).join(', '));
      reply.log.warn({ generation: r.generation, pending: r.pending }, 'a control-plane change is not applied by every server yet');
    }
    return r;
  } catch (err) {
    reply.log.warn({ err }, 'could not tell whether every server applied the control-plane change');
    return null;
  }
}
