// The auth module's contract with the SMB2 engine (see SMB-CONTRACT: names fixed, fields may be added).

/** The identity an authenticated SMB session acts as (drives the same POSIX checks as NFS AUTH_SYS). */
export interface SmbUser {
  name: string;
  uid: number;
  gid: number;
  gids: number[];
}

/** Where NT hashes come from: the control plane (`controlPlaneDirectory(store)`). */
export interface SmbUserDirectory {
  /** Identity and 16-byte NT hash of an enabled user with an SMB-capable password, else null. Case-insensitive name. */
  lookup(username: string): Promise<{ user: SmbUser; ntHash: Buffer } | null>;
  /**
   * Optional: why lookup() answered null, for the server log ("no such user", "has no SMB password").
   * Never called on the success path.
   */
  describeMissing?(username: string): Promise<string>;
}

export interface SmbAuthOptions {
  /** NetBIOS name of this server (CHALLENGE TargetName / NbComputerName), e.g. "DITTOFS". */
  serverName: string;
  /** NetBIOS domain or workgroup, e.g. "WORKGROUP". */
  domain: string;
  /** Accept anonymous (NTLM with empty responses) logons. */
  allowGuest: boolean;
  /**
   * Optional: called with the (lower-case) account an AUTHENTICATE names before its response is
   * checked; a string refuses the logon (STATUS_LOGON_FAILURE) for that reason (a logon limit).
   */
  refuseAccount?: (account: string) => string | null;
}

export type AuthStep =
  /** Answer STATUS_MORE_PROCESSING_REQUIRED with this security buffer. */
  | { kind: 'continue'; token: Buffer }
  /**
   * Answer STATUS_SUCCESS with this security buffer (may be empty). sessionKey: 16 bytes, keys signing.
   * anonymous: an NTLM anonymous logon (SMB2_SESSION_FLAG_IS_NULL); its sessionKey cannot sign anything
   * a client would check, so such a session is never signed. guest: logged on as the guest account
   * (SMB2_SESSION_FLAG_IS_GUEST); this module never maps a failed logon to guest, so it is false today.
   */
  | { kind: 'done'; token: Buffer; user: SmbUser; sessionKey: Buffer; guest: boolean; anonymous: boolean }
  /** Answer STATUS_LOGON_FAILURE ('logon-failure') or STATUS_INVALID_PARAMETER ('invalid-token'). */
  | { kind: 'failed'; reason: 'logon-failure' | 'invalid-token'; message: string };

/** A malformed security token (NTLMSSP or SPNEGO); the exchange answers it with 'invalid-token'. */
export class AuthTokenError extends Error {
  readonly code = 'SMB_AUTH_INVALID_TOKEN';
  constructor(message: string) {
    super(message);
    this.name = 'AuthTokenError';
  }
}
