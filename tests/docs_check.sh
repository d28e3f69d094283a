#!/usr/bin/env bash
# tests/docs_check.sh: the repository stands on its own. No file may point
# outside it (the design is docs/design.md, not a file beside the checkout),
# and every top-level folder has its README.md.
set -u
top=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
fail=0
# (the patterns are written so that they do not match this file)
hits=$(grep -rIn --exclude-dir=.git --exclude-dir=.build --exclude-dir=.tq-local \
  -e '\.\./shar[e]d' -e '[^/a-z]DESIG[N]\.md' "$top" || true)
if [ -n "$hits" ]; then
  echo "not ok - files point outside the repository:"; printf '%s\n' "$hits"; fail=1
else
  echo "ok - no reference outside the repository"
fi
for d in common worker enqueue deploy terraform tests docs; do
  if [ -f "$top/$d/README.md" ]; then echo "ok - $d/README.md"; else echo "not ok - $d/README.md missing"; fail=1; fi
done
exit "$fail"
