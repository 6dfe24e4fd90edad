// MS-SMB2 3.3.1.1 the command sequence window: which MessageIds a client may use. Every credit
// granted opens one MessageId; each request consumes CreditCharge consecutive ones (3.3.5.2.3).
// Requests may arrive out of order, so ids used above the lowest unused one are kept in a set
// (bounded: it can hold at most the window).

/** Most credits a client may hold at once (Samba's default is 8192 too). */
export const MAX_CREDITS = 8192;

export class CreditWindow {
  /** Lowest MessageId not yet used. */
  private low = 0;
  /** One past the highest MessageId granted. */
  private high = 1;
  /** Ids in [low, high) already used (out of order). */
  private readonly used = new Set<number>();

  constructor(private readonly max = MAX_CREDITS) {}

  /** Credits the client holds now (ids granted and not used). */
  get outstanding(): number {
    return this.high - this.low - this.used.size;
  }

  /**
   * Consumes `[messageId, messageId + charge)`: false (and nothing changes) when any of them was
   * never granted or was used already.
   */
  consume(messageId: number, charge: number): boolean {
    if (messageId < this.low || messageId + charge > this.high) return false;
    for (let id = messageId; id < messageId + charge; id++) if (this.used.has(id)) return false;
    for (let id = messageId; id < messageId + charge; id++) this.used.add(id);
    while (this.used.delete(this.low)) this.low++;
    return true;
  }

  /**
   * Grants up to `requested` more credits, within the window; never leaves the client with none
   * (3.3.1.2: a client with no credits cannot send anything, not even to ask for more).
   */
  grant(requested: number): number {
    const room = Math.max(0, this.max - this.outstanding);
    let g = Math.min(Math.max(requested, 0), room);
    if (this.outstanding + g === 0) g = 1;
    this.high += g;
    return g;
  }
}
