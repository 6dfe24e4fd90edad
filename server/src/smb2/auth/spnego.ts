// RFC 4178 SPNEGO and MS-SPNG 2.2 negTokenInit2, in DER through asn1js:
//   InitialContextToken ::= [APPLICATION 0] IMPLICIT SEQUENCE { thisMech MechType, innerContextToken }  (RFC 2743 §3.1)
//   NegotiationToken ::= CHOICE { negTokenInit [0] NegTokenInit, negTokenResp [1] NegTokenResp }
//   NegTokenInit  ::= SEQUENCE { mechTypes [0] MechTypeList, reqFlags [1] ContextFlags OPTIONAL,
//                                mechToken [2] OCTET STRING OPTIONAL, mechListMIC [3] OCTET STRING OPTIONAL }
//   NegTokenInit2 ::= SEQUENCE { mechTypes [0], reqFlags [1] OPTIONAL, mechToken [2] OPTIONAL,
//                                negHints [3] NegHints OPTIONAL, mechListMIC [4] OPTIONAL }
//   NegTokenResp  ::= SEQUENCE { negState [0] ENUMERATED OPTIONAL, supportedMech [1] MechType OPTIONAL,
//                                responseToken [2] OCTET STRING OPTIONAL, mechListMIC [3] OCTET STRING OPTIONAL }
// Decoders throw AuthTokenError and nothing else.
import * as asn1 from 'asn1js';
import { AuthTokenError } from './types.js';

export const OID = Object.freeze({
  SPNEGO: '1.3.6.1.5.5.2',
  NTLMSSP: '1.3.6.1.4.1.311.2.2.10',
  KERBEROS: '1.2.840.113554.1.2.2',
  MS_KERBEROS: '1.2.840.48018.1.2.2',
  NEGOEX: '1.3.6.1.4.1.311.2.2.30',
} as const);

/** RFC 4178 §4.2.2 negState. */
export const NEG_STATE = Object.freeze({ ACCEPT_COMPLETED: 0, ACCEPT_INCOMPLETE: 1, REJECT: 2, REQUEST_MIC: 3 } as const);

/**
 * Tokens bigger than this are refused before parsing: what a SESSION_SETUP's 16-bit buffer length
 * allows anyway. An NTLM AUTHENTICATE in SPNEGO is well under 4 KiB (MAX_NTLM_MESSAGE is the most
 * it may be); an optimistic Kerberos ticket in a negTokenInit can reach 48 KB (a large PAC), and
 * its client must still be steered to NTLMSSP. What bounds a hostile token's cost is PARSE_LIMITS
 * (the ticket inside is one node) and that the exchange keeps none of it.
 */
export const MAX_SPNEGO_TOKEN = 64 * 1024;

/** Mechanisms a negTokenInit may offer (Windows offers 4: MS-KRB5, KRB5, NEGOEX, NTLMSSP). */
export const MAX_MECH_TYPES = 16;

/**
 * asn1js limits for a client's token: DER nodes and nesting. A negTokenInit of MAX_MECH_TYPES has
 * about 35 nodes and 7 levels; the limit stops a token of thousands of tiny OIDs early, as parsing
 * costs microseconds per node and the event loop waits for it.
 */
const PARSE_LIMITS = Object.freeze({ maxNodes: 64, maxDepth: 16, parseEmbedded: false });

/** MS-SPNG 3.2.5.2: the hintName Windows and Samba put in negTokenInit2. */
const NEG_HINT_NAME = 'not_defined_in_RFC4178@please_ignore';

export interface NegTokenInit {
  /** The mechanism OIDs in the client's order of preference. */
  mechTypes: string[];
  /** DER of the MechTypeList exactly as the client sent it (the mechListMIC covers these bytes). */
  mechTypesDer: Buffer;
  mechToken: Buffer | null;
  mechListMIC: Buffer | null;
}

export interface NegTokenResp {
  negState: number | null;
  supportedMech: string | null;
  responseToken: Buffer | null;
  mechListMIC: Buffer | null;
}

function fail(message: string): never {
  throw new AuthTokenError(`SPNEGO: ${message}`);
}

const CONTEXT = 3;
const APPLICATION = 2;

