#!/usr/bin/env bash
# Samba's smbd as a reference SMB server on loopback, for benchmarks and by hand:
#   hack/smb/smbd.sh start DIR USER PASSWORD [MAXPROTO [SHARE...]]
#     private smb.conf and state under DIR (created), a free port on 127.0.0.1, USER a non-root
#     unix user (created if missing) with PASSWORD, shares (default: export) under DIR/shares,
#     server max protocol MAXPROTO (default SMB2_10). Writes DIR/smbd.port and DIR/smbd.pid and
#     prints the port; smbd keeps running after this script exits.
#     SMBD_VFS_OBJECTS="acl_xattr streams_xattr" adds those modules (default: none, Debian's default).
#   hack/smb/smbd.sh stop DIR
#     stops that smbd (and the helpers it started) and leaves DIR in place. Idempotent.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/smb/lib.sh
source "$HERE/lib.sh"

case "${1:-}" in
  start)
    [ $# -ge 4 ] || { echo "usage: $0 start DIR USER PASSWORD [MAXPROTO [SHARE...]]" >&2; exit 2; }
    dir=$2 user=$3 pass=$4 maxproto=${5:-SMB2_10}
    shift $(($# < 5 ? $# : 5))
    [ $# -gt 0 ] || set -- export
    mkdir -p "$dir"
    SMB_PIDS="$dir/smbd.pids"
    : >"$SMB_PIDS"
    port=$(smbd_start "$dir" "$user" "$pass" "$maxproto" "$@") || { smb_stop_all; exit 1; }
    echo "$port" >"$dir/smbd.port"
    cut -f1 "$SMB_PIDS" | head -1 >"$dir/smbd.pid"
    echo "$port"
    ;;
  stop)
    [ $# -eq 2 ] || { echo "usage: $0 stop DIR" >&2; exit 2; }
    SMB_PIDS="$2/smbd.pids"
    smb_stop_all
    ;;
  *)
    echo "usage: $0 start DIR USER PASSWORD [MAXPROTO [SHARE...]] | stop DIR" >&2
    exit 2
    ;;
esac
