// How SMB clients name a share: its name without the leading slash (`/export` -> `export`), compared
// without case (a tree connect to `\\server\EXPORT` finds `/export`).

export function smbShareName(name: string): string {
  return name.replace(/^\/+/, '');
}

/** What a tree connect compares: two shares of one key are one share to SMB clients. */
export function smbShareKey(name: string): string {
  return smbShareName(name).toLowerCase();
}
