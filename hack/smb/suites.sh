# shellcheck shell=bash
# The smbtorture lists of issue 13 ("Tests with real clients"), for hack/smb/torture.sh. Sourced.
# Spec syntax: a name smbtorture knows (suite or test); SUITE!GLOB,GLOB (the suite minus the
# subtests whose last name component matches a glob); SUITE:a,b (only those subtests).

# Must pass against DittoFS (and pass against smbd here).
TORTURE_REQUIRED=(
  smb2.connect smb2.read smb2.credits smb2.fileid smb2.tcon smb2.mkdir smb2.session-id
  smb2.openattr smb2.winattr smb2.sharemode smb2.deny smb2.compound_async smb2.timestamps
  smb2.rw.rw1 smb2.rw.rw2 smb2.create.brlocked smb2.create.multi smb2.create.delete
  smb2.create.leading-slash smb2.create.impersonation smb2.create.mkdir-dup
  smb2.create.dir-alloc-size smb2.create.dosattr_tmp_dir smb2.dir.find smb2.dir.fixed smb2.dir.many
  smb2.dir.sorted smb2.dir.large-files smb2.getinfo.fsinfo smb2.getinfo.qfile_buffercheck
  smb2.getinfo.granted smb2.compound.related3 smb2.compound.related5 smb2.compound.related6
  smb2.compound.related8 smb2.compound.related9 smb2.compound.unrelated1 smb2.compound.invalid1
  smb2.compound.invalid3 smb2.compound.invalid4 smb2.compound.compound-padding
  smb2.compound.create-write-close smb2.compound_find 'smb2.lock!replay_*'
  smb2.session.reconnect1 smb2.session.reconnect2 smb2.session.reauth1 smb2.session.reauth2
  smb2.session.reauth3 smb2.session.reauth6 smb2.session.two_logoff smb2.session.ntlmssp_bug14932
  'smb2.rename!simple_nodelete,no_share_delete_no_delete_access'
  smb2.delete-on-close-perms smb2.maxfid
)
# Must pass against DittoFS; smbd fails them here only because Linux cannot set ChangeTime or
# because Samba's own runs were as root.
TORTURE_SMBD_FAILS=(
  smb2.create.open smb2.dir.one smb2.dir.modify smb2.getinfo.complex smb2.setinfo
  smb2.compound.related4 smb2.compound.related7 smb2.session.reauth4
)
# Pass counts reported beside smbd's (not required yet). The other smb2.notify tests hang in
# smbtorture 4.17 below SMB 3.0.
TORTURE_REPORT=(
  smb2.oplock smb2.lease smb2.streams smb2.durable-open smb2.ioctl
  'smb2.notify:valid-req,tdis1,close,logoff,session-reconnect,invalid-reauth,basedir,file,rmdir1,rmdir2,rmdir3,rmdir4,handle-permissions'
)

torture_list() {
  case "$1" in
    required) printf '%s\n' "${TORTURE_REQUIRED[@]}" ;;
    smbd-fails) printf '%s\n' "${TORTURE_SMBD_FAILS[@]}" ;;
    report) printf '%s\n' "${TORTURE_REPORT[@]}" ;;
    all) printf '%s\n' "${TORTURE_REQUIRED[@]}" "${TORTURE_SMBD_FAILS[@]}" "${TORTURE_REPORT[@]}" ;;
    # The quoted entries of the GATE array of the e2e test (comments skipped).
    gate) awk '/^const GATE/ { on = 1 } on { sub(/\/\/.*/, ""); print } on && /\];/ { exit }' \
      "$(dirname "${BASH_SOURCE[0]}")/../../test/e2e/smbtorture.test.ts" | grep -o "'[^']*'" | tr -d "'" | sed -E 's/@(plain|smb3)$//' ;;
    *) echo "torture.sh: unknown list $1 (required, smbd-fails, report, all, gate)" >&2; return 2 ;;
  esac
}

torture_show_lists() {
  local l
  for l in required smbd-fails report gate; do
    echo "$l:"
    torture_list "$l" 2>/dev/null | sed 's/^/  /'
  done
}

# The interactive tests wait for a human: never run them.
_torture_refuse() {
  case "$1" in *hold-oplock* | *hold-sharemode*) echo "torture.sh: $1 is interactive: not run" >&2; return 1 ;; esac
}

# torture_expand SPEC: the smbtorture test names to pass for SPEC, space-separated.
torture_expand() {
  local spec=$1 suite globs names=() n last g keep
  _torture_refuse "$spec" || return 1
  case "$spec" in
    *'!'*)
      suite=${spec%%!*} globs=${spec#*!}
      # --list prints "suite.test.test" for a simple test (case name = test name): drop the repeat.
      while read -r n; do
        last=${n##*.}
        [ "${n%.*}" != "${n%.*.*}.$last" ] || n=${n%.*}
        keep=1
        IFS=, read -ra gl <<<"$globs"
        for g in "${gl[@]}"; do
          # shellcheck disable=SC2053 # a glob on purpose
          [[ ${n##*.} == $g ]] && keep=0
        done
        [ "$keep" = 1 ] && names+=("$n")
      done < <(smbtorture //127.0.0.1/x --list "$suite" 2>/dev/null | grep "^$suite\.")
      [ ${#names[@]} -gt 0 ] || { echo "torture.sh: $spec names no test" >&2; return 1; }
      ;;
    *:*)
      suite=${spec%%:*}
      IFS=, read -ra gl <<<"${spec#*:}"
      for g in "${gl[@]}"; do names+=("$suite.$g"); done
      ;;
    *) names=("$spec") ;;
  esac
  for n in "${names[@]}"; do _torture_refuse "$n" || return 1; done
  echo "${names[*]}"
}
