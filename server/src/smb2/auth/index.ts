// SMB2 authentication and signing (dialects 2.0.2 and 2.1): the interface the SMB2 engine uses.
export type { AuthStep, SmbAuthOptions, SmbUser, SmbUserDirectory } from './types.js';
export { AuthTokenError } from './types.js';
export { SmbAuthExchange, negotiateSecurityBlob } from './exchange.js';
export { smb2Signature, verifySmb2Signature } from './signing.js';
export { ANONYMOUS_USER } from './ntlm-server.js';
export { controlPlaneDirectory } from './directory.js';
