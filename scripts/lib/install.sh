# shellcheck shell=bash
# Sourced by scripts/test and scripts/validate-deploy: installs Debian packages
# for what is missing, then checks that each one now gives what it was
# installed for, so a package that is renamed or ships its tool elsewhere
# stops the run here, by name, instead of failing a test much later.
#
#   want PACKAGE CHECK...   queue PACKAGE unless every CHECK passes; a CHECK is
#                           a command name, or an absolute path (or glob) that
#                           must exist
#   install_wanted          installs the queued packages (with $APT_OPTIONS,
#                           if set), then checks them again

_want_pkgs=()
_want_checks=()

_have() {
  local c
  for c in "$@"; do
    if [[ $c == /* ]]; then
      compgen -G "$c" >/dev/null || return 1
    else
      command -v "$c" >/dev/null || return 1
    fi
  done
}

want() {
  local pkg=$1
  shift
  _have "$@" && return 0
  _want_pkgs+=("$pkg")
  _want_checks+=("$*")
}

install_wanted() {
  [ ${#_want_pkgs[@]} -gt 0 ] || return 0
  local opts
  read -ra opts <<<"${APT_OPTIONS:-}"
  printf '\n== installing %s (Debian)\n' "${_want_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${opts[@]}" "${_want_pkgs[@]}" >/dev/null
  local i checks
  for i in "${!_want_pkgs[@]}"; do
    read -ra checks <<<"${_want_checks[$i]}"
    _have "${checks[@]}" || {
      printf 'install: %s is installed but does not give %s\n' "${_want_pkgs[$i]}" "${_want_checks[$i]}" >&2
      exit 1
    }
  done
  _want_pkgs=()
  _want_checks=()
}