function parse(buf: Buffer): asn1.AsnType {
  if (buf.length > MAX_SPNEGO_TOKEN) fail(`token of ${buf.length} bytes is larger than ${MAX_SPNEGO_TOKEN}`);
  let r: ReturnType<typeof asn1.fromBER>;
  try {
    // parseEmbedded off: asn1js would otherwise parse every OCTET STRING (the NTLM or Kerberos
    // token inside) as DER too, spending nodes and time on bytes it is not asked to read.
    r = asn1.fromBER(new Uint8Array(buf), PARSE_LIMITS);
  } catch (err) {
    // asn1js reports malformed input through `offset`; this catches what it did not foresee (deep nesting).
    fail(`undecodable DER (${(err as Error).message})`);
  }
  if (r.offset === -1 || r.result.error !== '') fail(`undecodable DER (${r.result.error || 'bad encoding'})`);
  if (r.offset !== buf.length) fail(`${buf.length - r.offset} bytes after the token`);
  return r.result;
}

function children(block: asn1.AsnType, what: string): asn1.AsnType[] {
  const value = (block.valueBlock as { value?: unknown }).value;
  if (!block.idBlock.isConstructed || !Array.isArray(value)) fail(`${what} is not a constructed value`);
  return value as asn1.AsnType[];
}

/** The one value inside an explicit context tag [n]. */
function explicit(block: asn1.AsnType, what: string): asn1.AsnType {
  const inner = children(block, what);
  if (inner.length !== 1) fail(`${what} holds ${inner.length} values, not one`);
  return inner[0]!;
}

function isTag(block: asn1.AsnType, tagClass: number, tagNumber: number): boolean {
  return block.idBlock.tagClass === tagClass && block.idBlock.tagNumber === tagNumber && block.idBlock.isConstructed;
}

function sequence(block: asn1.AsnType, what: string): asn1.AsnType[] {
  if (!(block instanceof asn1.Sequence)) fail(`${what} is not a SEQUENCE`);
  return children(block, what);
}

function oid(block: asn1.AsnType, what: string): string {
  if (!(block instanceof asn1.ObjectIdentifier)) fail(`${what} is not an OBJECT IDENTIFIER`);
  return block.getValue();
}

function octets(block: asn1.AsnType, what: string): Buffer {
  if (!(block instanceof asn1.OctetString) || block.idBlock.isConstructed) fail(`${what} is not a primitive OCTET STRING`);
  return Buffer.from(block.valueBlock.valueHexView);
}

function decodeNegTokenInitBody(seq: asn1.AsnType): NegTokenInit {
  let mechTypes: string[] | null = null;
  let mechTypesDer = Buffer.alloc(0);
  let mechToken: Buffer | null = null;
  let mechListMIC: Buffer | null = null;
  for (const el of sequence(seq, 'NegTokenInit')) {
    if (el.idBlock.tagClass !== CONTEXT) fail('NegTokenInit holds an untagged value');
    const inner = explicit(el, `NegTokenInit [${el.idBlock.tagNumber}]`);
    switch (el.idBlock.tagNumber) {
      case 0: {
        const list = sequence(inner, 'mechTypes');
        if (list.length > MAX_MECH_TYPES) fail(`negTokenInit offers ${list.length} mechanisms, more than ${MAX_MECH_TYPES}`);
        mechTypes = list.map((m) => oid(m, 'a mechType'));
        mechTypesDer = Buffer.from(inner.valueBeforeDecodeView);
        break;
      }
      case 2:
        mechToken = octets(inner, 'mechToken');
        break;
      case 3: // RFC 4178 mechListMIC; in the negTokenInit2 layout [3] is negHints, which a server ignores
        if (inner instanceof asn1.OctetString) mechListMIC = octets(inner, 'mechListMIC');
        break;
      case 4:
        mechListMIC = octets(inner, 'mechListMIC');
        break;
      default: // reqFlags [1] and anything newer: not used
        break;
    }
  }
  if (mechTypes === null) fail('NegTokenInit has no mechTypes');
  return { mechTypes, mechTypesDer, mechToken, mechListMIC };
}

/** A client's first SPNEGO token: InitialContextToken (0x60) around a negTokenInit (a bare [0] negTokenInit is accepted too). */
export function decodeInitialToken(buf: Buffer): NegTokenInit {
  const top = parse(buf);
  let negotiation: asn1.AsnType = top;
  if (isTag(top, APPLICATION, 0)) {
    const parts = children(top, 'InitialContextToken');
    if (parts.length !== 2) fail(`InitialContextToken holds ${parts.length} values, not 2`);
    const mech = oid(parts[0]!, 'InitialContextToken thisMech');
    if (mech !== OID.SPNEGO) fail(`InitialContextToken is for mechanism ${mech}, not SPNEGO`);
    negotiation = parts[1]!;
  }
  if (!isTag(negotiation, CONTEXT, 0)) fail('the token is not a negTokenInit');
  return decodeNegTokenInitBody(explicit(negotiation, 'negTokenInit'));
}

