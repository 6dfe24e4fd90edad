import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import * as asn1 from 'asn1js';
import {
  NEG_STATE,
  OID,
  decodeInitialToken,
  decodeNegTokenResp,
  encodeInitialToken,
  encodeMechTypes,
  encodeNegTokenInit2,
  encodeNegTokenResp,
  MAX_MECH_TYPES,
  MAX_SPNEGO_TOKEN,
} from './spnego.js';
import { AuthTokenError } from './types.js';

const NTLM_NEGOTIATE = Buffer.from('4e544c4d5353500001000000358208e2000000000000000000000000000000000a0063450000000f', 'hex');

describe('SPNEGO (RFC 4178, MS-SPNG)', () => {
  it('a client negTokenInit round-trips, keeping the mechTypes DER as sent', () => {
    const mechTypes = [OID.NEGOEX, OID.NTLMSSP];
    const t = decodeInitialToken(encodeInitialToken({ mechTypes, mechToken: NTLM_NEGOTIATE, mechListMIC: Buffer.from('mic') }));
    assert.deepEqual(t.mechTypes, mechTypes);
    assert.deepEqual(t.mechTypesDer, encodeMechTypes(mechTypes));
    assert.equal(t.mechTypesDer.toString('hex'), '3018060a2b06010401823702021e060a2b06010401823702020a');
    assert.deepEqual(t.mechToken, NTLM_NEGOTIATE);
    assert.deepEqual(t.mechListMIC, Buffer.from('mic'));
  });

  it('reads our own negTokenInit2 (negHints in [3] is not taken for a MIC)', () => {
    const t = decodeInitialToken(encodeNegTokenInit2([OID.NTLMSSP]));
    assert.deepEqual(t.mechTypes, [OID.NTLMSSP]);
    assert.equal(t.mechToken, null);
    assert.equal(t.mechListMIC, null);
  });

  it('keeps the mechTypes bytes exactly as the client encoded them (BER long-form length)', () => {
    // [0] { SEQUENCE with a non-minimal length 81 0c { NTLMSSP } }: what was sent is what the MIC covers.
    const mech = Buffer.from('3081 0c 060a2b06010401823702020a'.replace(/ /g, ''), 'hex');
    const body = Buffer.concat([Buffer.from([0xa0, mech.length]), mech]);
    const seq = Buffer.concat([Buffer.from([0x30, body.length]), body]);
    const neg = Buffer.concat([Buffer.from([0xa0, seq.length]), seq]);
    const inner = Buffer.concat([Buffer.from('06062b0601050502', 'hex'), neg]);
    const token = Buffer.concat([Buffer.from([0x60, inner.length]), inner]);
    const t = decodeInitialToken(token);
    assert.deepEqual(t.mechTypes, [OID.NTLMSSP]);
    assert.deepEqual(t.mechTypesDer, mech);
  });

  it('negTokenResp round-trips, absent fields absent', () => {
    const full = {
      negState: NEG_STATE.ACCEPT_INCOMPLETE,
      supportedMech: OID.NTLMSSP,
      responseToken: NTLM_NEGOTIATE,
      mechListMIC: Buffer.alloc(16, 7),
    };
    assert.deepEqual(decodeNegTokenResp(encodeNegTokenResp(full)), full);
    assert.deepEqual(decodeNegTokenResp(encodeNegTokenResp({ negState: NEG_STATE.ACCEPT_COMPLETED })), {
      negState: 0,
      supportedMech: null,
      responseToken: null,
      mechListMIC: null,
    });
    // accept-completed alone is the 9 bytes every SMB client expects
    assert.equal(encodeNegTokenResp({ negState: NEG_STATE.ACCEPT_COMPLETED }).toString('hex'), 'a1073005a0030a0100');
  });

  it('refuses tokens of the wrong kind, with trailing bytes, or for another mechanism', () => {
    const init = encodeInitialToken({ mechTypes: [OID.NTLMSSP] });
    assert.throws(() => decodeNegTokenResp(init), { name: 'AuthTokenError', message: /not a negTokenResp/ });
    assert.throws(() => decodeInitialToken(encodeNegTokenResp({ negState: 0 })), { message: /not a negTokenInit/ });
    assert.throws(() => decodeInitialToken(Buffer.concat([init, Buffer.from([0])])), { message: /1 bytes after the token/ });
    const krb = Buffer.from(
      new asn1.Constructed({
        idBlock: { tagClass: 2, tagNumber: 0 },
        value: [new asn1.ObjectIdentifier({ value: OID.KERBEROS }), new asn1.Null()],
      }).toBER(),
    );
    assert.throws(() => decodeInitialToken(krb), { message: /not SPNEGO/ });
    assert.throws(() => decodeInitialToken(Buffer.alloc(70 * 1024, 0x30)), { message: /larger than/ });
  });

  it('refuses a hostile negTokenInit before it costs much: its size, its node count, its mechTypes count', () => {
    // Thousands of one-arc OIDs (06 01 xx, 3 bytes each): 65 ms of parsing for a 30 KB token, and a
    // string per OID kept with the exchange. Too big, too many DER nodes, too many mechs.
    const manyOids = (n: number): Buffer => {
      const oids = Buffer.alloc(3 * n);
      for (let i = 0; i < n; i++) oids.set([0x06, 0x01, 0x2a], 3 * i);
      const der = (tag: number, body: Buffer): Buffer => {
        const len = body.length < 0x80 ? Buffer.from([body.length]) : Buffer.from([0x82, body.length >> 8, body.length & 0xff]);
        return Buffer.concat([Buffer.from([tag]), len, body]);
      };
      const negTokenInit = der(0xa0, der(0x30, der(0xa0, der(0x30, oids))));
      return der(0x60, Buffer.concat([Buffer.from('06062b0601050502', 'hex'), negTokenInit]));
    };
    assert.throws(() => decodeInitialToken(Buffer.alloc(MAX_SPNEGO_TOKEN + 1, 0x30)), { name: 'AuthTokenError', message: /larger than/ });
    assert.ok(manyOids(9990).length <= MAX_SPNEGO_TOKEN);
    assert.throws(() => decodeInitialToken(manyOids(9990)), { name: 'AuthTokenError', message: /node count/ });
    assert.throws(() => decodeInitialToken(manyOids(1000)), { name: 'AuthTokenError', message: /node count/ });
    assert.throws(() => decodeInitialToken(manyOids(MAX_MECH_TYPES + 1)), { name: 'AuthTokenError', message: /17 mechanisms/ });
    assert.equal(decodeInitialToken(manyOids(MAX_MECH_TYPES)).mechTypes.length, MAX_MECH_TYPES);
  });

  it('takes a negTokenInit carrying a 40 KB Kerberos ticket (a large PAC), so its client can be steered to NTLMSSP', () => {
    const ticket = Buffer.alloc(40_000, 0x5a);
    const t = decodeInitialToken(encodeInitialToken({ mechTypes: [OID.MS_KERBEROS, OID.KERBEROS, OID.NTLMSSP], mechToken: ticket }));
    assert.deepEqual(t.mechTypes, [OID.MS_KERBEROS, OID.KERBEROS, OID.NTLMSSP]);
    assert.equal(t.mechToken?.length, 40_000);
  });

  it('an NTLM token inside is not parsed as DER (it would count against the node limit)', () => {
    // A mechToken that happens to be DER of many nodes, as a Kerberos AP-REQ is: one node here.
    const nodes = Buffer.from(new asn1.Sequence({ value: Array.from({ length: 200 }, () => new asn1.Null()) }).toBER());
    const t = decodeInitialToken(encodeInitialToken({ mechTypes: [OID.MS_KERBEROS, OID.NTLMSSP], mechToken: nodes }));
    assert.deepEqual(t.mechToken, nodes);
    assert.deepEqual(decodeNegTokenResp(encodeNegTokenResp({ negState: 1, responseToken: nodes })).responseToken, nodes);
  });

  const decoders = [decodeInitialToken, decodeNegTokenResp];
  function onlyTokenErrors(b: Buffer): void {
    for (const d of decoders) {
      try {
        d(b);
      } catch (err) {
        if (!(err instanceof AuthTokenError)) throw err;
      }
    }
  }

  it('arbitrary bytes decode or raise AuthTokenError, nothing else', () => {
    fc.assert(
      fc.property(fc.constantFrom(0x60, 0xa0, 0xa1, 0x30), fc.uint8Array({ maxLength: 200 }), (first, rest) => {
        onlyTokenErrors(Buffer.concat([Buffer.from([first]), rest]));
      }),
      { numRuns: 3000 },
    );
  });

  it('valid tokens cut short or with bytes changed decode or raise AuthTokenError', () => {
    const valid = [
      encodeInitialToken({ mechTypes: [OID.MS_KERBEROS, OID.NTLMSSP], mechToken: NTLM_NEGOTIATE, mechListMIC: Buffer.alloc(16) }),
      encodeNegTokenResp({ negState: 1, supportedMech: OID.NTLMSSP, responseToken: NTLM_NEGOTIATE, mechListMIC: Buffer.alloc(16) }),
      encodeNegTokenInit2([OID.NTLMSSP]),
    ];
    fc.assert(
      fc.property(
        fc.constantFrom(...valid),
        fc.nat(),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
        (t, cut, edits) => {
          const b = Buffer.from(t.subarray(0, cut % (t.length + 1)));
          for (const [at, v] of edits) if (b.length > 0) b[at % b.length] = v;
          onlyTokenErrors(b);
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('deep nesting is refused, not a stack overflow', () => {
    const deep = Buffer.alloc(10000); // under MAX_SPNEGO_TOKEN: the nesting limit refuses it
    for (let i = 0; i < 5000; i++) deep.writeUInt16BE(0x3080, 2 * i);
    assert.throws(() => decodeInitialToken(deep), AuthTokenError);
    assert.throws(() => decodeNegTokenResp(Buffer.concat([Buffer.from([0xa1, 0x80]), deep])), AuthTokenError);
  });
});
