// What the hostile-client tests (test/e2e/hostile.test.ts for NFS, smb-hostile.test.ts for SMB)
// share: the server's resident memory sampled while an attack runs, and raw connections.
import { readFileSync } from 'node:fs';
import net from 'node:net';

export const MiB = 1024 * 1024;
/** The bound the issue states for the server's resident memory under each attack. */
export const RSS_LIMIT = 600 * MiB;

/** The server process's resident set size in bytes (VmRSS of /proc/PID/status). */
export function rssOf(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (m === null) throw new Error(`no VmRSS for process ${pid}`);
  return Number(m[1]) * 1024;
}

/** Samples the server's RSS every 50 ms until stopped; `peak` is the largest seen. */
export class RssSampler {
  peak = 0;
  private readonly timer: NodeJS.Timeout;
  constructor(private readonly pid: number) {
    this.sample();
    this.timer = setInterval(() => this.sample(), 50);
  }
  sample(): number {
    let r: number;
    try {
      r = rssOf(this.pid);
    } catch {
      return this.peak; // the process is gone: the assertions on it will say so
    }
    if (r > this.peak) this.peak = r;
    return r;
  }
  stop(): number {
    clearInterval(this.timer);
    this.sample();
    return this.peak;
  }
}

export const mib = (n: number): string => `${(n / MiB).toFixed(0)} MiB`;

/** Waits until `cond` holds, polling; fails after `ms`. */
export async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Waits until the server's RSS has not grown by more than 4 MiB for `quietMs` (the attack has
 * done what it can), at most `maxMs`.
 */
export async function untilRssSettles(s: RssSampler, quietMs: number, maxMs: number): Promise<void> {
  const deadline = Date.now() + maxMs;
  let base = s.sample();
  let since = Date.now();
  while (Date.now() < deadline && Date.now() - since < quietMs) {
    await new Promise((r) => setTimeout(r, 100));
    const now = s.sample();
    if (now > base + 4 * MiB) {
      base = now;
      since = Date.now();
    }
  }
}

export function connectRaw(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', noDelay: true });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}
