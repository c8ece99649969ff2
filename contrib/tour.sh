#!/usr/bin/env bash
# A short tour of subscription management on a throw-away store (run by `make demo`
# until `csnotify demo` exists). Nothing outside a temporary folder is touched.
set -euo pipefail
csnotify=${CSNOTIFY:-csnotify}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export CSNOTIFY_DB="$tmp/csnotify.db" CSNOTIFY_CONFIG="$tmp/config.toml"

step() { printf '\n$ %s\n' "$*"; "$@"; }

step "$csnotify" subscribe 'VM.*' --to https://hooks.example.com/cloudstack --key generate --name vm-hooks
step "$csnotify" subscribe '*' --level ERROR --name oncall \
    --to 'mailto://alerts:secret@smtp.example.com?to=oncall@example.com'
step "$csnotify" subscribe VM.START VM.STOP --name dns --to 'cmd:/bin/true' --where account=admin
step "$csnotify" list
step "$csnotify" show vm-hooks
step "$csnotify" disable oncall
step "$csnotify" export --format toml
printf '\nTour done; the temporary store %s is removed.\n' "$CSNOTIFY_DB"