/** A negTokenResp ([1], 0xa1). */
export function decodeNegTokenResp(buf: Buffer): NegTokenResp {
  const top = parse(buf);
  if (!isTag(top, CONTEXT, 1)) fail('the token is not a negTokenResp');
  const out: NegTokenResp = { negState: null, supportedMech: null, responseToken: null, mechListMIC: null };
  for (const el of sequence(explicit(top, 'negTokenResp'), 'NegTokenResp')) {
    if (el.idBlock.tagClass !== CONTEXT) fail('NegTokenResp holds an untagged value');
    const inner = explicit(el, `NegTokenResp [${el.idBlock.tagNumber}]`);
    switch (el.idBlock.tagNumber) {
      case 0:
        if (!(inner instanceof asn1.Enumerated)) fail('negState is not an ENUMERATED');
        out.negState = inner.valueBlock.valueDec;
        break;
      case 1:
        out.supportedMech = oid(inner, 'supportedMech');
        break;
      case 2:
        out.responseToken = octets(inner, 'responseToken');
        break;
      case 3:
        out.mechListMIC = octets(inner, 'mechListMIC');
        break;
      default:
        break;
    }
  }
  return out;
}

function tagged(n: number, value: asn1.AsnType): asn1.Constructed {
  return new asn1.Constructed({ idBlock: { tagClass: CONTEXT, tagNumber: n }, value: [value] });
}

function der(block: asn1.AsnType): Buffer {
  return Buffer.from(block.toBER(false));
}

/** DER of a MechTypeList (SEQUENCE OF OBJECT IDENTIFIER). */
export function encodeMechTypes(mechs: readonly string[]): Buffer {
  return der(new asn1.Sequence({ value: mechs.map((m) => new asn1.ObjectIdentifier({ value: m })) }));
}

/** MS-SPNG 2.2.1 negTokenInit2 in an InitialContextToken: the SMB2 NEGOTIATE response's security buffer. */
export function encodeNegTokenInit2(mechs: readonly string[]): Buffer {
  const body = new asn1.Sequence({
    value: [
      tagged(0, new asn1.Sequence({ value: mechs.map((m) => new asn1.ObjectIdentifier({ value: m })) })),
      tagged(3, new asn1.Sequence({ value: [tagged(0, new asn1.GeneralString({ value: NEG_HINT_NAME }))] })),
    ],
  });
  return der(
    new asn1.Constructed({
      idBlock: { tagClass: APPLICATION, tagNumber: 0 },
      value: [new asn1.ObjectIdentifier({ value: OID.SPNEGO }), tagged(0, body)],
    }),
  );
}

/** A client's InitialContextToken with a negTokenInit (test-side clients use it). */
export function encodeInitialToken(t: { mechTypes: readonly string[]; mechToken?: Buffer; mechListMIC?: Buffer }): Buffer {
  const value: asn1.AsnType[] = [tagged(0, new asn1.Sequence({ value: t.mechTypes.map((m) => new asn1.ObjectIdentifier({ value: m })) }))];
  if (t.mechToken) value.push(tagged(2, new asn1.OctetString({ valueHex: new Uint8Array(t.mechToken) })));
  if (t.mechListMIC) value.push(tagged(3, new asn1.OctetString({ valueHex: new Uint8Array(t.mechListMIC) })));
  return der(
    new asn1.Constructed({
      idBlock: { tagClass: APPLICATION, tagNumber: 0 },
      value: [new asn1.ObjectIdentifier({ value: OID.SPNEGO }), tagged(0, new asn1.Sequence({ value }))],
    }),
  );
}

/** RFC 4178 §4.2.2 negTokenResp, fields in tag order, absent ones left out. */
export function encodeNegTokenResp(t: { negState?: number; supportedMech?: string; responseToken?: Buffer; mechListMIC?: Buffer }): Buffer {
  const value: asn1.AsnType[] = [];
  if (t.negState !== undefined) value.push(tagged(0, new asn1.Enumerated({ value: t.negState })));
  if (t.supportedMech !== undefined) value.push(tagged(1, new asn1.ObjectIdentifier({ value: t.supportedMech })));
  if (t.responseToken !== undefined) value.push(tagged(2, new asn1.OctetString({ valueHex: new Uint8Array(t.responseToken) })));
  if (t.mechListMIC !== undefined) value.push(tagged(3, new asn1.OctetString({ valueHex: new Uint8Array(t.mechListMIC) })));
  return der(tagged(1, new asn1.Sequence({ value })));
}
