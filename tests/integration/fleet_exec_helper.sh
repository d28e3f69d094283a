#!/bin/sh
# tests/integration/fleet_exec_helper.sh: what the fleet tests' exec steps
# run (a file, so that a worker whose exec allow-list refuses shells can be
# told to allow it by path: TQ_EXEC_ALLOW).
#   hold FILE       while FILE exists: write this process's pid (which leads
#                   its own process group) to FILE.pid and sleep 120 s
#   mark LOG WORD   append WORD to LOG
#   gate HOLD FAIL [LOG]
#                   wait while HOLD exists; then fail if FAIL exists, else
#                   append this host's name to LOG (if given)
set -eu
case ${1-} in
  hold)
    if [ -e "$2" ]; then
      echo $$ >"$2.pid"
      exec sleep 120
    fi ;;
  mark) echo "$3" >>"$2" ;;
  gate)
    while [ -e "$2" ]; do sleep 0.1; done
    if [ -e "$3" ]; then echo "this host is cut off" >&2; exit 1; fi
    if [ -n "${4-}" ]; then hostname >>"$4"; fi ;;
  *) echo "usage: fleet_exec_helper.sh hold FILE | mark LOG WORD | gate HOLD FAIL [LOG]" >&2; exit 2 ;;
esac
