// SMB2 authentication and signing (dialects 2.0.2 to 3.1.1): the interface the SMB2 engine uses.
export type { AuthStep, SmbAuthOptions, SmbUser, SmbUserDirectory } from './types.js';
export { AuthTokenError } from './types.js';
export { SmbAuthExchange, negotiateSecurityBlob } from './exchange.js';
export {
  signatureOf,
  smb2Signature,
  smb30SigningKey,
  smb311SigningKey,
  verifySignature,
  verifySmb2Signature,
  type SigningAlgorithm,
} from './signing.js';
export { ANONYMOUS_USER } from './ntlm-server.js';
export { controlPlaneDirectory } from './directory.js';
