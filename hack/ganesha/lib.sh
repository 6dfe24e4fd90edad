# Shared by start.sh and stop.sh (sourced, not run).

# Is pid $1 a live (not zombie) process whose command line contains the string $2?
# (Our pid 1 may not reap orphans promptly, so a stopped daemon can linger as a zombie.)
alive() {
  local pid=$1 name=$2 state
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  state=$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ "$state" != Z ] && [ "$state" != X ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$name"
}
